"""The user's environment reaches the source only, never the shadow.

A DBA's shell has PG* variables for their own servers. The shadow is the tool's: its server
and every connection to it run under fixed settings, so no inherited variable changes a
commit id (or makes the server listen where the tool does not look).
"""

from __future__ import annotations

import os
from pathlib import Path

from history import cli, git

HOSTILE = {
    "PGPORT": "6543",  # the private server would listen there
    "PGHOST": "/nonexistent",
    "PGUSER": "nobody",
    "PGOPTIONS": "-c search_path=nowhere",
    "PGTZ": "America/New_York",  # moves timestamptz constants and partition bounds
    "PGDATESTYLE": "German",
    "PGCLIENTENCODING": "LATIN1",  # cannot carry every character a history holds
}


def test_a_hostile_environment_gives_the_same_history(tmp_path: Path) -> None:
    clean = cli("demo", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    hostile = cli("demo", str(tmp_path / "hostile"), env={**os.environ, **HOSTILE})
    assert hostile.returncode == 0, hostile.stdout + hostile.stderr
    assert git(tmp_path / "hostile", "rev-parse", "main") == git(tmp_path / "clean", "rev-parse", "main")
