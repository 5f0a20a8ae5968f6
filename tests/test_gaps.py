"""Filling the gaps of a v1 history: a baseline dump, the live catalog, roles."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
from history import Change, at, git, make_source

from pggit_export import ExportOptions, export_history
from pggit_export.shadow.server import find_binaries

LEGACY = (
    "CREATE TYPE public.mood AS ENUM ('ok', 'great');\n"
    "CREATE TABLE public.legacy (id int PRIMARY KEY, feeling public.mood);\n"
)


def test_baseline_dump_becomes_the_root_commit(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # The objects predate pgGit: the history only ever alters them.
    before = make_database()
    with psycopg.connect(before) as conn:
        conn.execute(LEGACY)  # type: ignore[arg-type]
    dump = tmp_path / "base.sql"
    pg_dump = find_binaries().bindir / "pg_dump"
    subprocess.run([str(pg_dump), "--schema-only", "-f", str(dump), "-d", before], check=True)
    assert "SET " in dump.read_text() and "OWNER TO" in dump.read_text()  # a real dump
    history = [
        Change("ALTER TABLE legacy ADD COLUMN note text;", at(2),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
        Change("ALTER TYPE mood ADD VALUE 'meh'; CREATE TABLE t (m mood);", at(3)),
    ]
    source = make_source(make_database(), history, live_sql=LEGACY)
    options = ExportOptions(shadow_dsn=pg_admin_dsn, baseline=dump, repair=False)
    repo = tmp_path / "repo"
    report = export_history(source, repo, options)
    assert report.clean and report.commits_written == 3
    assert report.baseline is not None and report.baseline["failures"] == []
    subjects = git(repo, "log", "--reverse", "--format=%s").splitlines()
    assert subjects[0] == "Baseline from base.sql"
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert "public/legacy.sql" in git(repo, "ls-tree", "-r", "--name-only", root)
    assert "Pggit-Baseline: base.sql sha256:" in git(repo, "log", "-1", "--format=%B", root)
    assert "note text" in git(repo, "show", "main:public/legacy.sql")
    # Deterministic, and a rerun continues without loading the baseline twice.
    again = export_history(source, tmp_path / "again", options)
    assert again.head == report.head
    rerun = export_history(source, repo, options)
    assert rerun.commits_written == 0 and any("--baseline ignored" in w for w in rerun.warnings)
    git(repo, "fsck", "--strict")


def test_objects_never_created_in_history_come_from_the_live_database(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("ALTER TABLE legacy ADD COLUMN note text;\n"
               "COMMENT ON COLUMN legacy.id IS 'the key';", at(2),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
        Change("SET ROLE app_owner; CREATE TABLE owned (id int);", at(3)),
    ], live_sql=LEGACY + "ALTER TABLE public.legacy ADD COLUMN note text;\n"
                         "COMMENT ON COLUMN public.legacy.id IS 'the key';")
    repo = tmp_path / "repo"
    report = export_history(source, repo, ExportOptions())  # the private shadow
    assert report.clean, [f.error for f in report.failed]
    descriptions = [r.reason for r in report.repairs]
    # v1 records every CREATE TABLE: a live table no row creates predates the history, so
    # it is the root commit's, without the column the first changeset adds (it then adds
    # it, as it did in the source), with the type it needs.
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    body = git(repo, "log", "-1", "--format=%B", root)
    assert body.startswith("Baseline from the live database\n")
    assert "  table public.legacy\n" in body
    assert "  column public.legacy.note (added by history id 1)\n" in body
    assert "  created type public.mood from the live database" in body
    assert "Pggit-Baseline: live database" in body
    assert "  comment on column public.legacy.id (added by history id 1)\n" in body
    assert "note" not in git(repo, "show", f"{root}:public/legacy.sql")
    assert "the key" not in git(repo, "show", f"{root}:public/legacy.sql")
    assert "the key" in git(repo, "show", "main:public/legacy.sql")
    assert report.baseline is not None and report.baseline["failures"] == []
    assert not any("conditional" in d for d in descriptions)
    assert any("created role app_owner" in d for d in descriptions)
    assert "note text" in git(repo, "show", "main:public/legacy.sql")
    pure = export_history(source, tmp_path / "pure", ExportOptions(repair=False))
    assert [f.history_ids for f in pure.failed] == [[1], [2]]


def test_no_repair_guesses_names_under_a_search_path_the_changeset_set(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # "relation a already exists" names app.a here (search_path = app), but a repair looks
    # names up under the default search_path and would have dropped public.a.
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1), objects=[("CREATE", "TABLE", "public", "a")]),
        Change("CREATE SCHEMA app;\nSET search_path = app;\nCREATE TABLE a (id int);\n"
               "CREATE TABLE a (id int);", at(2), objects=[("CREATE", "TABLE", "app", "a")]),
    ])
    repo = tmp_path / "repo"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert [f.history_ids for f in report.failed] == [[2]]
    assert report.repairs == []
    assert "public/a.sql" in git(repo, "ls-tree", "-r", "--name-only", "main").split()


# One function in two signatures, and a trigger function, for the tests of what v1 never
# records about functions and triggers.
OLD_TOTAL = "CREATE FUNCTION total(p_id int) RETURNS int LANGUAGE sql AS 'SELECT p_id';"
NEW_TOTAL = ("CREATE FUNCTION total(p_id int, p_tax numeric) RETURNS numeric LANGUAGE sql "
             "AS 'SELECT p_id * p_tax';")
TOUCH = "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"

# A table, the trigger function, an index, and the column change a trigger on it blocks:
# what the blocking-trigger tests share (their triggers are unrecorded, in the live SQL).
_TRIGGERED_COLUMN_CHANGE = [
    Change("CREATE TABLE t (id int, status text);", at(1),
           objects=[("CREATE", "TABLE", "public", "t")]),
    Change(TOUCH, at(2), objects=[("CREATE", "FUNCTION", "public", "touch")]),
    Change("CREATE INDEX t_id ON t (id);", at(3), objects=[("CREATE", "INDEX", "public", "t_id")]),
    Change("ALTER TABLE t ALTER COLUMN status TYPE varchar(20);", at(4),
           objects=[("ALTER", "TABLE", "public", "t")]),
]


FUTURE_LIVE = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ecstatic');\n"
    "CREATE TABLE person (name text, current_mood mood, note text);\n"
)


def test_a_repair_does_not_bring_in_what_the_history_adds_later(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # CREATE TYPE and the first CREATE TABLE were never recorded (sent alone); the history
    # later adds a label and a column, which the live database also has. The repair at day 2
    # must build both from the live catalog *without* them, or days 2 and 3 show the future
    # and day 4's ALTERs fail as "already exists".
    from history import cli

    source = make_source(make_database(), [
        Change("CREATE INDEX person_name ON person (name);", at(2),
               objects=[("CREATE", "INDEX", "public", "person_name")]),
        Change("CREATE TABLE diary (day date, felt mood);", at(3),
               objects=[("CREATE", "TABLE", "public", "diary")]),
        Change("ALTER TYPE mood ADD VALUE 'ecstatic';\nALTER TABLE person ADD COLUMN note text;",
               at(4), objects=[("ALTER", "TABLE", "public", "person")]),
    ], live_sql=FUTURE_LIVE + "CREATE INDEX person_name ON person (name);\n"
                              "CREATE TABLE diary (day date, felt mood);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout
    day2, day4 = "main~2", "main"
    assert "note" not in git(repo, "show", f"{day2}:public/person.sql")
    assert "ecstatic" not in git(repo, "show", f"{day2}:public/mood.sql")
    assert "'happy'" in git(repo, "show", f"{day2}:public/mood.sql")
    assert "note text" in git(repo, "show", f"{day4}:public/person.sql")
    assert "'ecstatic'" in git(repo, "show", f"{day4}:public/mood.sql")
    # person predates the history (no row creates it): the root commit has it, without
    # what later rows add, and names each row; the type comes with it, on the same terms.
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert git(repo, "rev-parse", f"{day2}~1").strip() == root
    repaired = git(repo, "log", "--format=%B", "-1", root)
    assert "ecstatic (added by history id 3)" in repaired
    assert "column public.person.note (added by history id 3)" in repaired
    assert "index person_name on public.person (added by history id 1)" in repaired


def _source_with_recorded_oids(dsn: str, *, recorded_oids_true: bool) -> str:
    """A source whose history rows record real OIDs, as v1 does: the live objects are
    created in history order in this very database, never dumped and restored."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE status AS ENUM ('todo', 'doing')")  # never recorded
        conn.execute("CREATE TABLE jobs (id int, s status)")  # history id 1
        conn.execute("ALTER TYPE status ADD VALUE 'done'")  # never recorded
        conn.execute("CREATE TABLE archive (id int, s status DEFAULT 'done')")  # history id 2
    make_source(dsn, [
        Change("CREATE TABLE jobs (id int, s status);", at(2),
               objects=[("CREATE", "TABLE", "public", "jobs")]),
        Change("CREATE TABLE archive (id int, s status DEFAULT 'done');", at(3),
               objects=[("CREATE", "TABLE", "public", "archive")]),
    ])
    _record_oids(dsn, {1: "jobs", 2: "archive"}, offset=0 if recorded_oids_true else 1000)
    return dsn


