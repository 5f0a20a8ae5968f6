"""The fixtures keep their promises: the demo dump loads, its pgGit v1 history has the shapes
real histories have and replays to the schema it describes, and the capture triggers
(fixtures/v1_capture.sql) record what pgGit v1 records and nothing else."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from conftest import FIXTURES, run_sql_file

DEMO = FIXTURES / "demo_history.sql"

Row = tuple[Any, ...]


@pytest.fixture
def demo_dsn(make_database: Callable[[], str]) -> str:
    """A fresh database loaded from fixtures/demo_history.sql."""
    dsn = make_database()
    run_sql_file(dsn, DEMO)
    return dsn


@pytest.fixture
def capture_dsn(make_database: Callable[[], str]) -> str:
    """A fresh database with the pgGit v1 tables and the capture triggers installed."""
    dsn = make_database()
    run_sql_file(dsn, FIXTURES / "pggit_v1_schema.sql")
    run_sql_file(dsn, FIXTURES / "v1_capture.sql")
    return dsn


def _changesets(conn: psycopg.Connection[Row]) -> list[tuple[str, object, object, int]]:
    """Consecutive history rows sharing text, time and author: (text, at, by, row count)."""
    groups: list[tuple[str, object, object, int]] = []
    rows = conn.execute(
        "SELECT sql_executed, created_at, created_by FROM pggit.history ORDER BY id"
    ).fetchall()
    for text, at, by in rows:
        if groups and groups[-1][:3] == (text, at, by):
            groups[-1] = (str(text), at, by, groups[-1][3] + 1)
        else:
            groups.append((str(text), at, by, 1))
    return groups


# --- (a) the dump loads -------------------------------------------------------------------


def test_demo_history_loads_without_event_triggers(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone() == (0,)
        history = conn.execute("SELECT count(*) FROM pggit.history").fetchone()
        assert history is not None and history[0] > 100
        # Application data and sequences came along.
        assert conn.execute("SELECT count(*) FROM public.products").fetchone() == (5,)
        assert conn.execute("SELECT nextval('billing.invoice_number_seq')").fetchone() == (1002,)


def test_demo_history_text_is_plain_sql() -> None:
    text = DEMO.read_text(encoding="utf-8")
    assert "FROM stdin" not in text
    assert "transaction_timeout" not in text
    assert not any(line.startswith("\\") for line in text.splitlines())


# --- (b) the history has the promised shapes -----------------------------------------------


def test_first_row_is_pggit_install(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        first = conn.execute(
            "SELECT o.object_type::text, o.schema_name, h.change_type::text"
            " FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id"
            " ORDER BY h.id LIMIT 1"
        ).fetchone()
    assert first == ("FUNCTION", "pggit", "CREATE")


def test_batches_write_several_rows_with_one_text_time_and_author(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        biggest = max(count for *_, count in _changesets(conn))
        # CREATE TABLE with an inline key yields TABLE and INDEX rows sharing the text.
        kinds = conn.execute(
            "SELECT array_agg(DISTINCT o.object_type::text ORDER BY o.object_type::text)"
            " FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id"
            " WHERE h.sql_executed LIKE 'CREATE TYPE order_status%%'"
        ).fetchone()
    assert biggest >= 5
    assert kinds == (["INDEX", "TABLE"],)


def test_psql_f_rows_are_single_statements_seconds_apart(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        groups = _changesets(conn)
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(groups)
        if a[2] == b[2]
        and 0 < (b[1] - a[1]).total_seconds() <= 10  # type: ignore[operator]
        and a[0].strip().count(";") == 1
        and b[0].strip().count(";") == 1
    ]
    assert len(pairs) >= 3
    # The same statement text recurs in different transactions.
    texts = [text for text, *_ in groups]
    assert texts.count("DROP VIEW reporting.daily_sales;") == 2


def test_history_has_several_authors_and_a_date_range(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        authors = {row[0] for row in conn.execute("SELECT DISTINCT created_by FROM pggit.history")}
        span = conn.execute("SELECT min(created_at), max(created_at) FROM pggit.history").fetchone()
    assert {"alice", "bob", "carol"} <= authors
    assert span is not None
    assert span[0].year == 2023 and span[1].year == 2024


def test_texts_mix_dml_transaction_control_and_function_calls(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        texts = [text for text, *_ in _changesets(conn)]
    assert any("INSERT INTO" in t and "CREATE TABLE" in t for t in texts)
    assert any("UPDATE customers" in t for t in texts)
    assert any(t.startswith("BEGIN;") and t.rstrip().endswith("COMMIT;") for t in texts)
    assert any(t.startswith("DO $$") for t in texts)
    assert any("SELECT audit.enable_audit(" in t for t in texts)
    # Untracked commands only reach the history inside a batch with a tracked one.
    assert any(t.startswith("CREATE MATERIALIZED VIEW") for t in texts)
    assert any("RENAME COLUMN" in t for t in texts)


def test_objects_dropped_and_created_again(demo_dsn: str) -> None:
    with psycopg.connect(demo_dsn) as conn:
        recreated = {
            (str(kind), str(name))
            for kind, name in conn.execute(
                "SELECT o.object_type, o.full_name"
                " FROM pggit.history d"
                " JOIN pggit.history c ON c.object_id = d.object_id AND c.id > d.id"
                " JOIN pggit.objects o ON o.id = d.object_id"
                " WHERE d.change_type = 'DROP' AND c.change_type = 'CREATE'"
            )
        }
    assert ("VIEW", "reporting.daily_sales") in recreated
    assert ("TABLE", "public.saved_items") in recreated


_FINGERPRINT = """
SELECT 'rel', format('%s.%s %s', n.nspname, c.relname, c.relkind)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'billing', 'audit', 'reporting') AND c.relkind <> 'S'
UNION ALL
SELECT 'col', format('%s %s %s %s %s %s', a.attrelid::regclass, a.attname,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname IN ('public', 'billing', 'audit', 'reporting') AND a.attnum > 0
  AND NOT a.attisdropped
UNION ALL
SELECT 'con', format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', 'billing', 'audit')
UNION ALL
SELECT 'idx', indexdef FROM pg_indexes
WHERE schemaname IN ('public', 'billing', 'audit', 'reporting')
UNION ALL
SELECT 'fn', pg_get_functiondef(p.oid) FROM pg_proc p
WHERE p.pronamespace::regnamespace::text IN ('public', 'billing', 'audit', 'reporting')
  AND p.prokind <> 'a'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'view', format('%s %s', c.oid::regclass, pg_get_viewdef(c.oid))
FROM pg_class c WHERE c.relkind IN ('v', 'm')
  AND c.relnamespace::regnamespace::text IN ('public', 'reporting')
UNION ALL
SELECT 'trg', pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'type', format('%s %s', t.oid::regtype, t.typtype) FROM pg_type t
WHERE t.typnamespace::regnamespace::text IN ('public', 'billing', 'audit')
  AND t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND t.typrelid IN (
      SELECT oid FROM pg_class WHERE relkind = 'c'))
