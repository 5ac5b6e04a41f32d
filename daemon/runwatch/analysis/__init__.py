"""Health reports on demand and for the digest: ``characterize`` one run, ``watch`` all of
them, ``compare`` two. Pure functions of run snapshots (with their history), the loaded
rules and ``now``: the same on a run directory and on a W&B run, and never at odds with
the alerts, because every "wrong" comes from the rules themselves (``replay``)."""

from runwatch.analysis.characterize import Health, Liveness, RunReport, characterize, report_keys
from runwatch.analysis.compare import Comparison, compare
from runwatch.analysis.watch import WatchReport, watch

__all__ = ["Comparison", "Health", "Liveness", "RunReport", "WatchReport", "characterize",
           "compare", "report_keys", "watch"]
