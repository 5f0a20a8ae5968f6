"""Exporting: a v1 history becomes a git history, checked with the real git CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, append_changes, at, cli, git, make_source

from pggit_export import ExportOptions, ProgressEvent, export_history
from pggit_export.render.snapshot import render_snapshot
from pggit_export.restore import load_files

SHOP = [
    Change(
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);",
        at(1, 9), "alice",
        [("CREATE", "TABLE", "public", "users"), ("CREATE", "INDEX", "public", "users_pkey")],
    ),
    # A batch (one text, one transaction) with DML and transaction control mixed in:
    # v1 wrote one row per object, all with the same text, time and user.
    Change(
        "BEGIN;\nCREATE SCHEMA billing;\n"
        "CREATE TABLE billing.invoices (id int PRIMARY KEY, user_id int REFERENCES users(id));\n"
        "CREATE TABLE billing.lines (invoice_id int, amount numeric(10,2));\n"
        "INSERT INTO users (name) VALUES ('seed');\nCOMMIT;",
        at(2, 10), "bob",
        [
            ("CREATE", "TABLE", "billing", "invoices"),
            ("CREATE", "INDEX", "billing", "invoices_pkey"),
            ("ALTER", "TABLE", "billing", "invoices"),
            ("CREATE", "TABLE", "billing", "lines"),
        ],
    ),
    Change("ALTER TABLE users ADD COLUMN email text;", at(3, 11), "alice",
           [("ALTER", "TABLE", "public", "users")]),
    Change("CREATE VIEW user_emails AS SELECT id, email FROM users;", at(4), "carol",
           [("CREATE", "VIEW", "public", "user_emails")]),
    Change("UPDATE users SET email = name || '@example.com';", at(5), "alice",
           [("ALTER", "TABLE", "public", "users")]),
    Change("DROP VIEW user_emails;", at(6), "carol", [("DROP", "VIEW", "public", "user_emails")]),
]


def export(source: str, repo: Path, shadow: str, **kw: object) -> object:
    return export_history(source, repo, ExportOptions(shadow_dsn=shadow, **kw))  # type: ignore[arg-type]


@pytest.fixture
def shop_source(make_database: Callable[[], str]) -> str:
    return make_source(make_database(), SHOP)


def test_one_commit_per_changeset_with_authors_and_dates(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    events: list[ProgressEvent] = []
    report = export(shop_source, repo, pg_admin_dsn, progress=events.append)
    assert report.commits_written == len(SHOP)
    assert report.rows_exported == report.history_rows == 10
    # One progress event per changeset: rows done of all, and changesets done.
    assert [e.changesets for e in events] == list(range(1, len(SHOP) + 1))
    assert events[-1] == ProgressEvent("export", 10, 10, "history rows", changesets=len(SHOP))
    git(repo, "fsck", "--strict")
    log = git(repo, "log", "--reverse", "--format=%an|%ae|%aI|%cn|%cI|%s").splitlines()
    assert len(log) == len(SHOP)
    first = log[0].split("|")
    assert first[:5] == [
        "alice", "alice@pggit.invalid", "2024-01-01T09:00:00+00:00", "alice",
        "2024-01-01T09:00:00+00:00",
    ]
    assert [line.split("|")[0] for line in log] == [c.user for c in SHOP]
    assert first[5] == "Create table public.users"
    assert log[1].split("|")[5] == "Create schema billing with 2 tables"
    assert log[2].split("|")[5] == "Add column email to public.users"
    assert log[3].split("|")[5] == "Create view public.user_emails"
    assert "|".join(log[4].split("|")[5:]) == (  # the subject holds `||`
        "Run UPDATE users SET email = name || '@example.com'; (no schema change)")
    assert log[5].split("|")[5] == "Drop view public.user_emails"


def test_tree_holds_one_file_per_object_at_each_point(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    export(shop_source, repo, pg_admin_dsn)
    commits = git(repo, "rev-list", "--reverse", "main").split()
    assert git(repo, "ls-tree", "-r", "--name-only", commits[1]).split() == [
        "billing/_schema.sql", "billing/invoices.sql", "billing/lines.sql",
        "public/_schema.sql", "public/users.sql",
    ]
    assert "email" not in git(repo, "show", f"{commits[1]}:public/users.sql")
    assert "email text" in git(repo, "show", f"{commits[2]}:public/users.sql")
    assert "public/user_emails.sql" in git(repo, "ls-tree", "-r", "--name-only", commits[3])
    assert "public/user_emails.sql" not in git(repo, "ls-tree", "-r", "--name-only", commits[5])
    # The foreign key comes after the table, as ALTER TABLE, in the referencing table's file.
    invoices = git(repo, "show", f"{commits[1]}:billing/invoices.sql")
    assert invoices.index("CREATE TABLE billing.invoices") < invoices.index("FOREIGN KEY")
    # A normal repository: the working tree shows the head snapshot.
    assert (repo / "public" / "users.sql").read_text() == git(repo, "show", "main:public/users.sql")
    assert git(repo, "status", "--porcelain") == ""
    # git's own tools work on the history.
    follow = git(repo, "log", "--follow", "-p", "--format=%s", "public/users.sql")
    assert "+    email text" in follow
    assert git(repo, "diff", "--name-status", commits[0], commits[1], "--", "billing/").split() == [
        "A", "billing/_schema.sql", "A", "billing/invoices.sql", "A", "billing/lines.sql",
    ]


def test_message_holds_sql_and_history_ids(shop_source: str, pg_admin_dsn: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export(shop_source, repo, pg_admin_dsn)
    second = git(repo, "rev-list", "--reverse", "main").split()[1]
    body = git(repo, "log", "-1", "--format=%B", second)
    assert "CREATE TABLE billing.lines (invoice_id int, amount numeric(10,2));" in body
    assert git(repo, "log", "-1", "--format=%(trailers:key=Pggit-History-Ids,valueonly)",
               second).strip() == "3-6"
    all_ids = git(repo, "log", "--format=%(trailers:key=Pggit-History-Ids,valueonly)").split()
    assert sorted(all_ids) == sorted(["1-2", "3-6", "7", "8", "9", "10"])


def test_same_history_exported_twice_gives_same_commit_ids(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    first = export(shop_source, tmp_path / "a", pg_admin_dsn)
    second = export(shop_source, tmp_path / "b", pg_admin_dsn, bare=True)
    assert first.head == second.head
    assert git(tmp_path / "b", "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(tmp_path / "a", "rev-list", "main") == git(tmp_path / "b", "rev-list", "main")


def test_snapshot_files_recreate_the_schema(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path, make_database: Callable[[], str]
) -> None:
    repo = tmp_path / "repo"
    export(shop_source, repo, pg_admin_dsn)
    for rev in git(repo, "rev-list", "main").split():
        paths = git(repo, "ls-tree", "-r", "--name-only", rev).split()
        files = {p: git(repo, "show", f"{rev}:{p}") for p in paths}
        with psycopg.connect(make_database()) as conn:
            result = load_files(conn, dict(reversed(list(files.items()))))
            assert result.failures == []
            rendered = render_snapshot(conn)
        from pggit_export.render.layout import snapshot_files

        assert snapshot_files(rendered) == files


def test_failed_changeset_is_committed_and_reported(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);", at(1)),
        Change("ALTER TABLE missing ADD COLUMN x int;\nCREATE TABLE b (id int);", at(2), "bob",
               [("ALTER", "TABLE", "public", "missing"), ("CREATE", "TABLE", "public", "b")]),
        Change("CREATE TABLE c (id int);", at(3)),
    ])
    repo = tmp_path / "repo"
    report = export(source, repo, pg_admin_dsn)
    assert report.commits_written == 3
    [failed] = report.failed
    assert failed.history_ids == [2, 3]
    assert "relation \"missing\" does not exist" in (failed.error or "")
    assert failed.statement == "ALTER TABLE missing ADD COLUMN x int;"
    # The failed changeset rolled back whole: b does not exist after it, its tree is unchanged.
    commits = git(repo, "rev-list", "--reverse", "main").split()
    assert git(repo, "rev-parse", f"{commits[1]}^{{tree}}") == git(
        repo, "rev-parse", f"{commits[0]}^{{tree}}")
    message = git(repo, "log", "-1", "--format=%B", commits[1])
    assert message.startswith("Alter table missing (replay failed)\n")
    assert "Pggit-Replay: failed" in message
    assert "42P01" in message
    assert "public/c.sql" in git(repo, "ls-tree", "-r", "--name-only", "main")
    git(repo, "fsck", "--strict")


def test_repeated_text_in_separate_transactions_is_replayed_each_time(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # psql -f: the same statement text can recur later; only consecutive rows group.
    drop = "DROP TABLE IF EXISTS t;"
    create = "CREATE TABLE t (id int);"
    source = make_source(make_database(), [
        Change(create, at(1)),
        Change(drop, at(2), objects=[("DROP", "TABLE", "public", "t")]),
        Change(create, at(3)),
        Change(drop, at(4), objects=[("DROP", "TABLE", "public", "t")]),
    ])
    repo = tmp_path / "repo"
    report = export(source, repo, pg_admin_dsn)
    assert report.commits_written == 4 and report.clean
    subjects = git(repo, "log", "--reverse", "--format=%s").splitlines()
    assert subjects[1:] == ["Drop table public.t", "Create table public.t", "Drop table public.t"]


def test_rerun_continues_and_matches_a_single_run(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    first_part, second_part = SHOP[:3], SHOP[3:]
    incremental = make_source(make_database(), first_part)
    export(incremental, tmp_path / "inc", pg_admin_dsn)
    again = export(incremental, tmp_path / "inc", pg_admin_dsn)
    assert again.commits_written == 0 and again.resumed_after_id == 7
    with psycopg.connect(incremental) as conn:
        append_changes(conn, second_part)
    resumed = export(incremental, tmp_path / "inc", pg_admin_dsn)
    assert resumed.commits_written == len(second_part)
    whole = export(make_source(make_database(), SHOP), tmp_path / "whole", pg_admin_dsn)
    assert resumed.head == whole.head
    git(tmp_path / "inc", "fsck", "--strict")
    assert git(tmp_path / "inc", "status", "--porcelain") == ""


def test_private_shadow_by_default(shop_source: str, tmp_path: Path) -> None:
    report = export_history(shop_source, tmp_path / "repo")
    assert report.commits_written == len(SHOP)
    assert "embedded" in report.shadow


def test_authors_file_maps_database_users(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    from pggit_export.git.authors import AuthorsFileError, read_authors_file

    authors = tmp_path / "authors.txt"
    authors.write_text("# who is who\nalice = Alice Liddell <alice@example.com>\n\n"
                       "bob = Bob Builder <bob@example.org>\n")
    repo = tmp_path / "repo"
    export(shop_source, repo, pg_admin_dsn, authors=read_authors_file(authors))
    people = git(repo, "log", "--reverse", "--format=%an <%ae>").splitlines()
    assert people[:3] == ["Alice Liddell <alice@example.com>", "Bob Builder <bob@example.org>",
                          "Alice Liddell <alice@example.com>"]
    assert people[3] == "carol <carol@pggit.invalid>"  # not in the file: the default mapping
    authors.write_text("alice: Alice\n")
    with pytest.raises(AuthorsFileError, match="authors.txt:1: expected"):
        read_authors_file(authors)


def test_each_commit_has_a_note_with_its_v1_rows(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    import json

    repo = tmp_path / "repo"
    export(shop_source, repo, pg_admin_dsn)
    for rev in git(repo, "rev-list", "main").split():
        rows = json.loads(git(repo, "notes", "--ref=pggit", "show", rev))
        ids = git(repo, "log", "-1", "--format=%(trailers:key=Pggit-History-Ids,valueonly)", rev)
        from pggit_export.git.message import parse_id_ranges

        assert [row["id"] for row in rows] == parse_id_ranges(ids.strip())
        assert {"sql_executed", "created_by", "change_type", "object_id"} <= set(rows[0])
    git(repo, "fsck", "--strict")


def test_sha256_repository_with_mirror_and_verify(
    shop_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    from pggit_export.mirror.verify import verify_mirror
    from pggit_export.mirror.write import mirror_repository

    repo = tmp_path / "repo"
    report = export(shop_source, repo, pg_admin_dsn, object_format="sha256")
    head = git(repo, "rev-parse", "main").strip()
    assert len(head) == 64 and report.head == head
    assert git(repo, "rev-parse", "--show-object-format").strip() == "sha256"
    git(repo, "fsck", "--strict")
    assert git(repo, "status", "--porcelain") == ""
    assert "email text" in git(repo, "show", "main:public/users.sql")
    # Deterministic in sha256 too, and a rerun continues the same repository.
    again = export(shop_source, tmp_path / "again", pg_admin_dsn, object_format="sha256")
    assert again.head == head
    assert export(shop_source, repo, pg_admin_dsn).commits_written == 0
    mirrored = mirror_repository(repo, shop_source)
    assert mirrored.object_format == "sha256" and mirrored.commits_added == len(SHOP)
    assert verify_mirror(repo, shop_source).ok


def test_one_commit_per_transaction_by_default_or_per_statement(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # A migration run with psql -1 -f: one transaction, so one created_at for every row, but
    # one text per statement (the second text ends in a comment, with no semicolon).
    from history import cli

    migration = [
        Change("CREATE TABLE a (id int);", at(2), objects=[("CREATE", "TABLE", "public", "a")]),
        Change("CREATE TABLE b (id int) -- the second table", at(2),
               objects=[("CREATE", "TABLE", "public", "b")]),
        Change("CREATE INDEX a_id ON a (id);", at(2), objects=[("CREATE", "INDEX", "public", "a_id")]),
    ]
    source = make_source(make_database(), [
        *migration,
        Change("CREATE INDEX b_id ON b (id);", at(3), objects=[("CREATE", "INDEX", "public", "b_id")]),
    ])
    per_transaction, per_statement = tmp_path / "tx", tmp_path / "st"

    first = cli("export", source, str(per_transaction))
    second = cli("export", "--commit-per", "statement", source, str(per_statement))

    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    assert git(per_transaction, "rev-list", "--count", "main").strip() == "2"
    assert git(per_statement, "rev-list", "--count", "main").strip() == "4"
    body = git(per_transaction, "log", "-1", "--format=%B", "main~1")
    assert "Pggit-History-Ids: 1-3" in body
    assert "CREATE TABLE b (id int) -- the second table\n;\nCREATE INDEX a_id" in body
    assert "Pggit-Replay" not in body
    assert {"public/a.sql", "public/b.sql"} <= set(
        git(per_transaction, "ls-tree", "-r", "--name-only", "main~1").split())
    assert git(per_transaction, "show", "main:public/b.sql") == git(
        per_statement, "show", "main:public/b.sql")


def test_commit_messages_carry_no_shadow_oids(make_database: Callable[[], str]) -> None:
    # A real PostgreSQL message naming an object by its OID-made name: a rebuilt shadow
    # (a resumed export) would print another number, and the commit would get another id.
    import uuid

    from pggit_export.git.message import without_shadow_oids

    dsn = make_database()
    owner = f"oid_test_{uuid.uuid4().hex[:8]}"  # roles are the whole test server's
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE child (id int REFERENCES parent)")
        conn.execute(f"CREATE ROLE {owner} NOLOGIN")  # type: ignore[arg-type]
        conn.execute(f"ALTER TABLE child OWNER TO {owner}")  # type: ignore[arg-type]
        row = conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'child'::regclass "
                           "AND tgisinternal LIMIT 1").fetchone()
        assert row is not None
        conn.execute(f"SET ROLE {owner}")  # type: ignore[arg-type]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f'ALTER TABLE child DISABLE TRIGGER "{row[0]}"')  # type: ignore[arg-type]
        conn.execute("RESET ROLE")
        conn.execute("DROP TABLE child")
        conn.execute(f"DROP ROLE {owner}")  # type: ignore[arg-type]
    message = str(caught.value)
    assert row[0] in message and row[0].rsplit("_", 1)[1].isdigit()
    assert without_shadow_oids(message) == message.replace(
        row[0], row[0].rsplit("_", 1)[0] + "_<oid>")
    assert without_shadow_oids("relation with OID 16384 does not exist") == (
        "relation with OID <oid> does not exist")


def test_subjects_say_the_main_change_imperatively_and_count_the_rest(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE a (id int);\nCREATE TABLE b (id int);", at(1),
               objects=[("CREATE", "TABLE", "public", "a"), ("CREATE", "TABLE", "public", "b")]),
        Change("ALTER TABLE a RENAME TO accounts;", at(2),
               objects=[("ALTER", "TABLE", "public", "accounts")]),
        Change("CREATE VIEW v AS SELECT id FROM b;\nCREATE TABLE c (id int);\n"
               "ALTER TABLE b ADD COLUMN note text;", at(3),
               objects=[("CREATE", "VIEW", "public", "v"), ("CREATE", "TABLE", "public", "c"),
                        ("ALTER", "TABLE", "public", "b")]),
        Change("ALTER TABLE c ADD COLUMN x int, ADD COLUMN y int;", at(4),
               objects=[("ALTER", "TABLE", "public", "c")]),
        Change("CREATE SCHEMA app;\nALTER TABLE c SET SCHEMA app;", at(5),
               objects=[("ALTER", "TABLE", "app", "c")]),
        Change("ALTER TABLE b RENAME TO bills;\nCREATE VIEW w AS SELECT 1 AS one;", at(6),
               objects=[("ALTER", "TABLE", "public", "bills"), ("CREATE", "VIEW", "public", "w")]),
    ])
    repo = tmp_path / "repo"
    export(source, repo, pg_admin_dsn)
    assert git(repo, "log", "--reverse", "--format=%s").splitlines() == [
        "Create table public.a and 1 more table",
        "Rename table public.a to accounts",
        "Create table public.c and 2 more changes",
        "Add column x to public.c and 1 more change",
        "Move table public.c to new schema app",
        "Rename table public.b to bills and 2 more changes",  # view w made, view v altered
    ]


def test_an_older_pggit_history_without_optional_columns_exports(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int)", at(1)),
        Change("ALTER TABLE t ADD COLUMN x int", at(2), objects=[("ALTER", "TABLE", "public", "t")]),
    ])
    with psycopg.connect(source) as conn:  # what older pgGit versions did not have
        conn.execute("ALTER TABLE pggit.history DROP COLUMN new_metadata,"
                     " DROP COLUMN change_severity, DROP COLUMN change_description")
        conn.execute("ALTER TABLE pggit.objects DROP COLUMN is_active")
    check = cli("check", source, "--shadow-dsn", pg_admin_dsn)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "info: unused-column (4)" in check.stdout
    assert "pggit.history has no column new_metadata: not used" in check.stdout
    repo = tmp_path / "repo"
    export = cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn)
    assert export.returncode == 0, export.stderr
    assert "pggit.objects has no column is_active" in export.stdout
    message = git(repo, "log", "-1", "--format=%B")
    assert "Pggit-Change-Types: ALTER (1)" in message and "Pggit-Severity" not in message
    assert git(repo, "show", "main:public/t.sql").count(" int") == 2
    git(repo, "fsck", "--strict")

    with psycopg.connect(source) as conn:  # one it cannot do without
        conn.execute("ALTER TABLE pggit.history DROP COLUMN created_by")
    for command in (["check", source], ["export", source, str(tmp_path / "other")]):
        failed = cli(*command)
        assert failed.returncode == 3, failed.stderr
        assert failed.stderr.strip().splitlines() == [
            "pggit-export: error: the source's pgGit tables lack pggit.history.created_by: "
            "without it the history cannot be read"]


def test_schema_and_exclude_schema_choose_what_is_exported(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE users (id int PRIMARY KEY, name text)", at(1),
               objects=[("CREATE", "TABLE", "public", "users")]),
        Change("CREATE SCHEMA billing; CREATE TABLE billing.invoices"
               " (id int, user_id int REFERENCES public.users)", at(2),
               objects=[("CREATE", "TABLE", "billing", "invoices")]),
        # A billing view over a public table: public must replay although not exported.
        Change("CREATE VIEW billing.customers AS SELECT id, name FROM public.users", at(3),
               objects=[("CREATE", "VIEW", "billing", "customers")]),
        Change("ALTER TABLE users ADD COLUMN email text", at(4),
               objects=[("ALTER", "TABLE", "public", "users")]),
    ])
    only = tmp_path / "only-billing"
    result = cli("export", source, str(only), "--shadow-dsn", pg_admin_dsn, "-n", "billing")
    assert result.returncode == 0, result.stderr
    assert git(only, "ls-tree", "-r", "--name-only", "main").split() == [
        "billing/_schema.sql", "billing/customers.sql", "billing/invoices.sql"]
    # Every history row is still in a commit; the public-only ones change nothing here.
    subjects = git(only, "log", "--format=%s", "--reverse", "main").splitlines()
    assert len(subjects) == 4 and subjects[2] == "Create view billing.customers", subjects
    assert subjects[0].endswith("(no schema change)") and subjects[3].endswith(
        "(no schema change)"), subjects
    without = tmp_path / "without-billing"
    result = cli("export", source, str(without), "--shadow-dsn", pg_admin_dsn,
                 "--exclude-schema", "billing")
    assert result.returncode == 0, result.stderr
    assert git(without, "ls-tree", "-r", "--name-only", "main").split() == [
        "public/_schema.sql", "public/users.sql"]
    assert "email text" in git(without, "show", "main:public/users.sql")