UNION ALL
SELECT 'enum', format('%s %s', enumtypid::regtype, enumlabel) FROM pg_enum
UNION ALL
SELECT 'comment', format('%s %s %s', classoid, objsubid, description) FROM pg_description
WHERE objoid >= 16384
"""


def _fingerprint(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return sorted((str(kind), str(text)) for kind, text in conn.execute(_FINGERPRINT))


def test_demo_history_replays_to_the_dumped_schema(
    demo_dsn: str, make_database: Callable[[], str]
) -> None:
    """Running each changeset's text once, in order, rebuilds the application schema."""
    with psycopg.connect(demo_dsn) as conn:
        groups = _changesets(conn)
    replay = make_database()
    with psycopg.connect(replay, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pggit")  # for the install row, pgGit's own function
        for text, *_ in groups:
            conn.execute(text.encode())
    source = [row for row in _fingerprint(demo_dsn) if "pggit" not in row[1]]
    rebuilt = [row for row in _fingerprint(replay) if "pggit" not in row[1]]
    assert rebuilt == source


# --- (c) the capture triggers behave like v1 ------------------------------------------------


def _rows_after(conn: psycopg.Connection[Row], after: int) -> list[Row]:
    return conn.execute(
        "SELECT h.change_type::text, o.object_type::text, o.full_name, h.sql_executed,"
        "       h.created_at, h.created_by"
        " FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id"
        " WHERE h.id > %s ORDER BY h.id",
        (after,),
    ).fetchall()


def _last_id(conn: psycopg.Connection[Row]) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM pggit.history").fetchone()
    assert row is not None
    return int(row[0])


def test_install_writes_one_row(capture_dsn: str) -> None:
    with psycopg.connect(capture_dsn) as conn:
        rows = _rows_after(conn, 0)
    assert [(r[0], r[1], str(r[2]).split(".")[0]) for r in rows] == [
        ("CREATE", "FUNCTION", "pggit")
    ]


def test_batch_of_two_tables_shares_text_and_time(capture_dsn: str) -> None:
    batch = (
        "CREATE TABLE a (id int PRIMARY KEY, code text UNIQUE);"
        " CREATE TABLE b (id serial PRIMARY KEY, a_id int REFERENCES a);"
    )
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        start = _last_id(conn)
        conn.execute(batch.encode())
        rows = _rows_after(conn, start)
    assert [r[:3] for r in rows] == [
        ("CREATE", "TABLE", "public.a"),
        ("CREATE", "INDEX", "public.a_pkey"),
        ("CREATE", "INDEX", "public.a_code_key"),
        ("CREATE", "TABLE", "public.b"),
        ("CREATE", "INDEX", "public.b_pkey"),
        ("ALTER", "TABLE", "public.b"),  # the inline REFERENCES
    ]
    assert {r[3:] for r in rows} == {(batch, rows[0][4], "postgres")}


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TYPE mood AS ENUM ('ok')",
        "ALTER TABLE t RENAME COLUMN x TO y",
        "CREATE SEQUENCE s",
        "CREATE SCHEMA s",
        "COMMENT ON TABLE t IS 'hello'",
        "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one",
        "CREATE TABLE t2 AS SELECT 1 AS one",
        "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
        "DROP FUNCTION f()",
    ],
)
def test_untracked_commands_write_no_row(capture_dsn: str, statement: str) -> None:
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        start = _last_id(conn)
        conn.execute(statement.encode())
        assert _rows_after(conn, start) == []


