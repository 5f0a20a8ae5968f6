"""Source and shadow servers of different PostgreSQL major versions.

Needs a second PostgreSQL installed on the machine (Debian's packages put them
in /usr/lib/postgresql/N/bin); skipped where there is none.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from history import Change, at, cli, git, make_source
from psycopg import sql

from pggit_export import ExportOptions, export_history
from pggit_export.render.snapshot import ObjectKey, render_snapshot
from pggit_export.shadow.server import EmbeddedServer, PostgresBinaries, _version_of, find_binaries


def _other_major() -> PostgresBinaries | None:
    bundled = find_binaries()
    root = Path("/usr/lib/postgresql")
    for bindir in sorted(root.glob("*/bin")) if root.is_dir() else []:
        version = _version_of(bindir)
        if version and int(version.split(".")[0]) != bundled.major:
            return PostgresBinaries(bindir, version)
    return None


OTHER = _other_major()
needs_other_major = pytest.mark.skipif(OTHER is None, reason="no second PostgreSQL major installed")


def _older_source_newer_shadow() -> PostgresBinaries:
    """The embedded server's binaries, for a test of a source older than PostgreSQL 16 (the
    other major) exported through a newer shadow (the embedded one); skips otherwise."""
    assert OTHER is not None
    bundled = find_binaries()
    if OTHER.major >= 16 or bundled.major < 16:
        pytest.skip("needs a source older than PostgreSQL 16 and a newer embedded shadow")
    return bundled


def _create_databases(server: EmbeddedServer, *names: str) -> None:
    with psycopg.connect(server.conninfo(), autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _restores_and_shows_no_drift(target: str, repo: Path, source: str) -> None:
    """The files are what the source's own server prints: `restore` into an empty database
    of its major re-renders them identically (exit 0), and `drift` finds the unchanged
    source equal (exit 0)."""
    restored = cli("restore", str(repo), target)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    drift = cli("drift", source, str(repo))
    assert drift.returncode == 0, drift.stdout + drift.stderr


@pytest.fixture(scope="module")
def other_server() -> Iterator[EmbeddedServer]:
    assert OTHER is not None
    with EmbeddedServer(OTHER) as server:
        yield server


@needs_other_major
def test_source_on_another_major_version(other_server: EmbeddedServer, tmp_path: Path) -> None:
    _create_databases(other_server, "src")
    source = make_source(other_server.conninfo("src"), [
        Change("CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n text);", at(1)),
    ])
    report = export_history(source, tmp_path / "repo")
    assert report.clean and report.commits_written == 1
    assert report.source_server_version // 10000 == OTHER.major
    assert "GENERATED ALWAYS AS IDENTITY" in git(tmp_path / "repo", "show", "main:public/t.sql")


@needs_other_major
def test_warns_when_the_shadow_is_older_than_the_source(
    other_server: EmbeddedServer, make_database, tmp_path: Path
) -> None:
    assert OTHER is not None
    if OTHER.major > find_binaries().major:
        pytest.skip("the other server is newer than the bundled one")
    source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
    report = export_history(
        source, tmp_path / "repo", ExportOptions(shadow_dsn=other_server.conninfo())
    )
    assert report.shadow_server_version // 10000 == OTHER.major
    assert any("older than the source" in w for w in report.warnings)


# Text whose rendering differs between majors: PostgreSQL 18 names NOT NULL constraints and
# deparses views and defaults its own way. A PostgreSQL 15 source's files must read as a
# PostgreSQL 15 server prints them, or restore and drift see differences that are not there.
DIALECT_SENSITIVE = """
CREATE TABLE customers (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CHECK (email LIKE '%@%'),
    joined date NOT NULL DEFAULT CURRENT_DATE,
    tags text[] NOT NULL DEFAULT '{}'
);
CREATE VIEW recent_customers AS
    SELECT id, lower(email) AS email FROM customers WHERE joined > CURRENT_DATE - 30;
