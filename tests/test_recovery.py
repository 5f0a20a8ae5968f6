"""Recovery: a killed export leaves a valid repository, and a rerun finishes the same job."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, append_changes, at, git, make_source

from pggit_export.git.writer import GitWriter, RepositoryError


def synthetic_history(count: int) -> list[Change]:
    """Tables created, altered and dropped: enough changesets for many batches."""
    changes = []
    for i in range(count):
        table = f"t{i % 7}"
        ensure = f"CREATE TABLE IF NOT EXISTS {table} (id int);\n"
        if i % 3 == 0:
            sql, kind = f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int);", "CREATE"
        elif i % 3 == 1:
            sql, kind = f"{ensure}ALTER TABLE {table} ADD COLUMN c{i} text;", "ALTER"
        else:
            sql, kind = f"{ensure}CREATE INDEX i{i} ON {table} (id);", "CREATE"
        changes.append(Change(sql, at(1 + i // 24, i % 24), "alice", [(kind, "TABLE", "public", table)]))
    return changes


def run_export(source: str, repo: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pggit_export", "export", source, str(repo), "--quiet",
         "--batch-size", "2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def shadow_servers() -> set[int]:
    """PIDs of running postmasters of private shadows."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {
        int(line.split()[0]) for line in out.splitlines()
        if "pggit-export-shadow-" in line and " -D " in line and "postgres" in line
    }


@pytest.mark.timing
def test_killed_at_random_points_then_resumed_gives_the_clean_result(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source = make_source(make_database(), synthetic_history(40))
    servers_before = shadow_servers()
    started = time.monotonic()
    clean = run_export(source, tmp_path / "clean")
    assert clean.wait(timeout=300) == 0, clean.stderr.read() if clean.stderr else ""
    clean_seconds = time.monotonic() - started
    clean_head = git(tmp_path / "clean", "rev-parse", "main")

    rng = random.Random(20261125)
    kills, finished, attempts = 0, 0, 0
    repo = tmp_path / "killed-0"
    # Kill at random moments until 8 kills have landed. A run that finishes first (a
    # resumed run has less to do) must end on the clean head; then a fresh repository
    # takes the next kills, so every kill interrupts real work.
    while kills < 8:
        attempts += 1
        assert attempts < 60, "the export keeps finishing before it can be interrupted"
        process = run_export(source, repo)
        time.sleep(rng.uniform(0.05, clean_seconds))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
            process.wait(timeout=60)
            if (repo / ".git" / "HEAD").exists():
                git(repo, "fsck", "--strict")
            continue
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
        assert git(repo, "rev-parse", "main") == clean_head
        finished += 1
        repo = tmp_path / f"killed-{finished}"
    final = run_export(source, repo)
    assert final.wait(timeout=300) == 0, final.stderr.read() if final.stderr else ""
    assert git(repo, "rev-parse", "main") == clean_head
    git(repo, "fsck", "--strict")
    assert git(repo, "status", "--porcelain") == ""
    # Postmasters of killed exports get SIGINT from the kernel when their parent dies; wait
    # for those very processes to go (a fast shutdown under load can take a while), with a
    # bound only against a postmaster that never would.
    for pid in shadow_servers() - servers_before:
        wait_for_exit(pid, within_seconds=300)
    assert shadow_servers() - servers_before == set()


def wait_for_exit(pid: int, within_seconds: float) -> None:
    """Wait until process `pid` (not a child of ours) has exited."""
    started = time.monotonic()
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() - started < within_seconds, f"process {pid} never exited"
        time.sleep(0.1)


def test_second_export_into_the_same_repository_fails_fast(tmp_path: Path) -> None:
    with GitWriter(tmp_path / "repo"):
        with pytest.raises(RepositoryError, match="another pggit-export is writing"):
            with GitWriter(tmp_path / "repo"):
                pass


def test_locked_repository_gives_exit_code_3_and_one_line(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source = make_source(make_database(), synthetic_history(2))
    with GitWriter(tmp_path / "repo"):
        result = subprocess.run(
            [sys.executable, "-m", "pggit_export", "export", source, str(tmp_path / "repo")],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 3
    assert result.stderr.startswith("pggit-export: error: another pggit-export is writing")
    assert "Traceback" not in result.stderr


def test_dry_run_replays_and_reports_but_writes_nothing(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    from pggit_export import ExportOptions, export_history

    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1)),
        Change("ALTER TABLE nope ADD x int;", at(2), objects=[("ALTER", "TABLE", "public", "nope")]),
    ])
    repo = tmp_path / "repo"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn, dry_run=True))
    assert report.commits_written == 2 and [f.history_ids for f in report.failed] == [[2]]
    assert not repo.exists()
    # The same run for real gives the commit the dry run computed.
    real = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert real.head == report.head


