"""The pre-flight check: one small v1 history per finding code, on a real server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, cli, make_source
from psycopg import sql

from pggit_export import ExportOptions, export_history
from pggit_export import check as check_module
from pggit_export.check import CODES, CheckReport, Finding, check_history
from pggit_export.read.history import SourceError

MakeDb = Callable[[], str]


def run(source: str, shadow: str, **kw: object) -> CheckReport:
    return check_history(source, shadow_dsn=shadow, **kw)  # type: ignore[arg-type]


def only(report: CheckReport, code: str) -> list[Finding]:
    found = [f for f in report.findings if f.code == code]
    for finding in found:
        assert finding.severity == CODES[code]
    return found


def one(report: CheckReport, code: str) -> Finding:
    found = only(report, code)
    assert len(found) == 1, report.format_text()
    return found[0]


def created(name: str, day: int, extra: str = "") -> Change:
    return Change(f"CREATE TABLE {name} (id int);{extra}", at(day),
                  objects=[("CREATE", "TABLE", "public", name)])


def test_clean_history(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("t", 1),
        Change("ALTER TABLE t ADD x int", at(2), objects=[("ALTER", "TABLE", "public", "t")]),
        Change("CREATE VIEW v AS SELECT id FROM t", at(3),
               objects=[("CREATE", "VIEW", "public", "v")]),
        # psql -f: the same text again later is a separate changeset, and fine.
        Change("DROP VIEW v", at(4), objects=[("DROP", "VIEW", "public", "v")]),
    ])
    report = run(source, pg_admin_dsn)
    assert report.clean, report.format_text()
    assert not [f for f in report.findings if f.severity in ("error", "warning")]
    assert report.history_rows == 4
    assert report.changesets == 4
    assert report.source_server_version >= 100000
    assert "Summary: clean" in report.format_text()


def test_no_pggit_tables_is_a_source_error(make_database: MakeDb, pg_admin_dsn: str) -> None:
    with pytest.raises(SourceError):
        run(make_database(), pg_admin_dsn)


def test_null_time_author_and_sql(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("t", 1),  # id 1
        Change("CREATE TABLE u (id int)", None, objects=[("CREATE", "TABLE", "public", "u")]),
        Change("CREATE TABLE w (id int)", at(3), user=None,
               objects=[("CREATE", "TABLE", "public", "w")]),
        Change("CREATE TABLE x (id int)", at(4), user="  ",
               objects=[("CREATE", "TABLE", "public", "x")]),
        Change(None, at(5), objects=[("CREATE", "TABLE", "public", "y")]),
        Change(" \n ", at(6), objects=[("CREATE", "TABLE", "public", "z")]),
    ])
    report = run(source, pg_admin_dsn)
    assert one(report, "null-created-at").history_ids == [2]
    assert one(report, "missing-created-by").history_ids == [3, 4]
    assert one(report, "missing-sql").history_ids == [5, 6]
    assert not report.clean


def test_altered_or_dropped_but_never_created(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        Change("ALTER TABLE legacy ADD x int", at(1),
               objects=[("ALTER", "TABLE", "public", "legacy")]),  # id 1
        Change("DROP VIEW old_view", at(2), objects=[("DROP", "VIEW", "public", "old_view")]),
        # Column rows and pgGit's own objects are not reported.
        Change("ALTER TABLE legacy ADD y int", at(3),
               objects=[("ALTER", "COLUMN", "public", "legacy.y")]),
        Change("ALTER TABLE pggit.history ADD z int", at(4),
               objects=[("ALTER", "TABLE", "pggit", "history")]),
        # A rename is recorded as an ALTER of the new name: replay has it.
        created("a", 5),
        Change("ALTER TABLE a RENAME TO b", at(6), objects=[("ALTER", "TABLE", "public", "b")]),
        # CREATE TABLE AS is not recorded; the ALTER in the same text is fine.
        Change("CREATE TABLE c AS SELECT 1 AS n; ALTER TABLE c ADD m int", at(7),
               objects=[("ALTER", "TABLE", "public", "c")]),
        # The index of ALTER TABLE ... ADD PRIMARY KEY is never recorded.
        created("p", 8),
        Change("ALTER TABLE p DROP CONSTRAINT p_pkey", at(9),
               objects=[("ALTER", "TABLE", "public", "p"), ("DROP", "INDEX", "public", "p_pkey")]),
        # Dropped with its table: the SQL never names the index.
        Change("DROP TABLE p", at(10),
               objects=[("DROP", "TABLE", "public", "p"), ("DROP", "INDEX", "public", "p_uq")]),
    ])
    report = run(source, pg_admin_dsn)
    missing = {f.detail["name"]: f for f in only(report, "missing-create")}
    assert set(missing) == {"legacy", "old_view"}, report.format_text()
    assert missing["legacy"].history_ids == [1]
    assert missing["old_view"].history_ids == [2]
    assert "public.legacy" in missing["legacy"].message
    assert one(report, "missing-create-index").detail["name"] == "p_pkey"
    assert one(report, "missing-create-implicit").detail["name"] == "p_uq"


def test_changed_before_first_create(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        Change("DROP TABLE t", at(1), objects=[("DROP", "TABLE", "public", "t")]),
        created("t", 2),
        Change("ALTER TABLE t ADD x int", at(3), objects=[("ALTER", "TABLE", "public", "t")]),
    ])
    finding = one(run(source, pg_admin_dsn), "missing-create")
    assert finding.history_ids == [1]
    assert "before its first CREATE" in finding.message


def test_active_objects_with_no_create(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [created("t", 1)])
    with psycopg.connect(source) as conn:
        conn.execute(
            """
            INSERT INTO pggit.objects (object_type, schema_name, object_name, is_active)
            VALUES ('TABLE', 'public', 'before_pggit', true),
                   ('FUNCTION', 'public', '17580', true),
                   ('TABLE', 'public', 'gone', false),
                   ('COLUMN', 'public', 'before_pggit.id', true),
                   ('FUNCTION', 'pggit', '99', true)
            """
        )
    found = {f.detail["name"]: f for f in only(run(source, pg_admin_dsn), "untracked-object")}
    assert set(found) == {"before_pggit", "17580"}
    assert found["before_pggit"].history_ids == []
    # Functions are stored under their OID: the message says so instead of naming one.
    assert "OID 17580" in found["17580"].message


def test_recreated(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("t", 1),
        Change("DROP TABLE t", at(2), objects=[("DROP", "TABLE", "public", "t")]),
        created("t", 3),
        created("u", 4),
    ])
    report = run(source, pg_admin_dsn)
    finding = one(report, "recreated")
    assert finding.severity == "info"
    assert finding.history_ids == [1, 2, 3]
    assert finding.detail["recreations"] == 1
    assert report.clean  # info only


def test_time_goes_backwards(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("a", 1),  # id 1
        created("b", 5),  # id 2
        created("c", 3),  # id 3: earlier than id 2
        created("d", 4),  # id 4: earlier than id 2 too
        created("e", 6),  # id 5
        Change("CREATE TABLE f (id int)", None,
               objects=[("CREATE", "TABLE", "public", "f")]),  # id 6: inferred, never backwards
    ])
    finding = one(run(source, pg_admin_dsn), "time-order")
    assert finding.history_ids == [3, 4]
    assert finding.detail["examples"][0]["earlier_than_id"] == 2


def test_refused_statements(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("t", 1, " ALTER SYSTEM SET work_mem = '1GB';"),
        created("u", 2, " COPY u TO PROGRAM 'cat';"),
    ])
    found = only(run(source, pg_admin_dsn), "refused-statement")
    assert sorted(f.history_ids[0] for f in found) == [1, 2]
    assert any("ALTER SYSTEM" in f.detail["statement"] for f in found)


def test_missing_extension_on_private_shadow(make_database: MakeDb) -> None:
    """No shadow_dsn: a private PostgreSQL is started just for the lookup."""
    source = make_source(make_database(), [
        Change("CREATE EXTENSION IF NOT EXISTS no_such_extension_xyz", at(1),
               objects=[("CREATE", "FUNCTION", "public", "17001")]),
        Change('CREATE EXTENSION "plpgsql"; CREATE TABLE t (id int)', at(2)),
        Change("CREATE EXTENSION plpgsql VERSION '0.0-nope'", at(3),
               objects=[("CREATE", "FUNCTION", "public", "17002")]),
    ])
    report = check_history(source)
    found = {f.detail["extension"]: f for f in only(report, "missing-extension")}
    assert set(found) == {"no_such_extension_xyz", "plpgsql"}
    assert found["no_such_extension_xyz"].history_ids == [1]
    assert found["plpgsql"].detail["versions"] == ["0.0-nope"]
    assert "private PostgreSQL" in found["plpgsql"].detail["shadow"]


def test_missing_roles(make_database: MakeDb, pg_admin_dsn: str) -> None:
    with psycopg.connect(pg_admin_dsn) as conn:
        me = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    source = make_source(make_database(), [
        created("t", 1, f' SET ROLE "{me}"; SET ROLE ghost_setter; RESET ROLE;'),
        Change("CREATE SCHEMA s AUTHORIZATION ghost_owner", at(2),
               objects=[("CREATE", "TABLE", "s", "x")]),
        Change("CREATE POLICY p ON t FOR SELECT TO PUBLIC, ghost_reader USING (true)", at(3),
               objects=[("ALTER", "TABLE", "public", "t")]),
        Change("SET SESSION AUTHORIZATION ghost_session; CREATE TABLE u ()", at(4),
               objects=[("CREATE", "TABLE", "public", "u")]),
        # Skipped by replay (privileges), so the role does not matter.
        Change("GRANT SELECT ON t TO ghost_granted; ALTER TABLE t ADD y int", at(5),
               objects=[("ALTER", "TABLE", "public", "t")]),
    ])
    report = run(source, pg_admin_dsn)
    found = {f.detail["role"]: f.history_ids for f in only(report, "missing-role")}
    assert found == {
        "ghost_setter": [1], "ghost_owner": [2], "ghost_reader": [3], "ghost_session": [4],
    }


def test_ddl_hidden_in_function_calls(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created("t", 1),
        Change("BEGIN; SELECT add_audit_trigger('t'); COMMIT;", at(2),
               objects=[("ALTER", "TABLE", "public", "t")]),
        Change("DO $$ BEGIN EXECUTE 'CREATE TABLE u ()'; END $$", at(3),
               objects=[("CREATE", "TABLE", "public", "u")]),
        # A SELECT next to real DDL explains itself.
        Change("SELECT 1; CREATE TABLE w ()", at(4), objects=[("CREATE", "TABLE", "public", "w")]),
    ])
    report = run(source, pg_admin_dsn)
    found = only(report, "hidden-ddl")
    assert [f.history_ids for f in found] == [[2], [3]]
    assert found[0].detail["objects"] == ["public.t"]
    assert report.clean


def test_unsupported_kinds(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        created(
            "t", 1,
            " CREATE AGGREGATE my_sum(int) (sfunc = int4pl, stype = int);"
            " CREATE POLICY p ON t USING (true);"  # rendered with its table
            " CREATE OR REPLACE LANGUAGE plpgsql;"  # always there
            " CREATE TYPE shell_t;"
            " CREATE TYPE mood AS ENUM ('ok');",  # rendered
        ),
        Change("CREATE TEXT SEARCH CONFIGURATION fr (COPY = french); CREATE TABLE u ()", at(2),
               objects=[("CREATE", "TABLE", "public", "u")]),
        # pgGit's own install script: its event triggers are not the user's schema.
        Change("CREATE FUNCTION pggit.f() RETURNS event_trigger LANGUAGE plpgsql AS $$"
               " BEGIN END $$; CREATE EVENT TRIGGER pggit_ddl ON ddl_command_end"
               " EXECUTE FUNCTION pggit.f();", at(3),
               objects=[("CREATE", "FUNCTION", "pggit", "16001")]),
    ])
    found = {f.detail["kind"]: f for f in only(run(source, pg_admin_dsn), "unsupported-kind")}
    assert set(found) == {"AGGREGATE", "TYPE (base or shell)", "TEXT SEARCH CONFIGURATION"}
    assert found["AGGREGATE"].detail["names"] == ["my_sum"]
    assert found["TEXT SEARCH CONFIGURATION"].history_ids == [2]


def test_history_rows_without_objects_row(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [created("t", 1), created("u", 2), created("w", 3)])
    with psycopg.connect(source) as conn:
        conn.execute("ALTER TABLE pggit.history DROP CONSTRAINT history_object_id_fkey")
        conn.execute("DELETE FROM pggit.objects WHERE object_name IN ('u', 'w')")
    finding = one(run(source, pg_admin_dsn), "missing-object-row")
    assert finding.history_ids == [2, 3]


def test_large_and_too_large_sql(
    make_database: MakeDb, pg_admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thresholds scaled down: sqlparse needs seconds per real megabyte.
    monkeypatch.setattr(check_module, "LARGE_SQL_BYTES", 200)
    padding = "-- " + "x" * 300 + "\n"
    source = make_source(make_database(), [
        created("t", 1),
        Change(padding + "CREATE TABLE u (id int)", at(2),
               objects=[("CREATE", "TABLE", "public", "u")]),
        Change(padding * 4 + "CREATE TABLE w (id int)", at(3),
               objects=[("CREATE", "TABLE", "public", "w")]),
    ])
    report = run(source, pg_admin_dsn, max_sql_bytes=1000)
    large = one(report, "large-sql")
    assert large.history_ids == [2]
    assert large.detail["bytes"] > 300
    too_large = one(report, "too-large-sql")
    assert too_large.history_ids == [3]
    assert too_large.detail["limit"] == 1000


def test_shadow_unavailable(make_database: MakeDb) -> None:
    source = make_source(make_database(), [
        Change("CREATE EXTENSION ltree", at(1), objects=[("CREATE", "FUNCTION", "public", "1")]),
    ])
    report = check_history(source, shadow_dsn="host=/nonexistent/socket/dir dbname=x")
    finding = one(report, "shadow-unavailable")
    assert finding.history_ids == [1]
    assert finding.detail["extensions"] == ["ltree"]


def test_output_formats(make_database: MakeDb, pg_admin_dsn: str) -> None:
    source = make_source(make_database(), [
        Change(None, at(1), objects=[
            ("CREATE", "TABLE", "public", "a"), ("CREATE", "TABLE", "public", "b"),
            ("CREATE", "TABLE", "public", "c"),
        ]),
        created("d", 2),
        Change(None, at(3), objects=[("CREATE", "TABLE", "public", "e")]),
        Change("ALTER TABLE legacy ADD x int", at(4),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
    ])
    report = run(source, pg_admin_dsn)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["clean"] is False
    assert data["counts"]["error"] == 2
    assert {f["code"] for f in data["findings"]} == {"missing-sql", "missing-create"}
    text = report.format_text()
    assert "error: missing-sql (1)" in text
    assert "[history ids 1-3, 5]" in text
    assert "[history ids 6]" in text
    assert text.splitlines()[-1].startswith("Summary: not clean: 2 error(s), 0 warning(s)")
    # Findings come errors first.
    assert [f.severity for f in report.findings] == sorted(
        (f.severity for f in report.findings), key=("error", "warning", "info").index
    )


def test_check_needs_only_select(make_database: MakeDb, pg_admin_dsn: str) -> None:
    """Run the check as a role that can only read pggit: it must never need to write."""
    source = make_source(make_database(), [
        created("t", 1),
        Change("CREATE EXTENSION IF NOT EXISTS plpgsql; ALTER TABLE t ADD x int", at(2),
               objects=[("ALTER", "TABLE", "public", "t")]),
        Change("ALTER TABLE legacy ADD x int", at(3),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
    ])
    role = f"reader_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pggit TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO {}").format(
            sql.Identifier(role)))
        before = _writes(conn)
    try:
        params = psycopg.conninfo.conninfo_to_dict(source)
        params.update(user=role, password=password)
        reader_dsn = psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
        report = run(reader_dsn, pg_admin_dsn)
        assert one(report, "missing-create").detail["name"] == "legacy"
        assert report.history_rows == 3
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            after = _writes(conn)
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert after == before


def _writes(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    """Rows written to pggit tables so far, as this backend's statistics see them."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        " WHERE schemaname = 'pggit' ORDER BY relname"
    ).fetchall()