"""


@needs_other_major
def test_a_source_is_replayed_and_rendered_in_its_own_major(
    other_server: EmbeddedServer, tmp_path: Path
) -> None:
    assert OTHER is not None
    _create_databases(other_server, "dialect_src", "dialect_restored")
    source = make_source(other_server.conninfo("dialect_src"), [
        Change(DIALECT_SENSITIVE, at(1), objects=[
            ("CREATE", "TABLE", "public", "customers"),
            ("CREATE", "VIEW", "public", "recent_customers"),
        ]),
    ], live_sql=DIALECT_SENSITIVE)
    repo = tmp_path / "repo"

    exported = cli("export", source, str(repo))
    assert exported.returncode == 0, exported.stderr
    assert f"PostgreSQL {OTHER.version}" in exported.stdout
    assert f"files in PostgreSQL {OTHER.major}'s dialect" in exported.stdout
    assert "customers_email_not_null" not in git(repo, "show", "main:public/customers.sql")

    _restores_and_shows_no_drift(other_server.conninfo("dialect_restored"), repo, source)


PGCRYPTO_HISTORY = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE tokens (
    id int PRIMARY KEY,
    secret bytea NOT NULL DEFAULT gen_random_bytes(16),
    hash text
);
CREATE INDEX tokens_digest_idx ON tokens (digest(hash, 'sha256'));
"""