def test_strict_stops_before_the_first_failure_and_a_rerun_continues(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1)),
        Change("ALTER TABLE nope ADD x int;", at(2), objects=[("ALTER", "TABLE", "public", "nope")]),
        Change("CREATE TABLE b (id int);", at(3), objects=[("CREATE", "TABLE", "public", "b")]),
    ])
    repo = tmp_path / "repo"
    result = subprocess.run(
        [sys.executable, "-m", "pggit_export", "export", source, str(repo), "--strict",
         "--shadow-dsn", pg_admin_dsn],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "--strict: stopped" in result.stdout and "history ids 2" in result.stdout
    assert git(repo, "rev-list", "--count", "main").strip() == "1"
    rerun = subprocess.run(
        [sys.executable, "-m", "pggit_export", "export", source, str(repo), "--json",
         "--shadow-dsn", pg_admin_dsn],
        capture_output=True, text=True, timeout=120,
    )
    assert rerun.returncode == 1  # done, with one failed changeset
    summary = json.loads(rerun.stdout)
    assert summary["commits_written"] == 2 and summary["failed"][0]["history_ids"] == [2]
    assert git(repo, "rev-list", "--count", "main").strip() == "3"


def test_oversized_text_is_refused_unparsed_and_reported(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    from pggit_export import ExportOptions, export_history

    huge = "CREATE TABLE big (id int);\n" + "INSERT INTO big VALUES (1);\n" * 200_000  # 5.6 MB
    source = make_source(make_database(), [
        Change(huge, at(1), objects=[("CREATE", "TABLE", "public", "big")]),
        Change("CREATE TABLE after_it (id int);", at(2)),
    ])
    started = time.monotonic()
    report = export_history(source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert time.monotonic() - started < 60
    [refused] = report.refused_statements
    assert refused.history_ids == [1] and "size limit" in refused.reason
    assert len(refused.statement or "") < 3000
    assert git(tmp_path / "repo", "ls-tree", "--name-only", "-r", "main").split() == [
        "public/_schema.sql", "public/after_it.sql",
    ]
    git(tmp_path / "repo", "fsck", "--strict")


def test_locks_left_by_a_killed_export_do_not_block_the_rerun(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source = make_source(make_database(), synthetic_history(4))
    repo = tmp_path / "repo"
    assert run_export(source, repo).wait(timeout=300) == 0
    head = git(repo, "rev-parse", "main")
    twin = tmp_path / "twin"
    shutil.copytree(repo, twin)
    with psycopg.connect(source) as conn:
        append_changes(conn, [Change("CREATE TABLE later (id int);", at(9))])
    # The rerun's pack has the same name in both (the same objects): learnt from the twin.
    packs = repo / ".git" / "objects" / "pack"
    assert run_export(source, twin).wait(timeout=300) == 0
    rerun_indexes = {p.name for p in (twin / ".git" / "objects" / "pack").glob("*.idx")} - {
        p.name for p in packs.glob("*.idx")}
    assert rerun_indexes
    # What a kill during the ref update, while writing a pack's index, or during the final
    # checkout, leaves behind.
    (repo / ".git" / "refs" / "heads" / "main.lock").write_text(head)
    (repo / ".git" / "refs" / "notes" / "pggit.lock").write_text(head)
    for name in rerun_indexes:
        (packs / f"{name}.lock").write_bytes(b"\0" * 100)
    (repo / ".git" / "index.lock").write_bytes((repo / ".git" / "index").read_bytes()[:100])
    result = run_export(source, repo)
    assert result.wait(timeout=300) == 0, result.stderr.read() if result.stderr else ""
    assert git(repo, "rev-list", "--count", "main").strip() == "5"
    git(repo, "fsck", "--strict")


def test_resuming_from_any_commit_writes_the_clean_run_s_history(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # A history whose replay depends on what the shadow holds: a table older than the
    # history (the baseline), a type and a trigger v1 never recorded, a column renamed
    # unrecorded, a changeset that fails. A rerun that continues from any of its commits
    # must end on exactly the commits a clean run writes.
    from history import cli

    live = ("CREATE TABLE legacy (id int, note text);\n"
            "CREATE TYPE mood AS ENUM ('ok', 'great');\n"
            "CREATE TABLE person (id int, feeling mood, seen timestamptz);\n"
            "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN RETURN NEW; END';\n"
            "CREATE TRIGGER person_touch BEFORE UPDATE ON person FOR EACH ROW "
            "EXECUTE FUNCTION touch();\n"
            "CREATE INDEX person_id ON person (id);\n")
    source = make_source(make_database(), [
        Change("ALTER TABLE legacy ADD COLUMN note text;", at(1),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
        Change("CREATE TABLE person (id int, feeling mood);", at(2),
               objects=[("CREATE", "TABLE", "public", "person")]),
        Change("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
               "'BEGIN RETURN NEW; END';", at(3),
               objects=[("CREATE", "FUNCTION", "public", "touch")]),
        Change("ALTER TABLE missing ADD COLUMN x int;", at(4),
               objects=[("ALTER", "TABLE", "public", "missing")]),
        Change("ALTER TABLE person ADD COLUMN seen timestamptz;", at(5),
               objects=[("ALTER", "TABLE", "public", "person")]),
        Change("CREATE INDEX person_id ON person (id);", at(6),
               objects=[("CREATE", "INDEX", "public", "person_id")]),
    ], live_sql=live)
    clean = tmp_path / "clean"
    assert cli("export", source, str(clean)).returncode == 1  # history id 4 fails
    commits = git(clean, "rev-list", "--reverse", "main").split()
    assert len(commits) == 7  # the baseline and six changesets
    for point in range(len(commits) - 1):
        copy = tmp_path / f"from-{point}"
        git(tmp_path, "clone", "--quiet", str(clean), str(copy))
        git(copy, "reset", "--quiet", "--hard", commits[point])
        result = cli("export", source, str(copy))
        # commits[k] holds history id k: the failure is ahead of points 0-3 only.
        assert result.returncode == (1 if point < 4 else 0), result.stdout + result.stderr
        if point > 0:
            assert "the shadow rebuilt by replaying the history up to it" in result.stdout
        assert git(copy, "rev-parse", "main").strip() == commits[-1], f"resumed after {point}"
