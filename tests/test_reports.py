"""Every report states its own verdict: `format_text()` is what the command prints, and
`exit_code` the code it exits with. Each report here comes from a real run, once clean and
once with something to look at; a few runs also go through the command line, whose output
must be the report's text and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from history import Change, at, cli, git, make_source

import pggit_export
from pggit_export import (
    ExportOptions,
    MirrorOptions,
    check_history,
    drift_report,
    export_history,
    mirror_repository,
    restore_snapshot,
    verify_mirror,
)
from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK
from pggit_export.restore import snapshot_script

CLEAN = [
    Change("CREATE TABLE t (id int, name text);", at(1)),
    Change("ALTER TABLE t ADD COLUMN email text;", at(2), objects=[("ALTER", "TABLE", "public", "t")]),
]
CLEAN_LIVE = "CREATE TABLE t (id int, name text, email text);"
FAILING = [
    Change("CREATE TABLE t (id int);", at(1)),
    Change("ALTER TABLE nope ADD x int;", at(2), objects=[("ALTER", "TABLE", "public", "nope")]),
]
REFUSED = [
    Change("CREATE TABLE t (id int);", at(1)),
    Change("CREATE TABLE u (id int); ALTER SYSTEM SET work_mem = '1MB';", at(2),
           objects=[("CREATE", "TABLE", "public", "u")]),
]


def test_every_public_report_has_format_text_and_exit_code() -> None:
    reports = [getattr(pggit_export, name) for name in pggit_export.__all__
               if name.endswith("Report")]
    assert len(reports) >= 6  # export, mirror, verify, restore, drift, check
    for report in reports:
        assert callable(getattr(report, "format_text", None)), report
        assert isinstance(getattr(report, "exit_code", None), property), report


def test_export_report_clean(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), CLEAN, live_sql=CLEAN_LIVE)
    repo = tmp_path / "r"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.exit_code == EXIT_OK
    lines = report.format_text().splitlines()
    assert lines[0] == f"Exported 2 history rows as 2 commits into {repo}, branch main"
    assert lines[1] == f"  head:   {git(repo, 'rev-parse', 'main').strip()}"
    assert lines[-1] == "  every changeset replayed"
    assert report.format_stderr() == "" and report.format_text(quiet=True) == ""

    (tmp_path / "unused.sql").write_text("CREATE TABLE b (id int);\n")
    again = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn, reconcile=True,
                                                       baseline=tmp_path / "unused.sql"))
    assert again.exit_code == EXIT_OK
    assert again.format_text().splitlines()[0] == (
        f"Exported 0 history rows as 0 commits into {repo}, branch main (continued after "
        "history id 2; the shadow rebuilt by replaying the history up to it)")
    assert "  reconciled with the live database: 0 added, 0 changed, 0 removed" in (
        again.format_text().splitlines())
    # A warning goes to stderr, quiet or not; quiet drops the summary.
    warning = "warning: --baseline ignored: the repository already has its root commit"
    assert again.format_stderr() == again.format_stderr(quiet=True) == warning


def test_export_report_with_a_failed_changeset(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), FAILING)
    repo = tmp_path / "r"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.exit_code == EXIT_INCOMPLETE
    head = git(repo, "rev-parse", "main").strip()
    text = report.format_text()
    assert text.splitlines()[-2:] == [
        "  1 changeset failed to replay (kept as commits):",
        f'    history ids 2 (commit {head[:12]}): statement 1: relation "nope" does not exist '
        "(42P01)",
    ]
    assert "every changeset replayed" not in text
    assert report.format_stderr() == ""
    assert report.format_stderr(quiet=True) == (
        'pggit-export: history ids 2 failed to replay: statement 1: relation "nope" does not '
        "exist (42P01)")

    strict = export_history(source, tmp_path / "s", ExportOptions(shadow_dsn=pg_admin_dsn,
                                                                  strict=True))
    assert strict.stopped_early and strict.exit_code == EXIT_INCOMPLETE
    assert strict.format_text().splitlines()[:2] == [
        f"Exported 1 history row as 1 commit into {tmp_path / 's'}, branch main",
        "  --strict: stopped at the first changeset that failed to replay",
    ]


def test_export_report_with_a_refused_statement(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), REFUSED)
    report = export_history(source, tmp_path / "r", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.exit_code == EXIT_INCOMPLETE
    assert report.format_text().splitlines()[-2:] == [
        "  1 statement refused, not run:",
        "    history ids 2: ALTER SYSTEM SET work_mem = '1MB';",
    ]
    assert report.format_stderr(quiet=True) == (
        "pggit-export: history ids 2: statement refused, not run")


def test_the_export_command_prints_the_reports_text_and_exits_with_its_code(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), FAILING)
    repo = tmp_path / "r"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn, dry_run=True))
    assert report.format_text().startswith("Dry run, nothing written: would export 2 history")
    result = cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn, "--dry-run")
    assert result.stdout == report.format_text() + "\n"
    assert result.stderr == ""
    assert result.returncode == report.exit_code == EXIT_INCOMPLETE
    quiet = cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn, "--dry-run", "-q")
    assert quiet.stdout == "" and quiet.stderr == report.format_stderr(quiet=True) + "\n"
    assert quiet.returncode == EXIT_INCOMPLETE


def test_mirror_and_verify_reports(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), CLEAN)
    repo = tmp_path / "r"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    target = source  # as `export --mirror` does: verify then compares with pggit.history too

    first = mirror_repository(repo, target)
    assert first.exit_code == EXIT_OK and first.format_stderr() == ""
    assert first.format_text().splitlines() == [
        f"Mirrored 2 new commits (0 already there) of {repo} into pggit_v2 and pggit_audit: "
        f"{first.objects_added} objects, {first.tree_entries_added} tree entries, "
        "3 audit changes, 3 object versions",
        "  created tables: " + ", ".join(first.created_tables),
    ]
    assert first.objects_added > 0 and "pggit_v2.objects" in first.created_tables
    assert first.format_text(quiet=True) == ""
    again = mirror_repository(repo, target)
    assert again.format_text() == (
        f"Mirrored 0 new commits (2 already there) of {repo} into pggit_v2 and pggit_audit: "
        "0 objects, 0 tree entries, 0 audit changes, 0 object versions")

    verified = verify_mirror(repo, target)
    assert verified.exit_code == EXIT_OK and verified.column_check == "done"
    assert verified.format_text().splitlines()[-1] == "OK"
    with psycopg.connect(target) as conn:  # tamper with one mirrored blob
        conn.execute("UPDATE pggit_v2.objects SET content = content || ' ' WHERE sha = "
                     "(SELECT min(sha) FROM pggit_v2.objects WHERE type = 'blob')")
    tampered = verify_mirror(repo, target)
    assert tampered.exit_code == EXIT_INCOMPLETE
    text = tampered.format_text()
    assert text.splitlines()[-1] == "FAILED"
    assert any(line.startswith("  - [objects] ") for line in text.splitlines()), text
    result = cli("verify", str(repo), target)
    assert result.stdout == text + "\n" and result.returncode == EXIT_INCOMPLETE

    # Something to look at: a warning, on stderr, quiet or not; the mirror itself is done.
    elsewhere = mirror_repository(
        repo, target, MirrorOptions(v2_schema="pggit_v0", audit_schema="audit_v0"))
    assert elsewhere.exit_code == EXIT_OK and elsewhere.commits_added == 2
    assert elsewhere.format_stderr() == (
        "warning: pggit_v0.objects did not exist, but pggit_v2.objects does: this pgGit "
        "install may expect --v2-schema pggit_v2")


def test_restore_reports(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), CLEAN)
    repo = tmp_path / "r"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    head = git(repo, "rev-parse", "main").strip()

    restored = restore_snapshot(repo, make_database())
    assert restored.exit_code == EXIT_OK
    assert restored.format_text() == (
        f"Restored commit {head[:12]} (2024-01-02T12:00:00+00:00): {restored.files} files, "
        f"{restored.statements} statements in {restored.passes} passes")
    assert restored.files == 2

    script = snapshot_script(repo, shadow_dsn=pg_admin_dsn)
    assert script.exit_code == EXIT_OK
    assert script.format_text("then.sql") == (
        f"Wrote commit {head[:12]} (2024-01-02T12:00:00+00:00): {script.files} files, "
        f"{script.statements} statements to then.sql")

    # A file written by hand that PostgreSQL renders back differently.
    table = repo / "public" / "t.sql"
    table.write_text("-- edited by hand\n" + table.read_text())
    git(repo, "-c", "user.name=me", "-c", "user.email=me@example.com",
        "commit", "-qam", "hand edit")
    differing = restore_snapshot(repo, make_database())
    assert differing.exit_code == EXIT_INCOMPLETE
    assert differing.format_text().splitlines()[1:] == ["  renders differently here: public/t.sql"]


def test_drift_reports(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), CLEAN, live_sql=CLEAN_LIVE)
    repo = tmp_path / "r"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    head = git(repo, "rev-parse", "main").strip()

    clean = drift_report(source, repo)
    assert clean.exit_code == EXIT_OK
    assert clean.format_text() == f"Live database against commit {head[:12]}:\n  no drift"

    with psycopg.connect(source) as conn:  # a hotfix pgGit did not record
        conn.execute("CREATE TABLE hotfix (id int)")
    drifted = drift_report(source, repo)
    assert drifted.exit_code == EXIT_INCOMPLETE
    assert drifted.format_text().splitlines()[1:3] == [
        "  1 exists live, never recorded in the history:", "    public/hotfix.sql"]
    result = cli("drift", source, str(repo))
    assert result.stdout == drifted.format_text() + "\n"
    assert result.returncode == drifted.exit_code


def test_check_reports(make_database: Callable[[], str], pg_admin_dsn: str) -> None:
    clean = check_history(make_source(make_database(), CLEAN), shadow_dsn=pg_admin_dsn)
    assert clean.exit_code == EXIT_OK
    assert clean.format_text().splitlines()[-1].startswith("Summary: clean: 0 error(s)")

    messy_source = make_source(make_database(), [
        Change("ALTER TABLE old_t ADD x int;", at(1), objects=[("ALTER", "TABLE", "public", "old_t")]),
        Change(None, at(2), objects=[("CREATE", "TABLE", "public", "u")]),
    ])
    messy = check_history(messy_source, shadow_dsn=pg_admin_dsn)
    assert messy.exit_code == EXIT_INCOMPLETE
    lines = messy.format_text().splitlines()
    assert "error: missing-create (1)" in lines and "error: missing-sql (1)" in lines
    assert lines[-1].startswith("Summary: not clean: 2 error(s)")
    result = cli("check", messy_source, "--shadow-dsn", pg_admin_dsn)
    assert result.stdout == messy.format_text() + "\n"
    assert result.returncode == messy.exit_code