def _record_oids(dsn: str, tables: dict[int, str], offset: int = 0) -> None:
    """Give each history id's row the OID of its live table (plus `offset`: a source that
    was dumped and restored), as v1's new_metadata holds it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for history_id, table in tables.items():
            conn.execute(
                "UPDATE pggit.history SET new_metadata = jsonb_build_object("
                "'oid', %s + %s::regclass::oid::bigint) WHERE id = %s",
                (offset, table, history_id))


def test_oids_date_an_unrecorded_enum_label_after_the_repair_point(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    from history import cli

    source = _source_with_recorded_oids(make_database(), recorded_oids_true=True)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OID chronology: usable: 2 recorded OIDs match the live objects" in result.stdout
    checked = cli("check", source)
    assert "OID chronology (dating live objects no history creates): usable" in checked.stdout
    assert "'done'" not in git(repo, "show", "main~1:public/status.sql")  # history id 1
    assert "'done'" in git(repo, "show", "main:public/status.sql")  # needed by history id 2
    repaired = git(repo, "log", "-1", "--format=%B", "main~1")
    assert "without done (history id 2 names it first, and its OID" in repaired
    assert "dates it after history id 1)" in repaired


def test_oids_that_do_not_match_the_live_objects_are_not_used(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    from history import cli

    source = _source_with_recorded_oids(make_database(), recorded_oids_true=False)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert ("OID chronology: 2 of 2 recorded OIDs differ from the live objects' "
            "(the database was dumped and restored?): not used") in result.stdout
    # Without the OIDs, the texts date 'done': first named by history id 2, a day later.
    assert "'done'" not in git(repo, "show", "main~1:public/status.sql")
    assert "'done'" in git(repo, "show", "main:public/status.sql")
    body = git(repo, "log", "--format=%B", "main~1..main")
    assert "first named by history id 2, a later run of changes" in body
    assert "its OID" not in git(repo, "log", "--format=%B", "main")


def test_a_table_older_than_the_history_loses_what_commented_migrations_change(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # A migration file as projects ship them: a licence header, then the statements. The
    # table predates pgGit; the file drops a constraint the live database no longer has
    # (so nobody knows what it was) and adds a column.
    from history import cli

    migration = ("/* Copyright 2022 Someone\n * Licensed under the Apache License\n */\n"
                 "-- the old check is gone\n"
                 "ALTER TABLE legacy DROP CONSTRAINT legacy_old_check;\n"
                 "-- and a note\nALTER TABLE legacy ADD COLUMN note text;\n")
    source = make_source(make_database(), [
        Change(migration, at(2), objects=[("ALTER", "TABLE", "public", "legacy")]),
    ], live_sql=LEGACY + "ALTER TABLE public.legacy ADD COLUMN note text;")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert "note" not in git(repo, "show", f"{root}:public/legacy.sql")
    assert "column public.legacy.note (added by history id 1)" in git(
        repo, "log", "-1", "--format=%B", root)
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert "Pggit-Repaired: made DROP CONSTRAINT legacy_old_check conditional in statement 1" \
        in body
    assert "note text" in git(repo, "show", "main:public/legacy.sql")
    assert "Pggit-Replay: failed" not in body


def test_a_signature_change_drops_the_old_overload_v1_never_saw_dropped(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Sent one statement per query (psql -f), the migration's DROP FUNCTION left no row
    # (v1 never records one): only the two CREATEs are in the history.
    from history import cli

    old, new = OLD_TOTAL, NEW_TOTAL
    source = make_source(make_database(), [
        Change(old, at(1), objects=[("CREATE", "FUNCTION", "public", "total")]),
        Change(new, at(2), objects=[("CREATE", "FUNCTION", "public", "total")]),
    ], live_sql=new)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "total(p_id integer)" in git(repo, "show", "main~1:public/total.sql")
    head = git(repo, "show", "main:public/total.sql")
    assert "p_tax numeric" in head and "total(p_id integer)" not in head
    assert ("Pggit-Repaired: dropped function public.total(p_id integer) before history id 2 "
            "creates total anew") in git(repo, "log", "-1", "--format=%B", "main")


def test_a_trigger_v1_never_recorded_appears_once_its_table_and_function_exist(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # One statement per query: CREATE TRIGGER (never recorded) ran between the function's
    # CREATE and the index's. A trigger created by a recorded text is the replay's own.
    from history import cli

    table = "CREATE TABLE t (id int, seen timestamptz);"
    function = ("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
                "'BEGIN NEW.seen := now(); RETURN NEW; END';")
    trigger = "CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch();"
    recorded_trigger = ("CREATE TABLE u (id int);\nCREATE TRIGGER u_touch BEFORE UPDATE ON u "
                        "FOR EACH ROW EXECUTE FUNCTION touch();")
    source = make_source(make_database(), [
        Change(table, at(1), objects=[("CREATE", "TABLE", "public", "t")]),
        Change(function, at(2), objects=[("CREATE", "FUNCTION", "public", "touch")]),
        Change("CREATE INDEX t_id ON t (id);", at(3), objects=[("CREATE", "INDEX", "public", "t_id")]),
        Change(recorded_trigger, at(4), objects=[("CREATE", "TABLE", "public", "u")]),
    ], live_sql="\n".join([table, function, trigger, "CREATE INDEX t_id ON t (id);",
                           recorded_trigger]))
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "TRIGGER" not in git(repo, "show", "main~2:public/t.sql")  # right after touch()
    assert "CREATE TRIGGER t_touch BEFORE UPDATE ON public.t" in git(
        repo, "show", "main~1:public/t.sql")
    body = git(repo, "log", "-1", "--format=%B", "main~1")
    assert ("Pggit-Repaired: created trigger t_touch on public.t from the live database as "
            "soon as its table and its function public.touch exist") in body
    log = git(repo, "log", "--format=%B", "main")
    assert "u_touch" not in log.replace(recorded_trigger, "")  # the replay made it, no repair
    assert "CREATE TRIGGER u_touch" in git(repo, "show", "main:public/u.sql")


def _captured(source: str, texts: list[str]) -> tuple[str, list[tuple[int, str]]]:
    """Send each text to `source` under pgGit v1's real capture triggers, each its own
    query (autocommit); the source, and its history's (id, sql_executed) rows."""
    from conftest import FIXTURES, run_sql_file

    run_sql_file(source, FIXTURES / "pggit_v1_schema.sql")
    run_sql_file(source, FIXTURES / "v1_capture.sql")
    with psycopg.connect(source, autocommit=True) as conn:
        for text in texts:
            conn.execute(text)  # type: ignore[arg-type]
        rows = conn.execute("SELECT id, sql_executed FROM pggit.history ORDER BY id").fetchall()
    return source, [(int(row[0]), str(row[1])) for row in rows]


