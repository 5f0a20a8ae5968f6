"""Replay edge cases: what runs in the shadow, what is skipped or refused, and isolation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, git, make_source

from pggit_export import ExportOptions, export_history
from pggit_export.shadow.pipeline import relations_locked_exclusive
from pggit_export.shadow.replay import (
    Action,
    classify,
    prepare_for_transaction,
    split_statements,
)


@pytest.mark.parametrize(
    ("statement", "action"),
    [
        ("CREATE TABLE t (id int)", Action.REPLAY),
        ("  -- leading comment\nALTER TABLE t ADD x int", Action.REPLAY),
        ("DO $$ BEGIN CREATE TABLE x (); END $$", Action.REPLAY),
        ("SELECT add_audit('t')", Action.REPLAY),
        ("CALL migrate()", Action.REPLAY),
        ("SET search_path = app", Action.REPLAY),
        ("INSERT INTO t VALUES (1)", Action.SKIP_DATA),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", Action.SKIP_DATA),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Action.REPLAY),
        ("update t set x = 1", Action.SKIP_DATA),
        ("COPY t FROM stdin", Action.SKIP_DATA),
        ("TRUNCATE t", Action.SKIP_DATA),
        ("BEGIN", Action.SKIP_TRANSACTION),
        ("COMMIT", Action.SKIP_TRANSACTION),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Action.SKIP_TRANSACTION),
        ("GRANT SELECT ON t TO reader", Action.SKIP_PRIVILEGES),
        ("ALTER TABLE t OWNER TO bob", Action.SKIP_PRIVILEGES),
        ("CREATE ROLE bob", Action.SKIP_PRIVILEGES),
        ("VACUUM ANALYZE t", Action.SKIP_MAINTENANCE),
        ("ALTER SYSTEM SET work_mem = '1GB'", Action.REFUSE),
        ("CREATE DATABASE other", Action.REFUSE),
        ("COPY t TO PROGRAM 'rm -rf /'", Action.REFUSE),
        ("COPY t FROM '/etc/passwd'", Action.REFUSE),
        ("CREATE TABLESPACE x LOCATION '/tmp'", Action.REFUSE),
    ],
)
def test_classify(statement: str, action: Action) -> None:
    assert classify(statement) is action


def test_split_keeps_dollar_quoted_bodies_whole() -> None:
    text = (
        "BEGIN;\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $b$ BEGIN; RETURN 1; END; $b$;"
        "\n-- only a comment\nCOMMIT;"
    )
    statements = split_statements(text)
    assert [s.action for s in statements] == [
        Action.SKIP_TRANSACTION, Action.REPLAY, Action.SKIP_TRANSACTION,
    ]
    assert statements[1].text.endswith("END; $b$;")


def test_concurrently_is_dropped_inside_a_transaction() -> None:
    assert prepare_for_transaction("CREATE UNIQUE INDEX CONCURRENTLY i ON t (x)") == (
        "CREATE UNIQUE INDEX i ON t (x)"
    )
    assert prepare_for_transaction("DROP INDEX CONCURRENTLY i") == "DROP INDEX i"


def export(source: str, tmp_path: Path, shadow: str) -> tuple[object, Path]:
    repo = tmp_path / "repo"
    return export_history(source, repo, ExportOptions(shadow_dsn=shadow)), repo


def test_ddl_in_functions_do_blocks_and_selects_is_replayed(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change(
            "CREATE TABLE t (id int);\n"
            "CREATE FUNCTION add_log(tbl text) RETURNS void LANGUAGE plpgsql AS $$\n"
            "BEGIN EXECUTE format('CREATE TABLE %I (id int)', tbl || '_log'); END $$;\n"
            "SELECT add_log('t');\n"
            "DO $$ BEGIN CREATE TABLE from_do (id int); END $$;\n"
            "CREATE INDEX CONCURRENTLY t_id ON t (id);",
            at(1),
        ),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert {"public/t_log.sql", "public/from_do.sql", "public/add_log.sql"} <= set(files)
    assert "CREATE INDEX t_id ON public.t USING btree (id);" in git(repo, "show", "main:public/t.sql")


def test_session_state_does_not_leak_between_changesets(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE SCHEMA app;\nSET search_path = app;\nCREATE TABLE a (id int);", at(1),
               objects=[("CREATE", "TABLE", "app", "a")]),
        Change("CREATE TABLE b (id int);", at(2), objects=[("CREATE", "TABLE", "public", "b")]),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert "app/a.sql" in files and "public/b.sql" in files and "app/b.sql" not in files


def test_session_state_of_temp_tables_and_failed_changesets_does_not_leak(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # A changeset replays in one message (statements and session reset together);
    # a failed one is replayed again statement by statement and reset with DISCARD ALL.
    source = make_source(make_database(), [
        Change("CREATE SCHEMA app;\nCREATE TEMP TABLE scratch (id int);\nCREATE TABLE a (id int);",
               at(1), objects=[("CREATE", "TABLE", "public", "a")]),
        Change("SET search_path = app;\nCREATE TEMP TABLE scratch (id int);\n"
               "CREATE TABLE lost (id int);\nCREATE TABLE a (id int);\nSELECT 1 / 0;",
               at(2), objects=[("CREATE", "TABLE", "app", "a")]),
        Change("CREATE TEMP TABLE scratch (id int);\nCREATE TABLE b (id int);", at(3),
               objects=[("CREATE", "TABLE", "public", "b")]),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert [f.history_ids for f in report.failed] == [[2]]  # type: ignore[attr-defined]
    assert "statement 5:" in report.failed[0].error  # type: ignore[attr-defined]
    files = set(git(repo, "ls-tree", "-r", "--name-only", "main").split())
    assert {"app/_schema.sql", "public/a.sql", "public/b.sql"} <= files
    assert not {"app/a.sql", "app/b.sql", "app/lost.sql", "public/lost.sql"} & files


def test_a_trailing_comment_does_not_swallow_the_next_statement(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE x (id int) -- no semicolon, comment to the end of the line\n;"
               "CREATE TABLE y (id int) /* block */ ;  CREATE TABLE z (id int) -- last", at(1),
               objects=[("CREATE", "TABLE", "public", t) for t in "xyz"]),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean  # type: ignore[attr-defined]
    files = set(git(repo, "ls-tree", "-r", "--name-only", "main").split())
    assert {"public/x.sql", "public/y.sql", "public/z.sql"} <= files


def test_refused_statements_are_reported_and_not_run(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int);\nALTER SYSTEM SET work_mem = '1GB';\n"
               "COPY t TO PROGRAM 'touch /tmp/pggit-export-pwned';", at(1)),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert [r.statement for r in report.refused_statements] == [
        "ALTER SYSTEM SET work_mem = '1GB';", "COPY t TO PROGRAM 'touch /tmp/pggit-export-pwned';",
    ]
    assert not Path("/tmp/pggit-export-pwned").exists()
    with psycopg.connect(pg_admin_dsn) as conn:
        assert conn.execute("SHOW work_mem").fetchone() != ("1GB",)
    message = git(repo, "log", "-1", "--format=%B")
    assert "Not run, refused: could reach" in message and "ALTER SYSTEM" in message
    assert "public/t.sql" in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_pggit_install_row_is_kept_but_not_replayed(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE FUNCTION pggit.handle_ddl() RETURNS event_trigger LANGUAGE plpgsql "
               "AS $$ BEGIN END $$;", at(1), "postgres",
               [("CREATE", "FUNCTION", "pggit", "16500")]),
        Change("CREATE TABLE t (id int);", at(2)),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean and report.commits_written == 2
    assert [r.history_ids for r in report.not_replayed] == [[1]]
    first = git(repo, "log", "--reverse", "--format=%s").splitlines()[0]
    assert first == "Skip pgGit's own objects (schema pggit)"


def test_pggits_own_objects_are_recognised_however_v1_quoted_them(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # The mirror's CREATE TABLE of pgGit's v2 tables, as pgGit's own capture records it.
    source = make_source(make_database(), [
        Change('CREATE TABLE "pggit_v2"."HEAD" (id int);', at(1), "postgres",
               [("CREATE", "TABLE", '"pggit_v2"', '"HEAD"')]),
        Change('CREATE TABLE pggit_audit.changes (id int);', at(2), "postgres",
               [("CREATE", "TABLE", "", 'pggit_audit."changes"')]),
        Change("CREATE TABLE t (id int);", at(3)),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean and not report.repairs
    assert [r.history_ids for r in report.not_replayed] == [[1], [2]]
    assert git(repo, "log", "--reverse", "--format=%s").splitlines()[:2] == [
        "Skip pgGit's own objects (schema pggit_v2)",
        "Skip pgGit's own objects (schema pggit_audit)",
    ]
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == [
        "public/_schema.sql", "public/t.sql"]


def test_null_time_and_user_are_filled_and_marked(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(3)),
        Change("CREATE TABLE b (id int);", None, None, [("CREATE", "TABLE", "public", "b")]),
        Change("CREATE TABLE c (id int);", at(5), objects=[("CREATE", "TABLE", "public", "c")]),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.commits_written == 3
    log = git(repo, "log", "--reverse", "--format=%an|%aI").splitlines()
    assert log == ["alice|2024-01-03T12:00:00+00:00", "unknown|2024-01-03T12:00:00+00:00",
                   "alice|2024-01-05T12:00:00+00:00"]
    body = git(repo, "log", "--skip=1", "-1", "--format=%B")
    assert "recorded no time" in body and "recorded no user" in body


def test_statements_after_begin_with_transaction_modes_are_replayed(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # sqlparse keeps "BEGIN ISOLATION LEVEL ...;" and everything after it as one piece,
    # which would be skipped whole as transaction control.
    assert [s.action for s in split_statements(
        "BEGIN ISOLATION LEVEL SERIALIZABLE;\nCREATE TABLE a (id int);\nCOMMIT;"
    )] == [Action.SKIP_TRANSACTION, Action.REPLAY, Action.SKIP_TRANSACTION]
    source = make_source(make_database(), [
        Change("BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE;\nCREATE TABLE a (id int);\n"
               "CREATE TABLE b (id int);\nCOMMIT;", at(1),
               objects=[("CREATE", "TABLE", "public", "a"), ("CREATE", "TABLE", "public", "b")]),
    ])
    report, repo = export(source, tmp_path, pg_admin_dsn)
    assert report.clean  # type: ignore[attr-defined]
    files = set(git(repo, "ls-tree", "-r", "--name-only", "main").split())
    assert {"public/a.sql", "public/b.sql"} <= files


@pytest.mark.parametrize(("text", "locked"), [
    ("ALTER TABLE public.t ADD COLUMN x int", {"t"}),
    ('DROP VIEW IF EXISTS a, "B"."Cc" CASCADE;', {"a", "Cc"}),
    ("CREATE INDEX ON t (x);\n-- then\nALTER TABLE ONLY s.u DROP COLUMN y", {"u"}),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", {"v"}),
    ("CREATE RULE r AS ON INSERT TO s.tab DO NOTHING", {"r", "tab"}),
    ('DROP TRIGGER x ON "Tab"', {"x", "Tab"}),
    ("TRUNCATE x, y", {"x", "y"}),
    # Weaker locks, which a take's ACCESS SHARE does not wait for, or none at all.
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", set()),
    ("CREATE INDEX i ON t (x); CREATE TABLE u (id int); SELECT 1", set()),
])
def test_relations_a_text_locks_exclusive_are_guessed_from_it(
    text: str, locked: set[str]
) -> None:
    assert relations_locked_exclusive(text) == locked
