"""Smoke tests of the benchmark's history generator (bench/generate.py).

No timing here, ever: the benchmark itself (bench/run.py) measures; these tests only check
that its input is deterministic and replays cleanly.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from pggit_export.export import ExportOptions, export_history

GENERATE = Path(__file__).resolve().parent.parent / "bench" / "generate.py"


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    """bench/ is not a package: load generate.py by path."""
    spec = importlib.util.spec_from_file_location("bench_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def history_rows(dsn: str) -> list[tuple[Any, ...]]:
    """The history as the exporter reads it, with function OIDs taken out.

    v1 names functions by OID, and OIDs are cluster-wide: two captures on one server get
    different ones. Everything else must be identical.
    """
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """
            SELECT h.id, h.change_type::text, h.change_severity::text, h.sql_executed,
                   h.created_at, h.created_by, o.object_type::text, o.schema_name,
                   CASE WHEN o.object_type = 'FUNCTION' THEN NULL ELSE o.object_name END,
                   CASE WHEN o.object_type = 'FUNCTION' THEN NULL
                        ELSE h.change_description END
            FROM pggit.history AS h JOIN pggit.objects AS o ON o.id = h.object_id
            ORDER BY h.id
            """
        ).fetchall()


def test_same_seed_same_migrations(generate: ModuleType) -> None:
    first = generate.generate_migrations(300, 60, seed=7)
    again = generate.generate_migrations(300, 60, seed=7)
    other = generate.generate_migrations(300, 60, seed=8)
    assert first == again
    assert first != other
    assert sum(m.changesets for m in first) >= 300
    times = [m.at for m in first]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_same_seed_same_history_rows(
    generate: ModuleType, make_database: Callable[[], str]
) -> None:
    migrations = generate.generate_migrations(50, 25, seed=11)
    one, two = make_database(), make_database()
    generate.capture(one, migrations)
    generate.capture(two, migrations)
    rows = history_rows(one)
    assert rows == history_rows(two)
    # The shape v1's triggers give: several rows share one text, time and author.
    assert len(rows) > len({(r[3], r[4], r[5]) for r in rows})


def test_tiny_history_exports_without_failures(
    generate: ModuleType, make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    migrations = generate.generate_migrations(50, 25, seed=3)
    source = make_database()
    stats = generate.capture(source, migrations)
    assert stats.live["live_objects"] > 5

    report = export_history(source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn))

    assert report.failed == []
    assert report.refused_statements == []
    assert report.rows_exported == stats.history_rows
    # pgGit's own install row is the one changeset not replayed.
    assert [item.reason for item in report.not_replayed] == [
        "pgGit's own objects (schema pggit)"
    ]
    assert report.commits_written >= 50


@pytest.mark.slow
def test_resuming_the_benchmark_history_from_many_points_gives_the_clean_head(
    generate: ModuleType, make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Issue 16: a resume rebuilt the shadow from the head's files and, on this generator's
    # histories, wrote other commits (or failed) from some points on. A rerun from any
    # commit must end on the clean run's head.
    import subprocess

    def git(repo: Path, *args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    source = make_database()
    generate.capture(source, generate.generate_migrations(300, 60, seed=5))
    clean = tmp_path / "clean"
    export_history(source, clean, ExportOptions())
    commits = git(clean, "rev-list", "--reverse", "main").split()
    assert len(commits) > 250
    for point in range(1, len(commits) - 1, len(commits) // 8):
        copy = tmp_path / f"from-{point}"
        subprocess.run(["git", "clone", "--quiet", str(clean), str(copy)], check=True)
        git(copy, "reset", "--quiet", "--hard", commits[point])
        report = export_history(source, copy, ExportOptions())
        assert report.resumed_by == "replayed"
        assert git(copy, "rev-parse", "main") == commits[-1], f"resumed from commit {point}"