def test_v1_metadata_after_a_statement_repairs_a_rename_it_never_recorded(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Captured by the v1 triggers, one statement per transaction (psql -f): RENAME COLUMN
    # writes no row, but the next ALTER TABLE row's new_metadata lists the columns as they
    # were right after it. The commit of that row must show the rename, not wait for the
    # reconcile at the end.
    from history import cli

    source, rows = _captured(make_database(), ["CREATE TABLE t (a int, note text)",
                                               "ALTER TABLE t RENAME COLUMN a TO id",
                                               "ALTER TABLE t ADD COLUMN seen timestamptz",
                                               "CREATE INDEX t_seen ON t (seen)"])
    add_id = next(i for i, text in rows if "ADD COLUMN" in text)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    commit = git(repo, "log", "--format=%H", "-1", f"--grep=Pggit-History-Ids: {add_id}$",
                 "main").strip()
    text = git(repo, "show", f"{commit}:public/t.sql")
    assert "id integer" in text and "a integer" not in text and "seen timestamp" in text
    assert (f"Pggit-Repaired: renamed column public.t.a to id: v1's metadata of history id "
            f"{add_id} records the table so right after it") in git(
        repo, "log", "-1", "--format=%B", commit)
    pure = tmp_path / "pure"
    assert cli("export", "--no-repair", source, str(pure)).returncode in (0, 1)
    assert "a integer" in git(pure, "show", "main:public/t.sql")


def test_an_old_overload_the_history_drops_later_is_kept_until_then(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Whole files as one query: the old signature is kept for compatibility, and a later
    # migration drops it in a text v1 did record (beside a CREATE INDEX).
    from history import cli

    old, new = OLD_TOTAL, NEW_TOTAL
    source = make_source(make_database(), [
        Change(f"CREATE TABLE t (id int);\n{old}", at(1),
               objects=[("CREATE", "TABLE", "public", "t")]),
        Change(new, at(2), objects=[("CREATE", "FUNCTION", "public", "total")]),
        Change("DROP FUNCTION total(int);\nCREATE INDEX t_id ON t (id);", at(3),
               objects=[("CREATE", "INDEX", "public", "t_id")]),
    ], live_sql=f"CREATE TABLE t (id int);\n{new}\nCREATE INDEX t_id ON t (id);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    kept = git(repo, "show", "main~1:public/total.sql")
    assert "total(p_id integer)" in kept and "p_tax numeric" in kept
    assert "total(p_id integer)" not in git(repo, "show", "main:public/total.sql")
    assert "dropped function" not in git(repo, "log", "--format=%B", "main")


def test_a_trigger_in_the_way_of_a_column_change_is_dropped_and_comes_back(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # One statement per query: the migration dropped the trigger, changed the column and
    # created the trigger again; only the ALTER TABLE left a row.
    from history import cli

    function = TOUCH
    trigger = ("CREATE TRIGGER t_touch BEFORE UPDATE OF status ON t FOR EACH ROW "
               "EXECUTE FUNCTION touch();")
    source = make_source(make_database(), [
        *_TRIGGERED_COLUMN_CHANGE,
        Change("CREATE INDEX t_status ON t (status);", at(5),
               objects=[("CREATE", "INDEX", "public", "t_status")]),
    ], live_sql="\n".join(["CREATE TABLE t (id int, status varchar(20));", function, trigger,
                           "CREATE INDEX t_id ON t (id);", "CREATE INDEX t_status ON t (status);"]))
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "CREATE TRIGGER t_touch" in git(repo, "show", "main~2:public/t.sql")
    altered = git(repo, "show", "main~1:public/t.sql")
    assert "status character varying(20)" in altered
    assert ("Pggit-Repaired: dropped trigger t_touch on public.t: it blocks the change; "
            "created again from the live database once it can be") in git(
        repo, "log", "-1", "--format=%B", "main~1")
    assert "CREATE TRIGGER t_touch" in git(repo, "show", "main:public/t.sql")
    assert "Pggit-Replay: failed" not in git(repo, "log", "--format=%B", "main")


def test_oids_put_unrecorded_sequences_and_types_older_than_the_history_at_its_start(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # v1 never records CREATE SEQUENCE or CREATE TYPE. With OIDs that can be trusted, the
    # ones older than every object the history records as created belong to its start; one
    # made later (by a migration v1 left no row of) does not.
    from history import cli

    dsn = make_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE ticket_seq")
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'great')")
        conn.execute("CREATE MATERIALIZED VIEW moods AS SELECT unnest(enum_range(NULL::mood))")
        conn.execute("CREATE PROCEDURE tidy() LANGUAGE sql AS $$ SELECT 1 $$")
        conn.execute("CREATE TABLE jobs (id int)")  # history id 1
        conn.execute("CREATE SEQUENCE later_seq")
        conn.execute("CREATE TABLE archive (id int)")  # history id 2
    make_source(dsn, [
        Change("CREATE TABLE jobs (id int);", at(2), objects=[("CREATE", "TABLE", "public", "jobs")]),
        Change("CREATE TABLE archive (id int);", at(3),
               objects=[("CREATE", "TABLE", "public", "archive")]),
    ])
    _record_oids(dsn, {1: "jobs", 2: "archive"})
    repo = tmp_path / "repo"

    result = cli("export", dsn, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    files = git(repo, "ls-tree", "-r", "--name-only", root).split()
    assert {"public/ticket_seq.sql", "public/mood.sql", "public/moods.sql",
            "public/tidy.sql"} <= set(files)
    assert "public/later_seq.sql" not in files
    body = git(repo, "log", "-1", "--format=%B", root)
    assert ("1 function, 1 matview, 1 sequence and 1 type whose OIDs are older than every "
            "object the history") in " ".join(body.split())
    assert "  sequence public.ticket_seq\n" in body
    checked = cli("check", dsn)
    assert ("1 function, 1 matview, 1 sequence and 1 type that no history creates have OIDs "
            "older") in " ".join(checked.stdout.split())


def test_an_unrecorded_type_named_as_an_array_in_a_signature_comes_from_live(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # CREATE TYPE is never recorded; PostgreSQL names a missing type in a function's
    # signature unquoted, an array with []: "type item[] does not exist".
    from history import cli

    function = ("CREATE FUNCTION total(items item[]) RETURNS int LANGUAGE sql "
                "AS 'SELECT sum((i).qty)::int FROM unnest(items) AS i';")
    source = make_source(make_database(), [
        Change(function, at(1), objects=[("CREATE", "FUNCTION", "public", "total")]),
    ], live_sql="CREATE TYPE item AS (qty int);\n" + function)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert "Pggit-Repaired: created type public.item from the live database" in body
    assert "total(items public.item[])" in git(repo, "show", "main:public/total.sql")


def test_every_trigger_in_the_way_of_a_column_change_is_dropped(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # PostgreSQL names one blocking trigger at a time: each is progress, not the same failure.
    from history import cli

    function = TOUCH
    triggers = "".join(f"CREATE TRIGGER t_{n} BEFORE UPDATE OF status ON t FOR EACH ROW "
                       "EXECUTE FUNCTION touch();\n" for n in ("one", "two", "three"))
    source = make_source(make_database(), [
        *_TRIGGERED_COLUMN_CHANGE,
    ], live_sql="CREATE TABLE t (id int, status varchar(20));\n" + function + "\n" + triggers
                + "CREATE INDEX t_id ON t (id);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert body.count("Pggit-Repaired: dropped trigger t_") == 3
    assert "status character varying(20)" in git(repo, "show", "main:public/t.sql")


def test_a_statement_on_a_table_older_than_the_history_and_dropped_since_is_skipped(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # The table predates pgGit and a later migration drops it: nobody knows its columns.
    # Its index cannot be made, but the rest of the migration must not be lost with it.
    from history import cli

    source = make_source(make_database(), [
        Change("CREATE INDEX IF NOT EXISTS old_things_x ON old_things (x);\n"
               "CREATE TABLE t (id int);", at(1),
               objects=[("CREATE", "INDEX", "public", "old_things_x"),
                        ("CREATE", "TABLE", "public", "t")]),
        Change("DROP TABLE IF EXISTS old_things;", at(2),
               objects=[("DROP", "TABLE", "public", "old_things")]),
    ], live_sql="CREATE TABLE t (id int);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    body = git(repo, "log", "-1", "--format=%B", "main~1")
    assert ("Pggit-Repaired: skipped statement 1 (CREATE INDEX IF NOT EXISTS old_things_x ON "
            "old_things (x);): it needs table old_things, which existed then (history id 3 "
            "drops it)") in body
    assert "public/t.sql" in git(repo, "ls-tree", "-r", "--name-only", "main~1")


def test_oids_date_an_unrecorded_trigger_after_the_objects_older_than_it(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    from history import cli

    dsn = make_database()
    with psycopg.connect(dsn, autocommit=True) as conn:  # the live objects, in history order
        conn.execute("CREATE TABLE jobs (id int)")  # history id 1
        conn.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql"
                     " AS $$ BEGIN RETURN NEW; END $$")  # history id 2
        conn.execute("CREATE TABLE audit (id int)")  # history id 3
        # Never recorded (v1 does not record CREATE TRIGGER), made after audit.
        conn.execute("CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs"
                     " FOR EACH ROW EXECUTE FUNCTION touch()")
        conn.execute("CREATE TABLE later (id int)")  # history id 4
    make_source(dsn, [
        Change("CREATE TABLE jobs (id int);", at(2)),
        Change("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql"
               " AS $$ BEGIN RETURN NEW; END $$;", at(3),
               objects=[("CREATE", "FUNCTION", "public", "touch")]),
        Change("CREATE TABLE audit (id int);", at(4),
               objects=[("CREATE", "TABLE", "public", "audit")]),
        Change("CREATE TABLE later (id int);", at(5),
               objects=[("CREATE", "TABLE", "public", "later")]),
    ])
    _record_oids(dsn, {1: "jobs", 3: "audit", 4: "later"})
    repo = tmp_path / "repo"

    result = cli("export", dsn, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OID chronology: usable" in result.stdout
    # Its table and function exist from history id 2 on, but its OID says it came after
    # audit (id 3): it is created before id 4, and the repair says why.
    assert "jobs_touch" not in git(repo, "show", "main~1:public/jobs.sql")
    assert "CREATE TRIGGER jobs_touch" in git(repo, "show", "main:public/jobs.sql")
    message = git(repo, "log", "-1", "--format=%B", "main")
    assert ("created trigger jobs_touch on public.jobs from the live database once the "
            "history passed id 3, the last recorded object older than it (OID chronology)"
            ) in message


def test_an_unrecorded_enum_label_comes_with_the_first_later_change_that_names_it(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # One statement per query: CREATE TYPE and ALTER TYPE ... ADD VALUE leave no row. The
    # labels named in the run of changes that first needs the type were there from the
    # start; 'cancelled', first named by a function five days later, came with it. 'held'
    # is also first named then, but it sorts before 'done', which was there all along
    # (ADD VALUE appends): it was there too.
    from history import cli

    cancel = ("CREATE FUNCTION cancel(i int) RETURNS void LANGUAGE sql "
              "AS $$ UPDATE job SET s = 'cancelled' WHERE id = i AND s <> 'held' $$;")
    finish = ("CREATE FUNCTION finish(i int) RETURNS void LANGUAGE sql "
              "AS $$ UPDATE job SET s = 'done' WHERE id = i $$;")
    shown = ("CREATE FUNCTION shown() RETURNS event LANGUAGE sql "
             "AS $$ SELECT 'cancelled'::public.event $$;")
    source = make_source(make_database(), [
        Change("CREATE TABLE job (id int, s status DEFAULT 'todo');", at(1, 10),
               objects=[("CREATE", "TABLE", "public", "job")]),
        Change(finish, at(1, 10, 1), objects=[("CREATE", "FUNCTION", "public", "finish")]),
        # Another enum's label of the same name: not a mention of status's.
        Change(shown, at(1, 10, 2), objects=[("CREATE", "FUNCTION", "public", "shown")]),
        Change("CREATE INDEX job_id ON job (id);", at(3),
               objects=[("CREATE", "INDEX", "public", "job_id")]),
        Change(cancel, at(5), objects=[("CREATE", "FUNCTION", "public", "cancel")]),
    ], live_sql="CREATE TYPE status AS ENUM ('todo', 'held', 'done', 'cancelled');\n"
                "CREATE TYPE event AS ENUM ('cancelled');\n"
                "CREATE TABLE job (id int, s status DEFAULT 'todo');\n"
                f"{finish}\n{shown}\nCREATE INDEX job_id ON job (id);\n{cancel}")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    for day in ("main~4", "main~3", "main~2", "main~1"):
        labels = git(repo, "show", f"{day}:public/status.sql")
        assert "'todo'" in labels and "'held'" in labels and "'done'" in labels
        assert "'cancelled'" not in labels
    assert "'cancelled'" in git(repo, "show", "main:public/status.sql")
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert "added value cancelled to enum public.status" in body
    assert "first named by history id 5, a later run of changes" in body
    git(repo, "fsck", "--strict")


def test_a_function_superseded_by_a_later_version_goes_once_that_run_is_over(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # The migration copies price() to price_v1() and a later one drops price(): DROP
    # FUNCTION is never recorded, and the live database only has price_v1.
    from history import cli

    price = "CREATE FUNCTION price(i int) RETURNS int LANGUAGE sql AS 'SELECT i';"
    price_v1 = "CREATE FUNCTION price_v1(i int) RETURNS int LANGUAGE sql AS 'SELECT i * 2';"
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int);", at(1), objects=[("CREATE", "TABLE", "public", "t")]),
        Change(price, at(2), objects=[("CREATE", "FUNCTION", "public", "price")]),
        Change(price_v1, at(3, 10), objects=[("CREATE", "FUNCTION", "public", "price_v1")]),
        Change("CREATE INDEX t_id ON t (id);", at(3, 10, 1),
               objects=[("CREATE", "INDEX", "public", "t_id")]),
        Change("CREATE INDEX t_id2 ON t (id);", at(4),
               objects=[("CREATE", "INDEX", "public", "t_id2")]),
    ], live_sql=f"CREATE TABLE t (id int);\n{price_v1}\nCREATE INDEX t_id ON t (id);\n"
                "CREATE INDEX t_id2 ON t (id);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    files = git(repo, "ls-tree", "-r", "--name-only", "main~1").split()
    assert "public/price.sql" in files and "public/price_v1.sql" in files  # the same run
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert "public/price.sql" not in files and "public/price_v1.sql" in files
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert "dropped function public.price(i integer) before history id 5" in body
    assert "created price_v1 (history id 3), a later version of it" in body
    git(repo, "fsck", "--strict")


def test_a_label_added_by_a_migration_v1_left_no_row_for_comes_when_first_named(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Whole files as one query: the type is created in a recorded text, and a later
    # migration made only of ALTER TYPE ... ADD VALUE wrote no row. A PL/pgSQL body is not
    # checked when created, so no statement fails for want of the label: only the text
    # that first names it, days later, dates it.
    from history import cli

    cheer = ("CREATE FUNCTION cheer() RETURNS mood LANGUAGE plpgsql "
             "AS $$ BEGIN RETURN 'great'; END $$;")
    source = make_source(make_database(), [
        Change("CREATE TYPE mood AS ENUM ('ok');\nCREATE TABLE diary (m mood);", at(1),
               objects=[("CREATE", "TABLE", "public", "diary")]),
        Change("CREATE INDEX diary_m ON diary (m);", at(2),
               objects=[("CREATE", "INDEX", "public", "diary_m")]),
        Change(cheer, at(6), objects=[("CREATE", "FUNCTION", "public", "cheer")]),
    ], live_sql="CREATE TYPE mood AS ENUM ('ok', 'great');\nCREATE TABLE diary (m mood);\n"
                f"CREATE INDEX diary_m ON diary (m);\n{cheer}")
    repo = tmp_path / "repo"

    checked = cli("check", source)
    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert ("enum public.mood: labels great (first named by history id 3, a later run of "
            "changes) are in no recorded text") in checked.stdout
    for day in ("main~2", "main~1"):
        assert "'great'" not in git(repo, "show", f"{day}:public/mood.sql")
    assert "'great'" in git(repo, "show", "main:public/mood.sql")
    body = git(repo, "log", "-1", "--format=%B", "main")
    assert "added value great to enum public.mood from the live database before history id 3" in body


def test_v1_metadata_in_a_whole_file_repairs_a_rename_a_rowless_migration_made(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Captured by the v1 triggers, whole files as one query: the migration that renamed
    # the column held nothing else and wrote no row. The next file names t in one statement
    # only, so its row's metadata (after that statement) is t after the whole file: the
    # rename shows there. A file naming t twice is not judged (a later statement of it
    # could have changed t after the row was written).
    from history import cli

    source, rows = _captured(make_database(), [
        "CREATE TABLE t (a int, note text);\nCREATE TABLE u (id int);",
        "ALTER TABLE t RENAME COLUMN a TO id;",
        "CREATE TABLE v (id int);\nALTER TABLE t ADD COLUMN seen timestamptz;"])
    add_id = max(i for i, text in rows if "ADD COLUMN" in text)  # its ALTER TABLE row
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    text = git(repo, "show", "main:public/t.sql")
    assert "id integer" in text and "a integer" not in text and "seen timestamp" in text
    assert "a integer" in git(repo, "show", "main~1:public/t.sql")
    assert (f"renamed column public.t.a to id: v1's metadata of history id {add_id} records "
            "the table so right after it") in git(repo, "log", "-1", "--format=%B", "main")


def test_a_column_renamed_unrecorded_is_found_through_a_table_alias(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # RENAME COLUMN writes no row; the view re-created next names the column through an
    # alias, and PostgreSQL's message says only "column r.full_name does not exist".
    from history import cli

    view = ("CREATE VIEW who AS SELECT t.id, r.full_name FROM tickets t "
            "JOIN requesters r ON r.id = t.requester_id;")
    source = make_source(make_database(), [
        Change("CREATE TABLE requesters (id int PRIMARY KEY, name text NOT NULL);", at(1),
               objects=[("CREATE", "TABLE", "public", "requesters")]),
        Change("CREATE TABLE tickets (id int, requester_id int);", at(2),
               objects=[("CREATE", "TABLE", "public", "tickets")]),
        Change(view, at(3), objects=[("CREATE", "VIEW", "public", "who")]),
    ], live_sql="CREATE TABLE requesters (id int PRIMARY KEY, full_name text NOT NULL);\n"
                f"CREATE TABLE tickets (id int, requester_id int);\n{view}")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "full_name" in git(repo, "show", "main:public/who.sql")
    assert "full_name text" in git(repo, "show", "main:public/requesters.sql")
    assert ("renamed column name to full_name in table public.requesters, as in the live "
            "database") in git(repo, "log", "-1", "--format=%B", "main")


def test_a_trigger_a_function_makes_when_called_unrecorded_is_scheduled(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # The function that creates the trigger is recorded, but its body assembles CREATE
    # TRIGGER at run time, and the call that made the live trigger (SELECT enable('t'))
    # wrote no row: the name in the body is not a creation of the trigger on t.
    from history import cli

    enable = ("CREATE FUNCTION enable(p regclass) RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
              "EXECUTE format('CREATE TRIGGER t_audit AFTER INSERT ON %s FOR EACH ROW "
              "EXECUTE FUNCTION touch()', p); END $$;")
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int);\nCREATE TABLE u (id int);", at(1),
               objects=[("CREATE", "TABLE", "public", "t"), ("CREATE", "TABLE", "public", "u")]),
        Change(f"{TOUCH}\n{enable}", at(2), objects=[("CREATE", "FUNCTION", "public", "touch"),
                                                     ("CREATE", "FUNCTION", "public", "enable")]),
        Change("CREATE INDEX t_id ON t (id);", at(3),
               objects=[("CREATE", "INDEX", "public", "t_id")]),
        # A recorded call makes u's: the replay runs it, nothing is scheduled for u.
        Change("CREATE INDEX u_id ON u (id);\nSELECT enable('public.u');", at(4),
               objects=[("CREATE", "INDEX", "public", "u_id")]),
    ], live_sql=f"CREATE TABLE t (id int);\nCREATE TABLE u (id int);\n{TOUCH}\n{enable}\n"
                "SELECT enable('t');\nCREATE INDEX t_id ON t (id);\n"
                "CREATE INDEX u_id ON u (id);\nSELECT enable('public.u');")
    repo = tmp_path / "repo"

    checked = cli("check", source)
    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "trigger t_audit on public.t: no history text creates it" in checked.stdout
    assert "CREATE TRIGGER t_audit" in git(repo, "show", "main~1:public/t.sql")
    assert "CREATE TRIGGER t_audit" not in git(repo, "show", "main~3:public/t.sql")
    assert "trigger t_audit on public.u" not in checked.stdout
    assert "CREATE TRIGGER t_audit" not in git(repo, "show", "main~1:public/u.sql")
    assert "CREATE TRIGGER t_audit" in git(repo, "show", "main:public/u.sql")
    assert "t_audit on public.u" not in git(repo, "log", "--format=%B", "main")


def test_oids_date_objects_of_kinds_v1_never_records_that_a_rowless_migration_made(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # A migration made only of CREATE SEQUENCE / TYPE / MATERIALIZED VIEW / PROCEDURE leaves
    # no row, and nothing in the history needs the objects: without the OIDs they would
    # appear only with a reconcile commit. Made between history ids 2 and 3, they belong to
    # id 3's commit.
    from history import cli

    dsn = make_database()
    with psycopg.connect(dsn, autocommit=True) as conn:  # the live objects, in history order
        conn.execute("CREATE TABLE jobs (id int)")  # history id 1
        conn.execute("CREATE TABLE audit (id int)")  # history id 2
        conn.execute("CREATE SEQUENCE ticket_seq")  # never recorded
        conn.execute("CREATE TYPE priority AS ENUM ('low', 'high')")  # never recorded
        conn.execute("CREATE MATERIALIZED VIEW audit_count AS SELECT count(*) FROM audit")
        conn.execute("CREATE PROCEDURE purge() LANGUAGE sql AS $$ DELETE FROM audit $$")
        conn.execute("CREATE TABLE later (id int)")  # history id 3
    make_source(dsn, [
        Change("CREATE TABLE jobs (id int);", at(2), objects=[("CREATE", "TABLE", "public", "jobs")]),
        Change("CREATE TABLE audit (id int);", at(3),
               objects=[("CREATE", "TABLE", "public", "audit")]),
        Change("CREATE TABLE later (id int);", at(4),
               objects=[("CREATE", "TABLE", "public", "later")]),
    ])
    _record_oids(dsn, {1: "jobs", 2: "audit", 3: "later"})
    repo = tmp_path / "repo"

    result = cli("export", dsn, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OID chronology: usable" in result.stdout
    before = git(repo, "ls-tree", "-r", "--name-only", "main~1").split()
    assert not {"public/ticket_seq.sql", "public/priority.sql", "public/audit_count.sql",
                "public/purge.sql"} & set(before)
    assert "CREATE MATERIALIZED VIEW public.audit_count" in git(
        repo, "show", "main:public/audit_count.sql")
    assert "PROCEDURE public.purge()" in git(repo, "show", "main:public/purge.sql")
    assert "CREATE SEQUENCE public.ticket_seq" in git(repo, "show", "main:public/ticket_seq.sql")
    assert "'low',\n    'high'" in git(repo, "show", "main:public/priority.sql")
    message = git(repo, "log", "-1", "--format=%B", "main")
    assert ("created sequence public.ticket_seq from the live database (its OID "
            ) in message
    assert ("is newer than history id 2's object and older than history id 3's (OID "
            "chronology), and v1 never records CREATE SEQUENCE)") in message
    assert "created type public.priority from the live database (its OID" in message
    assert "v1 never records CREATE MATERIALIZED VIEW)" in message
    assert "v1 never records CREATE PROCEDURE)" in message
    checked = cli("check", dsn)
    assert "sequence public.ticket_seq: no history text creates it; its OID" in checked.stdout
    assert "the export creates it before history id 3" in checked.stdout


def test_a_table_older_than_the_history_waits_for_the_options_a_later_row_sets(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Planner statistics and storage parameters set by a recorded ALTER TABLE are that
    # row's change: the table before it must not have them already (the live one has).
    from history import cli

    stats = ("ALTER TABLE legacy ALTER COLUMN feeling SET (n_distinct = -0.5), "
             "SET (fillfactor = 70);")
    source = make_source(make_database(), [
        Change(stats, at(2), objects=[("ALTER", "TABLE", "public", "legacy")]),
    ], live_sql=LEGACY + stats.replace("legacy", "public.legacy", 1))
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    before = git(repo, "show", f"{root}:public/legacy.sql")
    assert "n_distinct" not in before and "fillfactor" not in before
    message = git(repo, "log", "-1", "--format=%B", root)
    assert "n_distinct on column public.legacy.feeling (set by history id 1)" in message
    assert "fillfactor on table public.legacy (set by history id 1)" in message
    after = git(repo, "show", "main:public/legacy.sql")
    assert "ALTER COLUMN feeling SET (n_distinct=-0.5)" in after
    assert ") WITH (fillfactor=70);" in after
    # The parenthesis closing the columns is not a column (it once read "Add column )").
    assert git(repo, "log", "-1", "--format=%s", "main").strip() == "Alter table public.legacy"


def test_a_table_made_from_the_live_database_waits_for_what_later_rows_add(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # The recorded CREATE TABLE cannot replay (its column's domain is gone from the live
    # database), so the next statement on the table has it made from the live definition:
    # without the index and the comment a later row adds, or they would show a change early.
    from history import cli

    live = ("CREATE TABLE orders (id int PRIMARY KEY, total numeric);\n"
            "CREATE INDEX orders_total ON orders (total);\n"
            "COMMENT ON TABLE orders IS 'Orders';\n")
    source = make_source(make_database(), [
        Change("CREATE TABLE orders (id int PRIMARY KEY, total legacy_money);", at(2),
               objects=[("CREATE", "TABLE", "public", "orders")]),
        Change("ALTER TABLE orders ALTER COLUMN total TYPE numeric;", at(3),
               objects=[("ALTER", "TABLE", "public", "orders")]),
        Change("CREATE INDEX orders_total ON orders (total);\n"
               "COMMENT ON TABLE orders IS 'Orders';", at(4),
               objects=[("CREATE", "INDEX", "public", "orders_total")]),
    ], live_sql=live)
    repo = tmp_path / "repo"

    cli("export", source, str(repo))

    made = git(repo, "show", "main~1:public/orders.sql")
    assert "total numeric" in made
    assert "orders_total" not in made and "COMMENT" not in made
    message = git(repo, "log", "-1", "--format=%B", "main~1")
    assert ("created table public.orders from the live database (never created in the "
            "recorded history) without comment on table public.orders (added by history id "
            "3), index orders_total on public.orders (added by history id 3)") in " ".join(
                message.split())
    last = git(repo, "show", "main:public/orders.sql")
    assert "CREATE INDEX orders_total ON public.orders" in last
    assert "COMMENT ON TABLE public.orders IS 'Orders';" in last
    assert "Pggit-Repaired" not in git(repo, "log", "-1", "--format=%B", "main")


def test_trigger_and_constraint_names_a_later_row_uses_on_another_table_stay(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # One `touch` trigger and one `positive_id` check per table, as projects name them:
    # the later row that creates those of `b` says nothing about those `a` had before the
    # history.
    from history import cli

    touch = ("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql"
             " AS $$ BEGIN RETURN NEW; END $$;\n")
    later = ("CREATE TABLE b (id int);\n"
             "CREATE TRIGGER touch BEFORE UPDATE ON b FOR EACH ROW EXECUTE FUNCTION touch();\n"
             "ALTER TABLE b ADD CONSTRAINT positive_id CHECK (id > 0);\n")
    live = (touch + "CREATE TABLE a (id int CONSTRAINT positive_id CHECK (id > 0));\n"
            "CREATE TRIGGER touch BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION touch();\n"
            + later)
    source = make_source(make_database(), [
        Change(later, at(2), objects=[("CREATE", "TABLE", "public", "b")]),
    ], live_sql=live)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    baseline = git(repo, "show", f"{root}:public/a.sql")
    assert "CREATE TRIGGER touch BEFORE UPDATE ON public.a" in baseline
    assert "CONSTRAINT positive_id CHECK" in baseline
    assert "Left out" not in git(repo, "log", "-1", "--format=%B", root)
    assert "CREATE TRIGGER touch BEFORE UPDATE ON public.b" in git(repo, "show", "main:public/b.sql")


def test_an_extension_no_row_created_comes_when_a_change_uses_it(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # v1 sees CREATE EXTENSION only through rows for the functions its script makes; one
    # sent alone before pgGit was installed, or in a text the history lost, leaves none.
    # The first change using its type, or its operator class, has it created then.
    from history import cli

    table = "CREATE TABLE people (id int, email citext);"
    index = "CREATE INDEX people_trgm ON people USING gin ((email::text) gin_trgm_ops);"
    source = make_source(make_database(), [
        Change(table, at(2), objects=[("CREATE", "TABLE", "public", "people")]),
        Change(index, at(3), objects=[("CREATE", "INDEX", "public", "people_trgm")]),
    ], live_sql=f"CREATE EXTENSION citext;\nCREATE EXTENSION pg_trgm;\n{table}\n{index}\n")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout
    first = git(repo, "log", "-1", "--format=%B", "main~1")
    assert ("Pggit-Repaired: created extension citext in schema public: the live type citext "
            "belongs to it, and no recorded text creates it") in first
    assert "public/citext.sql" in git(repo, "ls-tree", "-r", "--name-only", "main~1")
    assert ("created extension pg_trgm in schema public: the live operator class "
            "gin_trgm_ops belongs to it") in git(repo, "log", "-1", "--format=%B", "main")
    assert "gin_trgm_ops" in git(repo, "show", "main:public/people.sql")


def test_a_table_older_than_the_history_comes_with_the_extension_it_needs(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    from history import cli

    source = make_source(make_database(), [
        Change("ALTER TABLE legacy ADD COLUMN note text;", at(2),
               objects=[("ALTER", "TABLE", "public", "legacy")]),
    ], live_sql="CREATE EXTENSION citext;\nCREATE TABLE legacy (email citext, note text);\n")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    files = git(repo, "ls-tree", "-r", "--name-only", root).split()
    assert "public/citext.sql" in files and "public/legacy.sql" in files
    assert "email public.citext" in git(repo, "show", f"{root}:public/legacy.sql")
    assert "created extension citext in schema public" in git(
        repo, "log", "-1", "--format=%B", root)


def test_a_comment_no_row_records_is_set_when_its_transaction_id_dates_it(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # One statement per transaction under v1's real triggers: COMMENT writes no row, so a
    # migration of comments alone leaves no trace but the comments' own catalog rows, whose
    # transaction ids fall between those of the history rows around it.
    from history import cli

    source, rows = _captured(make_database(), [
        "CREATE TABLE s AS SELECT 1 AS id",  # no row (v1 never records it): the baseline's
        "CREATE TABLE a (id int)",
        "CREATE TABLE b (id int)",
        "COMMENT ON TABLE a IS 'the a''s table'",
        "COMMENT ON COLUMN b.id IS 'b id'",
        "COMMENT ON TABLE s IS 'dated'",
        "CREATE TABLE c (id int)",
        "COMMENT ON TABLE c IS 'set after the last row'",
    ])
    b_id = next(i for i, text in rows if "TABLE b" in text)
    c_id = next(i for i, text in rows if "TABLE c" in text)
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "transaction id chronology: usable" in result.stdout

    def commit_of(history_id: int) -> str:
        return git(repo, "log", "--format=%H", "-1",
                   f"--grep=Pggit-History-Ids: {history_id}$", "main").strip()

    assert "COMMENT" not in git(repo, "show", f"{commit_of(b_id)}:public/a.sql")
    at_c = commit_of(c_id)
    assert "COMMENT ON TABLE public.a IS 'the a''s table';" in git(
        repo, "show", f"{at_c}:public/a.sql")
    assert "COMMENT ON COLUMN public.b.id IS 'b id';" in git(repo, "show", f"{at_c}:public/b.sql")
    # The table older than the history is in the baseline without the comment set later.
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert "COMMENT" not in git(repo, "show", f"{root}:public/s.sql")
    assert "COMMENT ON TABLE public.s IS 'dated';" in git(repo, "show", f"{at_c}:public/s.sql")
    assert (f"Pggit-Repaired: set the comment on table public.a from the live database: its "
            f"transaction id is newer than history id {b_id}'s and not older than history id "
            f"{c_id}'s (transaction id chronology), and v1 never records COMMENT"
            ) in git(repo, "log", "-1", "--format=%B", at_c)
    # Set after the last row: nothing in the history shows it, a reconcile commit does.
    assert "COMMENT" not in git(repo, "show", "main:public/c.sql")

    checked = cli("check", source)
    assert (f"comment on table public.a: no history text sets it; its transaction id is newer "
            f"than history id {b_id}'s") in checked.stdout
    assert "comment on table public.c: no history text sets it" in checked.stdout
    assert "only a reconcile commit (--reconcile) shows it" in checked.stdout

    # A new row after it: c's comment is now inside the history, set before that row. A
    # rerun continues as a fresh export would, and sets nothing twice.
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE d (id int)")
    assert cli("export", source, str(repo)).returncode == 0
    trailers = [line for line in git(repo, "log", "-1", "--format=%B", "main").splitlines()
                if line.startswith("Pggit-Repaired:")]
    assert len(trailers) == 1 and "set the comment on table public.c" in trailers[0]
    assert "COMMENT ON TABLE public.c IS 'set after the last row';" in git(
        repo, "show", "main:public/c.sql")
    fresh = tmp_path / "fresh"
    assert cli("export", source, str(fresh)).returncode == 0
    assert git(repo, "rev-parse", "main") == git(fresh, "rev-parse", "main")


def test_transaction_ids_of_rows_written_in_one_transaction_are_not_used(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # make_source writes every row in one transaction, as a history loaded from a dump
    # has them: the rows' transaction ids date nothing, and the comment stays where the
    # baseline puts it (on a table older than the history).
    from history import cli

    source = make_source(make_database(), [
        Change("CREATE TABLE b (id int);", at(2), objects=[("CREATE", "TABLE", "public", "b")]),
        Change("CREATE TABLE c (id int);", at(3), objects=[("CREATE", "TABLE", "public", "c")]),
    ], live_sql="CREATE TABLE a (id int);\nCOMMENT ON TABLE a IS 'old';\n"
                "CREATE TABLE b (id int);\nCREATE TABLE c (id int);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert ("transaction id chronology: the history rows' transaction ids do not grow from "
            "one transaction to the next") in result.stdout
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert "COMMENT ON TABLE public.a IS 'old';" in git(repo, "show", f"{root}:public/a.sql")