@needs_other_major
def test_an_extension_the_shadow_lacks_is_stood_in_from_the_source(
    other_server: EmbeddedServer, tmp_path: Path
) -> None:
    # The source is the machine's PostgreSQL, which has pgcrypto; the shadow is the wheel's,
    # which has not (it is built without OpenSSL), as on a machine with only the wheel.
    bundled = find_binaries()
    _create_databases(other_server, "standin_src")
    source = make_source(other_server.conninfo("standin_src"), [
        Change(PGCRYPTO_HISTORY, at(1), objects=[
            ("CREATE", "TABLE", "public", "tokens"),
            ("CREATE", "INDEX", "public", "tokens_digest_idx"),
        ]),
        Change("ALTER TABLE tokens ADD COLUMN note text;", at(2),
               objects=[("ALTER", "TABLE", "public", "tokens")]),
    ], live_sql=PGCRYPTO_HISTORY + "ALTER TABLE tokens ADD COLUMN note text;")
    repo = tmp_path / "repo"
    env = {**os.environ, "PGGIT_EXPORT_PG_BIN": str(bundled.bindir)}

    result = cli("export", source, str(repo), env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PostgreSQL {bundled.version}" in result.stdout
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    # The extension is a file; its member functions are not, as with a real extension.
    assert sorted(files) == ["public/_schema.sql", "public/pgcrypto.sql", "public/tokens.sql"]
    assert "CREATE EXTENSION IF NOT EXISTS pgcrypto" in git(repo, "show", "main:public/pgcrypto.sql")
    tokens = git(repo, "show", "main:public/tokens.sql")
    assert "gen_random_bytes(16)" in tokens and "digest(hash, 'sha256'" in tokens
    assert "note text" in tokens
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    assert "Pggit-Repaired: built a stand-in for extension pgcrypto" in git(
        repo, "show", "-s", "--format=%B", root)

    # check predicts it: information, not an error.
    checked = cli("check", source, "--json", env=env)
    findings = json.loads(checked.stdout)["findings"]
    assert [(f["code"], f["severity"]) for f in findings if "pgcrypto" in f["message"]] == [
        ("extension-stand-in", "info")]


# `json` became a keyword in PostgreSQL 16: a PostgreSQL 18 server quotes it wherever it
# writes the name (its quote_ident and every deparsed index and default), a
# PostgreSQL 15 server does not (json_table, from PostgreSQL 17, likewise; system_user, a
# reserved word from 16, cannot even be parsed there written bare). String constants and function bodies that spell "json"
# are text, not names, and must keep their quotes.
KEYWORD_NAMES = """
CREATE TABLE events (
    id int PRIMARY KEY,
    json jsonb NOT NULL DEFAULT '{"json": 1}',
    json_table text,
    SYSTEM_USER text
);
CREATE INDEX events_json_idx ON events ((json ->> 'kind'));
CREATE FUNCTION event_json(e events) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT e."json" $$;
COMMENT ON COLUMN events.json IS 'the "json" column';
CREATE TABLE tags (name text NOT NULL);
"""
# PostgreSQL 18 names each NOT NULL constraint and keeps the name through a rename
# (tags_name_not_null on labels); PostgreSQL 15 has no such names.
RENAME_TAGS = "ALTER TABLE tags RENAME TO labels;"


@needs_other_major
def test_names_that_became_keywords_are_written_as_the_source_writes_them(
    other_server: EmbeddedServer, tmp_path: Path
) -> None:
    bundled = _older_source_newer_shadow()
    _create_databases(other_server, "keyword_src", "keyword_restored")
    source = make_source(other_server.conninfo("keyword_src"), [
        Change(KEYWORD_NAMES, at(1), objects=[
            ("CREATE", "TABLE", "public", "events"),
            ("CREATE", "INDEX", "public", "events_json_idx"),
            ("CREATE", "FUNCTION", "public", "event_json"),
            ("CREATE", "TABLE", "public", "tags"),
        ]),
        Change(RENAME_TAGS, at(2), objects=[("ALTER", "TABLE", "public", "labels")]),
    ], live_sql=KEYWORD_NAMES + RENAME_TAGS)
    repo = tmp_path / "repo"
    env = {**os.environ, "PGGIT_EXPORT_PG_BIN": str(bundled.bindir)}

    exported = cli("export", source, str(repo), env=env)

    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (f"files in PostgreSQL {OTHER.major}'s dialect for names, NOT NULL constraints "
            f"and view columns, {bundled.major}'s for other deparsed expressions"
            ) in exported.stdout
    events = git(repo, "show", "main:public/events.sql")
    assert "    json jsonb DEFAULT '{\"json\": 1}'::jsonb NOT NULL," in events
    assert "    json_table text," in events
    # Reserved from PostgreSQL 16 on: the 18 shadow could not parse the source's statement
    # until the name was quoted, which the commit says.
    assert "    system_user text," in events
    assert ("Pggit-Repaired: quoted the name system_user in statement 1: a keyword of the "
            f"shadow's PostgreSQL {bundled.major}, no keyword of the source's {OTHER.major}"
            ) in git(repo, "log", "-1", "--format=%B", "main~1")
    assert "ON public.events USING btree (((json ->> 'kind'::text)))" in events
    assert "COMMENT ON COLUMN public.events.json IS 'the \"json\" column';" in events
    assert 'SELECT e."json"' in git(repo, "show", "main:public/event_json.sql")
    assert "    name text NOT NULL\n" in git(repo, "show", "main:public/labels.sql")

    # The files are what the source's own server prints: restore re-renders them
    # identically there, and drift finds the unchanged source equal.
    _restores_and_shows_no_drift(other_server.conninfo("keyword_restored"), repo, source)


@needs_other_major
def test_an_extension_no_row_created_is_stood_in_when_a_change_needs_it(
    other_server: EmbeddedServer, tmp_path: Path
) -> None:
    # pgcrypto created before pgGit (no row), on a source whose server has it; the wheel's
    # shadow has not: the change using its function gets a stand-in, and the extension.
    bundled = find_binaries()
    _create_databases(other_server, "rowless_ext_src")
    table = "CREATE TABLE tokens (id int, secret bytea DEFAULT gen_random_bytes(16));"
    source = make_source(other_server.conninfo("rowless_ext_src"), [
        Change(table, at(1), objects=[("CREATE", "TABLE", "public", "tokens")]),
    ], live_sql=f"CREATE EXTENSION pgcrypto;\n{table}\n")
    repo = tmp_path / "repo"
    env = {**os.environ, "PGGIT_EXPORT_PG_BIN": str(bundled.bindir)}

    result = cli("export", source, str(repo), env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    message = git(repo, "log", "-1", "--format=%B", "main")
    assert ("Pggit-Repaired: created extension pgcrypto in schema public: the live function "
            "gen_random_bytes belongs to it, and no recorded text creates it; built a "
            "stand-in for extension pgcrypto") in message
    assert "gen_random_bytes(16)" in git(repo, "show", "main:public/tokens.sql")
    assert "CREATE EXTENSION IF NOT EXISTS pgcrypto" in git(repo, "show", "main:public/pgcrypto.sql")


# PostgreSQL 16 stopped qualifying the columns of a view that reads one relation
# (`SELECT id FROM public.tickets`, where 15 writes `SELECT tickets.id ...`); 15 also named
# a relation `old` or `new` `old_1`/`new_1`, after the OLD and NEW entries its views kept.
# Column references inside a sub-query, or in a view reading several relations, are
# qualified by both; a join's merged USING column by neither.
VIEWS = """
CREATE TABLE tickets (id int PRIMARY KEY, subject text, "Status" text, owner_id int,
                      qty int, created timestamptz, tags text[]);
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE old (id int, x int);
CREATE VIEW open_tickets AS SELECT t.id, t.subject FROM tickets t WHERE t."Status" = 'open';
CREATE VIEW ticket_summary AS
    SELECT id, lower(subject) AS subject, "Status", qty IS NULL AS no_qty,
           COALESCE(tags[1], 'none') AS first_tag, EXTRACT(year FROM created) AS year
    FROM tickets
    WHERE owner_id IN (SELECT id FROM users) AND qty BETWEEN 1 AND 9
    ORDER BY subject DESC, created;
CREATE VIEW owners AS
    SELECT owner_id, count(*) FILTER (WHERE qty > 1) AS n FROM tickets GROUP BY owner_id;
CREATE VIEW with_owner AS
    SELECT id, (SELECT u.name FROM users u WHERE u.id = tickets.owner_id) AS owner FROM tickets;
CREATE VIEW joined AS SELECT t.id, u.name FROM tickets t JOIN users u ON u.id = t.owner_id;
CREATE VIEW merged AS SELECT id, x FROM old JOIN tickets USING (id);
CREATE VIEW old_rows AS SELECT id, x FROM old WHERE x > 1;
CREATE VIEW sampled AS SELECT s.id FROM tickets s TABLESAMPLE BERNOULLI (5) REPEATABLE (1);
CREATE VIEW numbers AS SELECT g FROM generate_series(1, 3) g;
CREATE VIEW long_constant AS SELECT id, '%s' AS filler FROM tickets;
""" % ("x" * 120)  # a constant longer than a line of the server's parse tree dump


@needs_other_major
def test_a_view_reading_one_relation_is_written_as_the_source_writes_it(
    other_server: EmbeddedServer, tmp_path: Path
) -> None:
    bundled = _older_source_newer_shadow()
    _create_databases(other_server, "views_src", "views_restored")
    names = re.findall(r"CREATE VIEW (\w+)", VIEWS)
    source = make_source(other_server.conninfo("views_src"), [
        Change(VIEWS, at(1), objects=[("CREATE", "TABLE", "public", "tickets")] + [
            ("CREATE", "VIEW", "public", name) for name in names]),
    ], live_sql=VIEWS)
    repo = tmp_path / "repo"
    env = {**os.environ, "PGGIT_EXPORT_PG_BIN": str(bundled.bindir)}

    exported = cli("export", source, str(repo), env=env)

    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "view columns" in exported.stdout
    # Each file is the one the source's own server renders.
    with psycopg.connect(other_server.conninfo("views_src")) as live:
        own = render_snapshot(live)
    for name in names:
        assert git(repo, "show", f"main:public/{name}.sql") == own[
            ObjectKey("view", "public", name)], name
    assert "SELECT old_1.id," in own[ObjectKey("view", "public", "old_rows")]
    _restores_and_shows_no_drift(other_server.conninfo("views_restored"), repo, source)


@needs_other_major
def test_without_a_parser_the_report_says_view_columns_are_the_shadows(
    other_server: EmbeddedServer, pg_admin_dsn: str, tmp_path: Path
) -> None:
    # A --shadow-dsn of a plain role may not keep parse trees out of that server's log
    # (log_min_messages needs a superuser): its parser is not used, and the report says
    # what that leaves.
    assert OTHER is not None
    with psycopg.connect(pg_admin_dsn) as shadow_server:
        shadow_major = shadow_server.info.server_version // 10000
    if OTHER.major >= 16 or shadow_major < 16:
        pytest.skip("needs a source older than PostgreSQL 16 and a newer test server")
    role = f"plain_shadow_{uuid.uuid4().hex[:8]}"
    _create_databases(other_server, "plain_parser_src")
    view = "CREATE TABLE t (id int);\nCREATE VIEW v AS SELECT id FROM t;\n"
    source = make_source(other_server.conninfo("plain_parser_src"), [
        Change(view, at(1), objects=[("CREATE", "TABLE", "public", "t"),
                                     ("CREATE", "VIEW", "public", "v")]),
    ], live_sql=view)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        shadow = psycopg.conninfo.make_conninfo(pg_admin_dsn, user=role, dbname="postgres")
        result = cli("export", source, str(tmp_path / "repo"), "--shadow-dsn", shadow,
                     "--shadow-replay-as-owner")
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')

    assert result.returncode == 0, result.stdout + result.stderr
    assert "(a view reading one table has unqualified columns from PostgreSQL 16 on)" in (
        result.stderr)
    assert (f"files in PostgreSQL {OTHER.major}'s dialect for names and NOT NULL constraints,"
            ) in result.stdout
    assert "SELECT id\n   FROM public.t;" in git(tmp_path / "repo", "show", "main:public/v.sql")
