"""The status pages: what the daemon watches, fired and silenced, in a browser (see app)."""
