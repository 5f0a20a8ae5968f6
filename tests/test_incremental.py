"""Incremental rendering: re-rendering only what a change touched gives the full render.

Every export here runs with verify_incremental, which renders the whole shadow
after each changeset and fails on any difference from the incremental snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, git, make_source

from pggit_export import ExportOptions, export_history
from pggit_export.demo import demo_history_sql

# Each step touches objects in a way that changes OTHER files too, or renames files.
AWKWARD = [
    "CREATE SCHEMA app; CREATE TABLE app.customers (id int PRIMARY KEY, name text);",
    "CREATE TABLE app.orders (id serial PRIMARY KEY, customer_id int REFERENCES app.customers(id),"
    " total numeric CHECK (total >= 0));",
    "CREATE VIEW app.big_orders AS SELECT id, total FROM app.orders WHERE total > 100;",
    "CREATE VIEW app.big_order_ids AS SELECT id FROM app.big_orders;",
    "ALTER TABLE app.orders RENAME COLUMN total TO amount;",  # view text changes
    "ALTER TABLE app.customers RENAME TO clients;",  # FK in orders changes, old file goes
    "CREATE INDEX orders_amount ON app.orders (amount);",
    "DROP INDEX app.orders_amount;",  # the index's table must be found after the drop
    "ALTER TABLE app.orders DROP CONSTRAINT orders_total_check;",
    "COMMENT ON COLUMN app.orders.amount IS 'in cents';",
    "CREATE TYPE app.mood AS ENUM ('ok'); CREATE TABLE app.moods (m app.mood);",
    "ALTER TYPE app.mood ADD VALUE 'great';",
    "ALTER TYPE app.mood RENAME TO feeling;",  # the table using it changes
    "CREATE FUNCTION app.f(int) RETURNS int LANGUAGE sql AS 'SELECT 1';"
    " CREATE FUNCTION app.f(text) RETURNS int LANGUAGE sql AS 'SELECT 2';",
    "DROP FUNCTION app.f(text);",  # the file keeps the other overload
    "CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RETURN NEW; END $$;"
    " CREATE TRIGGER t BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();",
    "ALTER FUNCTION app.touch() RENAME TO touch_row;",  # the trigger text in orders changes
    "CREATE SEQUENCE app.seq; ALTER SEQUENCE app.seq OWNED BY app.orders.id;",  # file moves
    "ALTER SEQUENCE app.seq OWNED BY NONE;",  # and back
    "CREATE DOMAIN app.pos AS int CONSTRAINT pos_check CHECK (VALUE > 0);",
    "ALTER DOMAIN app.pos DROP CONSTRAINT pos_check;",
    "CREATE TABLE app.events (at date, v int) PARTITION BY RANGE (at);"
    " CREATE TABLE app.events_2024 PARTITION OF app.events"
    " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');",
    "ALTER TABLE app.events DETACH PARTITION app.events_2024;",
    "ALTER TABLE app.events ATTACH PARTITION app.events_2024"
    " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');",
    "CREATE MATERIALIZED VIEW app.totals AS SELECT sum(amount) AS s FROM app.orders;"
    " CREATE INDEX totals_s ON app.totals (s);",
    "ALTER TABLE app.orders ALTER COLUMN id DROP DEFAULT; DROP SEQUENCE app.orders_id_seq;",
    "CREATE TABLE public.\"Notes\" (id int); CREATE TABLE public.notes (id int);",  # case clash
    "DROP TABLE public.\"Notes\";",  # and its end: the other file's name changes back
    "CREATE FUNCTION public.clients() RETURNS int LANGUAGE sql AS 'SELECT 1';",  # kind clash
    "ALTER TABLE app.clients SET SCHEMA public;",  # moves into the clash
    "ALTER SCHEMA app RENAME TO shop;",  # every file of the schema moves
    "CREATE EXTENSION citext WITH SCHEMA shop;",
    "DROP EXTENSION citext;",
    "DROP SCHEMA shop CASCADE;",
]


def test_awkward_changes_render_incrementally_like_a_full_render(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    changes = [Change(sql, at(1 + i // 12, i % 12)) for i, sql in enumerate(AWKWARD)]
    source = make_source(make_database(), changes)
    report = export_history(
        source, tmp_path / "repo",
        ExportOptions(shadow_dsn=pg_admin_dsn, verify_incremental=True),
    )
    assert report.incremental and report.clean, [f.error for f in report.failed]
    # verify_incremental proves the overlapped path: takes ran beside replays.
    assert report.pipeline.beside > len(AWKWARD) // 2, report.pipeline
    full = export_history(
        source, tmp_path / "full", ExportOptions(shadow_dsn=pg_admin_dsn, incremental=False),
    )
    assert not full.incremental
    assert report.head == full.head
    # Without the check after each changeset, rendering finishes while the next replays.
    plain = export_history(source, tmp_path / "plain", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert plain.incremental and plain.head == full.head
    git(tmp_path / "repo", "fsck", "--strict")


def test_demo_renders_incrementally_like_a_full_render(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_database()
    with psycopg.connect(source) as conn:
        conn.execute(demo_history_sql())  # type: ignore[arg-type]
    report = export_history(
        source, tmp_path / "repo",
        ExportOptions(shadow_dsn=pg_admin_dsn, verify_incremental=True),
    )
    assert report.incremental and report.commits_written == 58


@pytest.mark.parametrize("incremental", [True, False])
def test_history_that_drops_the_tracker_still_exports(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path, incremental: bool
) -> None:
    # Hostile history: it tries to remove the shadow's change tracker. It replays as a
    # role that does not own the tracker, so it fails, and the export goes on correctly.
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1)),
        Change("DROP EVENT TRIGGER IF EXISTS _pggit_export_ddl_command_end;", at(2)),
        Change("CREATE TABLE b (id int);", at(3)),
    ])
    report = export_history(
        source, tmp_path / "repo",
        ExportOptions(shadow_dsn=pg_admin_dsn, incremental=incremental, verify_incremental=True),
    )
    if incremental:
        [failed] = report.failed
        assert failed.history_ids == [2] and "must be owner of event trigger" in (failed.error or "")
    else:
        assert report.clean  # IF EXISTS: there is no tracker to drop
    assert git(tmp_path / "repo", "ls-tree", "-r", "--name-only", "main").split() == [
        "public/_schema.sql", "public/a.sql", "public/b.sql",
    ]


def test_history_may_not_call_or_drop_the_render_function(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # The take statement renders through _pggit_export.render_keys, run by the tool's
    # own user: the replayed history may neither run it nor remove it.
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1)),
        Change("SELECT * FROM _pggit_export.render_keys('{table}', '{public}', '{a}');", at(2)),
        Change("DROP FUNCTION _pggit_export.render_keys(text[], text[], text[]);", at(3)),
        Change("CREATE TABLE b (id int);", at(4)),
    ])
    report = export_history(
        source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn, verify_incremental=True),
    )
    assert report.incremental
    assert [f.history_ids for f in report.failed] == [[2], [3]]
    assert "permission denied for function render_keys" in (report.failed[0].error or "")
    assert "must be owner of function" in (report.failed[1].error or "")
    assert git(tmp_path / "repo", "ls-tree", "-r", "--name-only", "main").split() == [
        "public/_schema.sql", "public/a.sql", "public/b.sql",
    ]


# Consecutive changes to the same relations, under views: the shape that makes the
# take of one changeset, which runs beside the next one's replay, wait for a lock
# the next one holds. Some of these the exporter foresees from the texts and takes
# first (ALTER of a table the previous text names, a view replaced after an ALTER);
# the others end in a LockConflict, are rolled back and replayed after the take.
LOCKING = [
    "CREATE TABLE a (id int PRIMARY KEY, x text DEFAULT 'x');"
    " CREATE TABLE b (id int PRIMARY KEY, y text);",
    "CREATE VIEW ab AS SELECT a.id, a.x, b.y FROM a JOIN b USING (id);",
    "ALTER TABLE a ADD COLUMN z int DEFAULT 1;",  # foreseen: a is named just before
    "ALTER TABLE a ALTER COLUMN z SET DEFAULT 2;",
    "ALTER TABLE b ADD COLUMN w int;",  # not foreseen: the view over a and b renders
    "CREATE OR REPLACE VIEW ab AS SELECT a.id, a.x, b.y, a.z FROM a JOIN b USING (id);",
    "ALTER TABLE b RENAME COLUMN y TO yy;",  # the view's text changes
    "ALTER TABLE a RENAME COLUMN x TO xx;",
    "ALTER TABLE b ADD COLUMN v int;",
    "DROP VIEW ab;",
    "ALTER TABLE a DROP COLUMN z;",
]


def test_takes_beside_the_next_replay_give_the_full_render(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(
        make_database(), [Change(sql, at(1, 1 + i)) for i, sql in enumerate(LOCKING)]
    )
    plain = export_history(source, tmp_path / "plain", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert plain.incremental and plain.clean, [f.error for f in plain.failed]
    conflicts = plain.pipeline.conflicts
    assert conflicts and all("lock timeout" in c for c in conflicts), conflicts
    assert plain.pipeline.foreseen and plain.pipeline.beside
    full = export_history(
        source, tmp_path / "full", ExportOptions(shadow_dsn=pg_admin_dsn, incremental=False)
    )
    assert plain.head == full.head and plain.commits_written == len(LOCKING)
    assert "b.yy" in git(tmp_path / "plain", "show", "main~2:public/ab.sql")
    git(tmp_path / "plain", "fsck", "--strict")


def test_a_changeset_repaired_into_nothing_commits_after_the_one_before_it(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # The view's take runs beside the next changeset's replay. That changeset fails (its
    # table existed only before the history, and is gone), its one statement is skipped
    # by a repair, and it renders although it replays nothing: its render must come after
    # the view's, or the view lands in its commit and the view's own commit is empty.
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int, closed_at date)", at(1, 1)),
        Change("CREATE VIEW v AS SELECT id FROM t", at(1, 2),
               objects=[("CREATE", "VIEW", "public", "v")]),
        Change("CREATE INDEX archive_closed_at_idx ON archive (closed_at)", at(1, 3),
               objects=[("CREATE", "INDEX", "public", "archive_closed_at_idx")]),
        Change("DROP TABLE archive", at(1, 4), objects=[("DROP", "TABLE", "public", "archive")]),
    ], live_sql="CREATE TABLE t (id int, closed_at date); CREATE VIEW v AS SELECT id FROM t;")
    report = export_history(source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.pipeline.beside, "the view's take should run beside the next replay"
    assert [r for r in report.repairs if "archive" in r.reason and "skipped" in r.reason]
    shown = git(tmp_path / "repo", "log", "--format=%s", "--name-only", "--reverse")
    assert "Create view public.v\n\npublic/v.sql" in shown, shown
    full = export_history(
        source, tmp_path / "full", ExportOptions(shadow_dsn=pg_admin_dsn, incremental=False)
    )
    assert report.head == full.head
