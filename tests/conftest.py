"""Shared pytest setup. Sections are owned by the part of runwatch that needs them."""

from __future__ import annotations

import pytest

# --- sources/rundir: real wandb run directories ------------------------------------------
# Written once per fixture-code hash by the real SDK (tests/fixtures/runmaker.py) and
# cached in .fixture-cache/, so only the first session after a change waits for them.


@pytest.fixture(scope="session")
def wandb_runs():
    """Every runmaker scenario's run directory (treat as read-only: copy to modify)."""
    from fixtures import runmaker

    return runmaker.build()