def test_check_prints_the_plan_for_what_the_history_never_created(
    make_database: Callable[[], str],
) -> None:
    # A table older than pgGit, with a column a later row adds, and a trigger no text creates:
    # check says where the export will put them, as information (the run stays clean).
    from history import cli

    live = ("CREATE TABLE legacy (id int, note text);\n"
            "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN RETURN NEW; END';\n"
            "CREATE TRIGGER legacy_stamp BEFORE UPDATE ON legacy FOR EACH ROW "
            "EXECUTE FUNCTION stamp();\n")
    source = make_source(make_database(), [
        Change("ALTER TABLE legacy ADD COLUMN note text;", at(2),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
        Change("CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS "
               "'BEGIN RETURN NEW; END';", at(3),
               objects=[("CREATE", "FUNCTION", "public", "stamp")]),
    ], live_sql=live)

    result = cli("check", source)

    assert result.returncode == 0, result.stdout + result.stderr
    # The export's baseline holds the table: its ALTER without a CREATE is no error now.
    assert "missing-create" not in result.stdout
    assert "info: pre-history (1)" in result.stdout
    assert ("  - 1 table exist in the live database and no history row creates them "
            "(v1 records every CREATE TABLE, VIEW and FUNCTION): the export starts with them, "
            "as 'Baseline from the live database', without 1 parts that later rows add"
            ) in result.stdout
    assert ("trigger legacy_stamp on public.legacy: no history text creates it (v1 never "
            "records CREATE TRIGGER); the export creates it as soon as the table and "
            "public.stamp exist") in result.stdout
    report = json.loads(cli("check", "--json", source).stdout)
    planned = next(f for f in report["findings"] if f["code"] == "pre-history")
    assert planned["detail"]["objects"] == ["table public.legacy"]
    assert planned["detail"]["left_out"] == ["column public.legacy.note (added by history id 1)"]


def test_dry_replay_gives_the_export_verdict(
    make_database: MakeDb, pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        created("t", 1),
        # Nothing in the text says it fails: only running it does (t has no column nope).
        Change("CREATE VIEW v AS SELECT nope FROM t", at(2),
               objects=[("CREATE", "VIEW", "public", "v")]),
        Change("ALTER TABLE t ADD COLUMN x int", at(3), objects=[("ALTER", "TABLE", "public", "t")]),
    ])
    static = run(source, pg_admin_dsn)
    assert static.clean and not static.replayed
    replayed = run(source, pg_admin_dsn, replay=True)
    assert replayed.replayed and not replayed.clean
    failed = one(replayed, "replay-failed")
    assert failed.history_ids == [2] and 'column "nope" does not exist' in failed.message
    assert "the export would exit 1" in replayed.format_text()
    command = cli("check", source, "--shadow-dsn", pg_admin_dsn, "--replay")
    assert command.returncode == 1 and command.stdout == replayed.format_text() + "\n"
    assert cli("check", source, "--shadow-dsn", pg_admin_dsn).returncode == 0
    export = export_history(source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert not export.clean and [f.history_ids for f in export.failed] == [[2]]

    fixed = make_source(make_database(), [created("t", 1), Change(
        "CREATE VIEW v AS SELECT id FROM t", at(2), objects=[("CREATE", "VIEW", "public", "v")])])
    assert run(fixed, pg_admin_dsn, replay=True).clean
