"""The user's environment reaches the source only, never the shadow.

A DBA's shell has PG* variables for their own servers. The shadow is the tool's: its server
and every connection to it run under fixed settings, so no inherited variable changes a
commit id (or makes the server listen where the tool does not look).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, cli, git, make_source

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


def test_history_never_replays_as_the_role_the_tool_connects_as(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    role = f"shadow_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
        shadow = psycopg.conninfo.make_conninfo(pg_admin_dsn, user=role, dbname="postgres")

        refused = cli("export", source, str(tmp_path / "refused"), "--shadow-dsn", shadow)

        assert refused.returncode == 3
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "pggit-export: error: --shadow-dsn: history would replay as the role the tool "
            "connects as (its role is no superuser, so no throwaway role can replay)")
        assert not (tmp_path / "refused" / "public").exists()

        accepted = cli("export", source, str(tmp_path / "accepted"), "--shadow-dsn", shadow,
                       "--shadow-replay-as-owner")
        assert accepted.returncode == 0, accepted.stderr
        assert f"the shadow replays as {role}, the role the tool connects as" in accepted.stderr
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')


def _shadow_directories() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("pggit-export-shadow-*"))


@pytest.mark.timing
def test_sigterm_ends_a_run_like_ctrl_c_and_leaves_no_shadow_behind(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Long enough that the run is still going when the signal comes, on a fast machine too.
    changes = [Change(f"CREATE TABLE t{i} (id int);", at(1 + i // 100, i % 24, i % 60),
                      objects=[("CREATE", "TABLE", "public", f"t{i}")]) for i in range(1500)]
    source = make_source(make_database(), changes)
    before = _shadow_directories()
    process = subprocess.Popen(
        [sys.executable, "-m", "pggit_export", "export", source, str(tmp_path / "repo"),
         "--quiet", "--batch-size", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Terminate once the export is under way: its shadow exists and commits are written.
    branch = tmp_path / "repo" / ".git" / "refs" / "heads" / "main"
    while not (_shadow_directories() - before and branch.exists()):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    ours = _shadow_directories() - before
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "pggit-export: interrupted; the repository holds every commit written so far, run "
        "the same command again to continue"]
    assert ours and not any(directory.exists() for directory in ours)
    resumed = cli("export", source, str(tmp_path / "repo"))
    assert resumed.returncode == 0, resumed.stderr
    assert git(tmp_path / "repo", "rev-list", "--count", "main").strip() == "1500"


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_removes_the_shadows_of_dead_exports_and_only_those(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    parent = Path(tempfile.gettempdir())
    dead = parent / f"pggit-export-shadow-test-dead-{uuid.uuid4().hex[:8]}"
    living = parent / f"pggit-export-shadow-test-living-{uuid.uuid4().hex[:8]}"
    for directory, owner in ((dead, _dead_pid()), (living, os.getpid())):
        (directory / "data").mkdir(parents=True)
        (directory / "owner.pid").write_text(f"{owner}\n")
    try:
        source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
        result = cli("export", source, str(tmp_path / "repo"))
        assert result.returncode == 0, result.stderr
        assert not dead.exists()  # its export died: nobody else would ever remove it
        assert living.exists()  # its export is alive (this test): never touched
    finally:
        for directory in (dead, living):
            shutil.rmtree(directory, ignore_errors=True)


def test_the_shadow_holds_a_migration_of_thousands_of_tables(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # 2,200 tables with primary keys in one transaction: 'out of shared memory' in a shadow
    # with PostgreSQL's default lock table, where the source ran it.
    text = "".join(f"CREATE TABLE t{i} (id int PRIMARY KEY, v text);\n" for i in range(2200))
    source = make_source(make_database(), [
        Change(text, at(1), objects=[("CREATE", "TABLE", "public", f"t{i}") for i in range(2200)]),
    ])

    result = cli("export", source, str(tmp_path / "repo"))

    assert result.returncode == 0, result.stdout + result.stderr
    files = git(tmp_path / "repo", "ls-tree", "-r", "--name-only", "main").split()
    assert len(files) == 2201  # and public/_schema.sql


def test_the_private_shadow_bounds_temporary_files(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # A replayed query on empty tables can still spill what it generates to temporary
    # files; the private shadow bounds them (temp_file_limit), so hostile history gets an
    # error instead of filling the disk. The history itself checks the bound.
    from history import Change, at, cli, git, make_source

    guarded = ("DO $$ BEGIN IF current_setting('temp_file_limit') = '-1' THEN "
               "RAISE EXCEPTION 'no bound on temporary files'; END IF; "
               "CREATE TABLE guarded (id int); END $$;")
    source = make_source(make_database(), [
        Change(guarded, at(1), objects=[("CREATE", "TABLE", "public", "guarded")]),
    ], live_sql="CREATE TABLE guarded (id int);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "public/guarded.sql" in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_a_history_storing_rows_stops_at_the_shadow_size_limit(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Replay skips every data command, but a DO block can still insert rows: ~40 MB here.
    fill = ("DO $$ BEGIN CREATE TABLE filler (x text); INSERT INTO filler SELECT"
            " (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 30) i)"
            " FROM generate_series(1, 40000) g; END $$;")
    source = make_source(make_database(), [
        Change("CREATE TABLE before (id int)", at(1), objects=[("CREATE", "TABLE", "public", "before")]),
        Change(fill, at(2), objects=[("CREATE", "TABLE", "public", "filler")]),
        Change("CREATE TABLE after (id int)", at(3), objects=[("CREATE", "TABLE", "public", "after")]),
    ])
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo), "--shadow-size-limit", "20MB", "--batch-size", "1")

    assert result.returncode == 3, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("pggit-export: error: the shadow database holds ")
    assert "after history ids 2, over the shadow size limit (20 MB)" in line
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["Create table public.before"]
    # A limit that allows it, and the rerun finishes the job.
    rerun = cli("export", source, str(repo), "--shadow-size-limit", "1GB")
    assert rerun.returncode == 0, rerun.stderr
    assert "public/after.sql" in git(repo, "ls-tree", "-r", "--name-only", "main")

    wrong = cli("export", source, str(tmp_path / "other"), "--shadow-size-limit", "lots")
    assert wrong.returncode == 2 and "--shadow-size-limit 'lots' is not a size" in wrong.stderr
