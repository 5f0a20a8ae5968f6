"""The demo history: a realistic pgGit install exported end to end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import git

from pggit_export import ExportOptions, export_history
from pggit_export.render.layout import snapshot_files
from pggit_export.render.snapshot import render_snapshot
from pggit_export.restore import load_files


@pytest.fixture(scope="module")
def demo_source(pg_admin_dsn: str) -> str:
    from conftest import load_demo_database

    return load_demo_database(pg_admin_dsn, "demo_source")


@pytest.fixture(scope="module")
def demo_repo(demo_source: str, pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("demo") / "repo"
    report = export_history(demo_source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.clean
    return repo


def changesets_in_source(dsn: str) -> list[tuple[str, ...]]:
    """Group the history independently of the reader: consecutive equal (text, time, user)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, sql_executed, created_at, created_by FROM pggit.history "
            "ORDER BY created_at, id"
        ).fetchall()
    groups: list[list[tuple]] = []
    for row in rows:
        if groups and groups[-1][-1][1:] == row[1:]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return [(g[0][3], g[0][2].isoformat(), ",".join(str(r[0]) for r in g)) for g in groups]


def test_commit_per_changeset_with_authors_and_dates(demo_source: str, demo_repo: Path) -> None:
    expected = changesets_in_source(demo_source)
    log = git(demo_repo, "log", "--reverse", "--date=format-local:%Y-%m-%dT%H:%M:%S",
              "--format=%an|%ad|%(trailers:key=Pggit-History-Ids,valueonly,separator=)")
    got = [line.split("|") for line in log.splitlines()]
    assert len(got) == len(expected) == 58
    from pggit_export.git.message import parse_id_ranges

    for (user, when, ids), (an, ad, trailer) in zip(expected, got):
        assert an == user
        assert ad == when[:19]
        assert ",".join(map(str, parse_id_ranges(trailer))) == ids
    authors = set(git(demo_repo, "log", "--format=%an").split())
    assert authors == {"postgres", "alice", "bob", "carol", "deploy_bot"}
    git(demo_repo, "fsck", "--strict")


def test_every_snapshot_recreates_its_schema(
    demo_repo: Path, make_database: Callable[[], str]
) -> None:
    revs = git(demo_repo, "rev-list", "--reverse", "main").split()
    for rev in revs[1::6] + [revs[-1]]:  # every sixth commit and the head
        paths = git(demo_repo, "ls-tree", "-r", "--name-only", rev).split()
        files = {p: git(demo_repo, "show", f"{rev}:{p}") for p in paths}
        with psycopg.connect(make_database()) as conn:
            result = load_files(conn, files)
            assert result.failures == [], rev
            again = snapshot_files(render_snapshot(conn))
        assert again == files, rev


def test_head_matches_the_live_application_schema(
    demo_source: str, demo_repo: Path
) -> None:
    # The demo history has no gaps: replaying it must end where the source database is.
    with psycopg.connect(demo_source) as conn:
        live = snapshot_files(render_snapshot(conn))
    paths = git(demo_repo, "ls-tree", "-r", "--name-only", "main").split()
    head = {p: git(demo_repo, "show", f"main:{p}") for p in paths}
    assert head == live


def test_file_contents_at_points_in_time(demo_repo: Path) -> None:
    before_2024 = git(demo_repo, "rev-list", "-1", "--before=2024-01-01", "main").strip()
    files_then = set(git(demo_repo, "ls-tree", "-r", "--name-only", before_2024).split())
    files_now = set(git(demo_repo, "ls-tree", "-r", "--name-only", "main").split())
    assert "public/inventory.sql" in files_then and "public/inventory.sql" not in files_now
    assert "public/stock_levels.sql" in files_now
    first_orders = git(demo_repo, "log", "--reverse", "--format=%H", "--", "public/orders.sql")
    first = first_orders.split()[0]
    assert "CREATE TABLE public.orders" in git(demo_repo, "show", f"{first}:public/orders.sql")


def test_demo_command_runs_from_the_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pggit_export", "demo", str(tmp_path / "shop")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "as 58 commits" in result.stdout and "git log -p --follow" in result.stdout
    assert git(tmp_path / "shop", "rev-list", "--count", "main").strip() == "58"


def test_the_readme_shows_the_head_the_demo_export_makes(
    demo_source: str, demo_repo: Path
) -> None:
    # The README and the user guide quote the demo's commit ids from a real run: an export
    # that changes them (on purpose or not) must come with new docs.
    import re

    with psycopg.connect(demo_source) as conn:
        if conn.info.server_version // 10000 != 18:
            pytest.skip("the README's demo ran on PostgreSQL 18 (ids depend on its dialect)")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    documented = re.search(r"^  head:   ([0-9a-f]{40})$", readme, re.M)
    assert documented is not None
    assert git(demo_repo, "rev-parse", "main").strip() == documented.group(1)
