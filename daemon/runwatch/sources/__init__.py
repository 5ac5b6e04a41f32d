"""Where runs come from: each source turns some store of runs into RunSnapshots per tick.

``base`` holds the ``Source`` protocol every source implements; ``rundir`` reads the run
directories the wandb SDK writes on local disk (``wandbfile`` and ``wandbitems`` read the
``.wandb`` transaction log inside them).
"""
