"""Build small pgGit v1 sources for tests, filled the way v1's event triggers fill them.

A test writes its history as a list of `Change`s: one SQL text sent by one user at
one time, touching some objects. Like v1, each touched object gets one history
row carrying the same text, time and user.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psycopg

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@dataclass
class Change:
    """One text sent to the database, as v1 records it (one row per touched object)."""

    sql: str | None
    when: dt.datetime | None
    user: str | None = "alice"
    # (change_type, object_type, schema, name) per touched object
    objects: list[tuple[str, str, str, str]] = field(
        default_factory=lambda: [("CREATE", "TABLE", "public", "t")]
    )


def at(day: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    """A timestamp in January 2024, for readable histories."""
    return dt.datetime(2024, 1, day, hour, minute)


def make_source(dsn: str, changes: list[Change], *, live_sql: str = "") -> str:
    """Create the v1 tables in `dsn` and record `changes`; returns dsn.

    `live_sql` is run as the source's live schema (what the database holds now).
    """
    with psycopg.connect(dsn) as conn:
        conn.execute((FIXTURES / "pggit_v1_schema.sql").read_text())  # type: ignore[arg-type]
        if live_sql:
            conn.execute(live_sql)  # type: ignore[arg-type]
        append_changes(conn, changes)
    return dsn


def append_changes(conn: psycopg.Connection, changes: list[Change]) -> None:
    """Record more changes, as v1 would after new DDL ran."""
    for change in changes:
        for change_type, object_type, schema, name in change.objects:
            row = conn.execute(
                """
                INSERT INTO pggit.objects (object_type, schema_name, object_name)
                VALUES (%s, %s, %s)
                ON CONFLICT (object_type, schema_name, object_name, branch_name)
                DO UPDATE SET updated_at = excluded.updated_at
                RETURNING id
                """,
                (object_type, schema, name),
            ).fetchone()
            assert row is not None
            conn.execute(
                """
                INSERT INTO pggit.history
                    (object_id, change_type, change_severity, sql_executed, created_at,
                     created_by, change_description)
                VALUES (%s, %s, 'MINOR', %s, %s, %s, %s)
                """,
                (
                    row[0], change_type, change.sql, change.when, change.user,
                    f"{change_type} {object_type} {schema}.{name}",
                ),
            )


def git(repo: Path, *args: str) -> str:
    """Run the real git CLI in `repo` and return its stdout; fail the test on error."""
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line (`python -m pggit_export ARGS`), as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "pggit_export", *args],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )


def load_module(name: str, path: Path) -> ModuleType:
    """A module of bench/ or fixtures/ (no packages) by path, loaded once under `name`."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return sys.modules[name]
