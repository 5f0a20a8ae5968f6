"""Time travel: restore the schema of any commit or date, and compare live with history."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import git

from pggit_export import ExportOptions, export_history
from pggit_export.drift import drift_report
from pggit_export.render.layout import snapshot_files
from pggit_export.render.snapshot import render_snapshot
from pggit_export.restore import RestoreError, restore_snapshot


@pytest.fixture(scope="module")
def demo(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from conftest import load_demo_database

    source = load_demo_database(pg_admin_dsn, "restore_demo")
    repo = tmp_path_factory.mktemp("restore") / "repo"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    return source, repo


def commit_files(repo: Path, rev: str) -> dict[str, str]:
    paths = git(repo, "ls-tree", "-r", "--name-only", rev).split()
    return {p: git(repo, "show", f"{rev}:{p}") for p in paths}


def test_restored_snapshots_render_back_to_their_commits(
    demo: tuple[str, Path], make_database: Callable[[], str]
) -> None:
    _, repo = demo
    revs = git(repo, "rev-list", "--reverse", "main").split()
    for rev in (revs[3], revs[len(revs) // 2], "main~1"):
        target = make_database()
        report = restore_snapshot(repo, target, at=rev)
        assert report.differing == []
        with psycopg.connect(target) as conn:
            assert snapshot_files(render_snapshot(conn)) == commit_files(repo, rev)


def test_restore_at_a_date_takes_the_last_commit_of_that_day(
    demo: tuple[str, Path], make_database: Callable[[], str]
) -> None:
    _, repo = demo
    expected = git(repo, "rev-list", "-1", "--before=2023-12-31T23:59:59Z", "main").strip()
    report = restore_snapshot(repo, make_database(), at="2023-12-31")
    assert report.commit == expected
    with pytest.raises(RestoreError, match="history starts after"):
        restore_snapshot(repo, make_database(), at="2020-01-01")


def test_restore_refuses_a_non_empty_target_and_leaves_it_untouched(
    demo: tuple[str, Path], make_database: Callable[[], str]
) -> None:
    _, repo = demo
    target = make_database()
    with psycopg.connect(target) as conn:
        conn.execute("CREATE TABLE mine (id int)")
    with pytest.raises(RestoreError, match="not empty"):
        restore_snapshot(repo, target)
    with psycopg.connect(target) as conn:
        assert set(snapshot_files(render_snapshot(conn))) == {"public/_schema.sql", "public/mine.sql"}


def test_restore_is_all_or_nothing(demo: tuple[str, Path], make_database: Callable[[], str],
                                   tmp_path: Path) -> None:
    _, repo = demo
    broken = tmp_path / "broken"
    subprocess.run(["git", "clone", "-q", str(repo), str(broken)], check=True)
    (broken / "public" / "orders.sql").write_text("CREATE TABLE public.orders (id no_such_type);\n")
    git(broken, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "break it")
    target = make_database()
    with pytest.raises(RestoreError, match="left untouched"):
        restore_snapshot(broken, target)
    with psycopg.connect(target) as conn:
        assert set(snapshot_files(render_snapshot(conn))) == {"public/_schema.sql"}


def test_drift_lists_what_history_never_recorded(
    demo: tuple[str, Path], make_database: Callable[[], str], tmp_path: Path, pg_admin_dsn: str
) -> None:
    source, repo = demo
    assert drift_report(source, repo).clean
    with psycopg.connect(source) as conn:  # a hotfix nobody recorded
        conn.execute("CREATE TABLE public.hotfix (id int); DROP VIEW reporting.top_products")
    try:
        report = drift_report(source, repo)
        assert report.only_live == ["public/hotfix.sql"]
        assert report.only_history == ["reporting/top_products.sql"]
        result = subprocess.run(
            [sys.executable, "-m", "pggit_export", "drift", source, str(repo)],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 1 and "public/hotfix.sql" in result.stdout
        # --reconcile turns the drift into a commit that makes the head equal live.
        copy = tmp_path / "copy"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(copy)], check=True)
        reconciled = export_history(source, copy, ExportOptions(shadow_dsn=pg_admin_dsn,
                                                                reconcile=True))
        assert reconciled.reconciled == {
            "added": ["public/hotfix.sql"], "changed": [],
            "removed": ["reporting/top_products.sql"],
        }
        assert git(copy, "log", "-1", "--format=%s").strip() == "Reconcile with live database"
        assert drift_report(source, copy).clean
    finally:
        with psycopg.connect(source) as conn:
            conn.execute("DROP TABLE public.hotfix")