def test_add_primary_key_records_the_table_but_not_its_index(capture_dsn: str) -> None:
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        start = _last_id(conn)
        conn.execute("ALTER TABLE t ADD PRIMARY KEY (x)")
        rows = _rows_after(conn, start)
    assert [r[:3] for r in rows] == [("ALTER", "TABLE", "public.t")]


def test_drop_table_writes_rows_for_table_and_indexes(capture_dsn: str) -> None:
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, code text UNIQUE)")
        start = _last_id(conn)
        conn.execute("DROP TABLE t")
        rows = _rows_after(conn, start)
        active = conn.execute(
            "SELECT full_name, is_active FROM pggit.objects"
            " WHERE object_type IN ('TABLE', 'INDEX') ORDER BY id"
        ).fetchall()
    assert sorted(r[:3] for r in rows) == [
        ("DROP", "INDEX", "public.t_code_key"),
        ("DROP", "INDEX", "public.t_pkey"),
        ("DROP", "TABLE", "public.t"),
    ]
    assert all(not is_active for _, is_active in active)


def test_functions_are_named_by_oid_and_renames_leave_the_old_name(capture_dsn: str) -> None:
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        oid = conn.execute("SELECT 'f'::regproc::oid").fetchone()
        conn.execute("CREATE TABLE old_name (x int)")
        conn.execute("ALTER TABLE old_name RENAME TO new_name")
        objects: dict[str, bool] = dict(
            conn.execute(
                "SELECT full_name, is_active FROM pggit.objects"
                " WHERE object_type IN ('FUNCTION', 'TABLE')"
            ).fetchall()
        )
        last = _rows_after(conn, _last_id(conn) - 1)
    assert oid is not None and objects[f"public.{oid[0]}"] is True
    assert objects["public.old_name"] is True and objects["public.new_name"] is True
    assert last[0][:3] == ("ALTER", "TABLE", "public.new_name")


def test_ddl_inside_a_function_records_the_outer_text(capture_dsn: str) -> None:
    with psycopg.connect(capture_dsn, autocommit=True) as conn:
        start = _last_id(conn)
        conn.execute("DO $$ BEGIN EXECUTE 'CREATE TABLE made_by_do (x int)'; END $$")
        rows = _rows_after(conn, start)
    assert [(r[2], r[3]) for r in rows] == [
        ("public.made_by_do", "DO $$ BEGIN EXECUTE 'CREATE TABLE made_by_do (x int)'; END $$")
    ]
