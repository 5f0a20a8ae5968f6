"""Mirroring an export into pgGit's v2 and audit tables, and verifying the mirror.

Every count and content is checked against the real git CLI, never against our own
reading of the repository.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import FIXTURES, dsn_for
from dulwich.object_format import SHA256
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from history import Change, append_changes, at, cli, git, make_source
from psycopg import sql

from pggit_export import ExportOptions, ProgressEvent, export_history
from pggit_export.demo import demo_history_sql
from pggit_export.mirror.verify import compare_columns, parse_table_file, verify_mirror
from pggit_export.mirror.write import (
    MIRROR_LOCK_KEY,
    MirrorError,
    MirrorOptions,
    mirror_repository,
)

V2_TABLES = ["objects", "refs", "HEAD", "commit_graph", "tree_entries", "merge_base_cache"]
AUDIT_TABLES = ["changes", "object_versions", "compliance_log"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def databases(pg_admin_dsn: str) -> Iterator[Callable[[str | None], str]]:
    """Factory: a new database, empty or copied from a template database; dropped at the end."""
    created: list[str] = []

    def make(template: str | None = None) -> str:
        name = f"m_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template or "template0")
            ))
        created.append(name)
        return name

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for name in reversed(created):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            ))


@pytest.fixture(scope="module")
def demo(
    databases: Callable[[str | None], str], pg_admin_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path]:
    """The demo source database's name (a template: never connected to) and its export."""
    name = databases(None)
    dsn = dsn_for(pg_admin_dsn, name)
    with psycopg.connect(dsn) as conn:
        conn.execute(demo_history_sql())  # type: ignore[arg-type]
    repo = tmp_path_factory.mktemp("demo") / "repo"
    report = export_history(dsn, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.clean
    return name, repo


@pytest.fixture
def demo_copy(
    demo: tuple[str, Path], databases: Callable[[str | None], str], pg_admin_dsn: str
) -> str:
    """A fresh copy of the demo source database (the usual mirror target), as a DSN."""
    return dsn_for(pg_admin_dsn, databases(demo[0]))


@pytest.fixture(scope="module")
def mirrored_demo(
    demo: tuple[str, Path], databases: Callable[[str | None], str], pg_admin_dsn: str
) -> str:
    """A copy of the demo source with the demo export mirrored into it (read-only use)."""
    dsn = dsn_for(pg_admin_dsn, databases(demo[0]))
    mirror_repository(demo[1], dsn)
    return dsn


def v2_fixture_sql(schema: str) -> str:
    return (FIXTURES / "pggit_v2_schema.sql").read_text().replace("__PGGIT_V2_SCHEMA__", schema)


def load_fixture_tables(dsn: str, v2_schema: str = "pggit_v2") -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(v2_fixture_sql(v2_schema))  # type: ignore[arg-type]
        conn.execute((FIXTURES / "pggit_audit_schema.sql").read_text())  # type: ignore[arg-type]


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    return rows(dsn, query, params)[0][0]


def git_objects(repo: Path, branch: str = "main") -> dict[str, tuple[str, int]]:
    """{id: (type, size)} of every object the branch reaches, from git itself.

    The branch, not the whole store: the export's git notes (refs/notes/pggit) are
    not part of the schema history that is mirrored.
    """
    ids = [line.split()[0] for line in git(repo, "rev-list", "--objects", branch).splitlines()]
    result = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-check"], input="\n".join(ids) + "\n",
        capture_output=True, text=True, check=True,
    )
    fields = (line.split() for line in result.stdout.splitlines())
    return {sha: (kind, int(size)) for sha, kind, size in fields}


def git_tree_entries(repo: Path) -> set[tuple[str, str, str, str]]:
    """(tree, path, mode, blob) for every tree of the repository, as `git ls-tree -r` lists."""
    entries = set()
    for sha, (kind, _) in git_objects(repo).items():
        if kind != "tree":
            continue
        for line in git(repo, "ls-tree", "-r", sha).splitlines():
            meta, path = line.split("\t", 1)
            mode, _, blob = meta.split()
            entries.add((sha, path, mode, blob))
    return entries


def git_hash(algorithm: str, kind: str, raw: bytes) -> str:
    return hashlib.new(algorithm, f"{kind} {len(raw)}\0".encode() + raw).hexdigest()


def assert_mirror_equals_git(repo: Path, dsn: str, schema: str = "pggit_v2") -> None:
    """objects, commit_graph and tree_entries hold exactly the repository, per the git CLI."""
    objects = git_objects(repo)
    table = rows(dsn, sql.SQL("SELECT sha, type, size FROM {}.objects").format(
        sql.Identifier(schema)).as_string())
    assert {sha: (kind, size) for sha, kind, size in table} == objects
    commits = git(repo, "rev-list", "main").split()
    assert len(commits) == int(git(repo, "rev-list", "--count", "main"))
    graph = rows(dsn, sql.SQL("SELECT commit_sha, parent_shas, tree_sha FROM {}.commit_graph")
                 .format(sql.Identifier(schema)).as_string())
    expected = {}
    for line in git(repo, "log", "--format=%H|%P|%T", "main").splitlines():
        sha, parents, tree = line.split("|")
        expected[sha] = (parents.split(), tree)
    assert {sha: (list(p), t) for sha, p, t in graph} == expected
    entries = rows(dsn, sql.SQL("SELECT tree_sha, path, mode, object_sha FROM {}.tree_entries")
                   .format(sql.Identifier(schema)).as_string())
    assert set(entries) == git_tree_entries(repo)


# --------------------------------------------------------------------------- DDL


_CATALOG_SQL = """
SELECT 'column', c.relname, a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = %(schema)s::text::regnamespace AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', c.relname, k.conname || ' ' || pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = %(schema)s::text::regnamespace
UNION ALL
SELECT 'index', i.tablename, i.indexdef FROM pg_indexes i WHERE i.schemaname = %(schema)s::text
UNION ALL
SELECT 'trigger', c.relname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = %(schema)s::text::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'function', p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = %(schema)s::text::regnamespace
ORDER BY 1, 2, 3
"""


def catalog(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    return rows(dsn, _CATALOG_SQL, {"schema": schema})


@pytest.mark.parametrize("v2_schema", ["pggit_v2", "pggit_v0"])
def test_fixture_ddl_and_created_tables_are_the_same(
    v2_schema: str, demo: tuple[str, Path], databases: Callable[[str | None], str],
    pg_admin_dsn: str,
) -> None:
    from_fixtures = dsn_for(pg_admin_dsn, databases(None))
    load_fixture_tables(from_fixtures, v2_schema)
    created = dsn_for(pg_admin_dsn, databases(None))
    report = mirror_repository(demo[1], created, MirrorOptions(v2_schema=v2_schema))
    assert report.created_schemas == [v2_schema, "pggit_audit"]
    assert report.created_tables == [f"{v2_schema}.{t}" for t in V2_TABLES] + [
        f"pggit_audit.{t}" for t in AUDIT_TABLES
    ]
    for schema in (v2_schema, "pggit_audit"):
        assert catalog(created, schema) == catalog(from_fixtures, schema)
    assert len(catalog(created, v2_schema)) > 30
    # The reference's shapes, spot-checked.
    columns = {(r[1], r[2]) for r in catalog(from_fixtures, v2_schema) if r[0] == "column"}
    assert ("commit_graph", "parent_shas text[] NOT NULL DEFAULT '{}'::text[]") in columns
    assert ("HEAD", "id integer NOT NULL DEFAULT 1") in columns


def test_compliance_log_refuses_update_and_delete(
    databases: Callable[[str | None], str], pg_admin_dsn: str
) -> None:
    dsn = dsn_for(pg_admin_dsn, databases(None))
    load_fixture_tables(dsn)
    with psycopg.connect(dsn) as conn:
        change = conn.execute(
            "INSERT INTO pggit_audit.changes (commit_sha, object_schema, object_name, "
            "object_type, change_type) VALUES ('x', 'public', 't', 'TABLE', 'CREATE') "
            "RETURNING change_id"
        ).fetchone()
        assert change is not None
        conn.execute(
            "INSERT INTO pggit_audit.compliance_log (change_id, verified_by, verification_status)"
            " VALUES (%s, 'auditor', 'PASSED')", (change[0],)
        )
    for statement in ("UPDATE pggit_audit.compliance_log SET verified_by = 'me'",
                      "DELETE FROM pggit_audit.compliance_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), \
                psycopg.connect(dsn) as conn:
            conn.execute(statement)
    assert scalar(dsn, "SELECT count(*) FROM pggit_audit.compliance_log") == 1


# --------------------------------------------------------------------------- mirroring


def test_mirror_into_existing_tables_keeps_their_rows(
    demo: tuple[str, Path], demo_copy: str
) -> None:
    repo = demo[1]
    load_fixture_tables(demo_copy)
    native = "f" * 64  # a pgGit-native id (SHA-256 over its own serialisation)
    with psycopg.connect(demo_copy) as conn:
        conn.execute("INSERT INTO pggit_v2.objects (sha, type, size, content) "
                     "VALUES (%s, 'blob', 5, 'hello')", (native,))
        conn.execute("INSERT INTO pggit_v2.refs VALUES ('feature', %s, 'branch')", (native,))
        conn.execute("""INSERT INTO pggit_v2."HEAD" (ref_name) VALUES ('feature')""")
        conn.execute(
            "INSERT INTO pggit_audit.changes (commit_sha, object_schema, object_name, "
            "object_type, change_type, new_definition) "
            "VALUES (%s, 'public', 'customers', 'TABLE', 'CREATE', 'old text')", (native,)
        )
        conn.execute(
            "INSERT INTO pggit_audit.object_versions (version_id, object_schema, object_name, "
            "version_number, definition, commit_sha, created_at) "
            "VALUES (gen_random_uuid(), 'public', 'customers', 1, 'old text', %s, now())",
            (native,),
        )
    tables = [f"pggit_v2.{t}" for t in ("objects", "refs", '"HEAD"')] + [
        f"pggit_audit.{t}" for t in ("changes", "object_versions")
    ]
    before = {t: rows(demo_copy, f"SELECT * FROM {t}") for t in tables}

    report = mirror_repository(repo, demo_copy)

    assert report.created_tables == [] and report.created_schemas == []
    for table, old_rows in before.items():
        now = set(rows(demo_copy, f"SELECT * FROM {table}"))
        assert set(old_rows) <= now, f"{table} lost or changed a row"
    assert rows(demo_copy, 'SELECT ref_name FROM pggit_v2."HEAD"') == [("feature",)]
    assert report.head_action == "unchanged" and report.warnings
    objects = git_objects(repo)
    assert report.objects_added == len(objects)
    assert report.commits_added == int(git(repo, "rev-list", "--count", "main")) == 58
    assert report.tree_entries_added == len(git_tree_entries(repo))
    assert report.ref_action == "created"
    assert rows(demo_copy, "SELECT target_sha, type FROM pggit_v2.refs WHERE name = 'main'") == [
        (git(repo, "rev-parse", "main").strip(), "branch")
    ]
    # Numbering continues after the version that was there.
    assert rows(
        demo_copy,
        "SELECT min(version_number) FROM pggit_audit.object_versions "
        "WHERE object_schema = 'public' AND object_name = 'customers' AND commit_sha <> %s",
        (native,),
    ) == [(2,)]
    result = verify_mirror(repo, demo_copy)
    assert result.ok, result.format_text()
    assert any("HEAD names ref 'feature'" in note for note in result.notes)
    # Apart from the rows that were there, exactly the repository.
    with psycopg.connect(demo_copy) as conn:
        conn.execute("DELETE FROM pggit_v2.refs WHERE name = 'feature'")
        conn.execute("DELETE FROM pggit_v2.objects WHERE sha = %s", (native,))
    assert_mirror_equals_git(repo, demo_copy)


def test_mirror_creates_missing_tables(
    demo: tuple[str, Path], databases: Callable[[str | None], str], pg_admin_dsn: str
) -> None:
    repo = demo[1]
    target = dsn_for(pg_admin_dsn, databases(None))  # not the source: no v1 tables
    progress: list[ProgressEvent] = []
    report = mirror_repository(repo, target, MirrorOptions(progress=progress.append))
    assert len(report.created_tables) == 9
    assert len(progress) == 58
    assert progress[-1] == ProgressEvent("mirror", 58, 58, "commits")
    assert report.head_action == "created"
    head = rows(target, 'SELECT id, ref_name, direct_sha FROM pggit_v2."HEAD"')
    assert head == [(1, "main", None)]
    assert_mirror_equals_git(repo, target)
    result = verify_mirror(repo, target)
    assert result.ok, result.format_text()
    assert result.column_check != "done"
    assert any("no pggit.history" in note for note in result.notes)
    assert report.to_dict()["commits_added"] == 58


def test_generation_is_distance_from_the_root(demo: tuple[str, Path], mirrored_demo: str) -> None:
    repo = demo[1]
    order = git(repo, "rev-list", "--reverse", "main").split()
    graph = dict(rows(mirrored_demo, "SELECT commit_sha, generation FROM pggit_v2.commit_graph"))
    assert [graph[sha] for sha in order] == list(range(len(order)))
    head = rows(mirrored_demo, "SELECT author, committer, authored_at, message "
                "FROM pggit_v2.commit_graph WHERE commit_sha = %s", (order[-1],))[0]
    log = git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%at", "main").strip().split("|")
    assert head[0] == log[0] and head[1] == log[1]
    assert head[2] == dt.datetime.fromtimestamp(int(log[2]), dt.timezone.utc).replace(tzinfo=None)
    assert head[3] == git(repo, "log", "-1", "--format=%B", "main").rstrip("\n") + "\n"


# --------------------------------------------------------------------------- pgGit-style SQL

# pgGit's diff_trees: a full outer join of two root trees' entries by path.
DIFF_TREES_SQL = """
WITH a AS (SELECT e.path, e.object_sha FROM pggit_v2.tree_entries e
           JOIN pggit_v2.commit_graph c ON c.tree_sha = e.tree_sha WHERE c.commit_sha = %(a)s),
     b AS (SELECT e.path, e.object_sha FROM pggit_v2.tree_entries e
           JOIN pggit_v2.commit_graph c ON c.tree_sha = e.tree_sha WHERE c.commit_sha = %(b)s)
SELECT CASE WHEN a.path IS NULL THEN 'A' WHEN b.path IS NULL THEN 'D' ELSE 'M' END,
       COALESCE(a.path, b.path)
FROM a FULL OUTER JOIN b USING (path)
WHERE a.object_sha IS DISTINCT FROM b.object_sha
ORDER BY 2
"""

BLOB_AT_SQL = """
SELECT o.content
FROM pggit_v2.commit_graph c
JOIN pggit_v2.tree_entries e ON e.tree_sha = c.tree_sha AND e.path = %(path)s
JOIN pggit_v2.objects o ON o.sha = e.object_sha
WHERE c.commit_sha = %(commit)s
"""


def test_sql_over_the_mirror_answers_like_git(demo: tuple[str, Path], mirrored_demo: str) -> None:
    repo = demo[1]
    commits = git(repo, "rev-list", "--reverse", "main").split()
    pairs = [(commits[i], commits[i + 1]) for i in range(len(commits) - 1)]
    pairs += [(commits[0], commits[-1]), (commits[10], commits[40]), (commits[-1], commits[5])]
    for a, b in pairs:
        expected = [
            tuple(line.split("\t"))
            for line in git(repo, "diff", "--no-renames", "--name-status", a, b).splitlines()
        ]
        assert rows(mirrored_demo, DIFF_TREES_SQL, {"a": a, "b": b}) == sorted(
            expected, key=lambda r: r[1]
        ), (a, b)
    for commit in (commits[3], commits[30], commits[-1]):
        for path in git(repo, "ls-tree", "-r", "--name-only", commit).split()[::7]:
            assert rows(mirrored_demo, BLOB_AT_SQL, {"path": path, "commit": commit}) == [
                (git(repo, "show", f"{commit}:{path}"),)
            ]
    # A subtree's entries are relative to it.
    tree = git(repo, "rev-parse", "main:public").strip()
    names = git(repo, "ls-tree", "-r", "--name-only", tree).split()
    assert sorted(r[0] for r in rows(
        mirrored_demo, "SELECT path FROM pggit_v2.tree_entries WHERE tree_sha = %s", (tree,)
    )) == sorted(names)
    assert "orders.sql" in names


def test_every_object_rehashes_to_its_id(demo: tuple[str, Path], mirrored_demo: str) -> None:
    checked = Counter()
    for sha, kind, size, content in rows(
        mirrored_demo, "SELECT sha, type, size, content FROM pggit_v2.objects"
    ):
        raw = base64.b64decode(content) if kind == "tree" else content.encode()
        assert len(raw) == size
        assert git_hash("sha1", kind, raw) == sha
        checked[kind] += 1
    assert checked == Counter(kind for kind, _ in git_objects(demo[1]).values())


def to_sha256(source: Path, target: Path) -> Path:
    """Rewrite a SHA-1 repository's history into a new SHA-256 repository (dulwich only)."""
    old = Repo(str(source))
    new = Repo.init(str(target), mkdir=True, object_format="sha256")
    ids: dict[bytes, bytes] = {}

    def add(obj: Blob | Tree | Commit) -> bytes:
        obj.object_format = SHA256  # before .id is first computed: it is cached
        new.object_store.add_object(obj)
        return obj.get_id(SHA256)

    def tree(sha: bytes) -> bytes:
        if sha not in ids:
            copy = Tree()
            for entry in old[sha].iteritems():  # type: ignore[union-attr]
                child = tree(entry.sha) if entry.mode == 0o040000 else blob(entry.sha)
                copy.add(entry.path, entry.mode, child)
            ids[sha] = add(copy)
        return ids[sha]

    def blob(sha: bytes) -> bytes:
        if sha not in ids:
            ids[sha] = add(Blob.from_string(old[sha].as_raw_string()))
        return ids[sha]

    head = None
    for line in git(source, "rev-list", "--reverse", "main").split():
        commit = old[line.encode()]
        assert isinstance(commit, Commit)
        copy = Commit()
        copy.tree = tree(commit.tree)
        copy.parents = [ids[p] for p in commit.parents]
        copy.author, copy.committer = commit.author, commit.committer
        copy.author_time, copy.commit_time = commit.author_time, commit.commit_time
        copy.author_timezone, copy.commit_timezone = commit.author_timezone, commit.commit_timezone
        copy.encoding = None
        copy.message = commit.message
        head = ids[commit.id] = add(copy)
    assert head is not None
    new.refs[b"refs/heads/main"] = head
    new.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
    new.close()
    return target


def test_sha256_repository(
    demo: tuple[str, Path], databases: Callable[[str | None], str], pg_admin_dsn: str,
    tmp_path: Path,
) -> None:
    repo = to_sha256(demo[1], tmp_path / "sha256")
    assert git(repo, "rev-parse", "--show-object-format").strip() == "sha256"
    git(repo, "fsck", "--strict")
    target = dsn_for(pg_admin_dsn, databases(demo[0]))
    report = mirror_repository(repo, target, MirrorOptions(v2_schema="pggit_v0"))
    assert report.object_format == "sha256"
    assert report.objects_added == len(git_objects(repo))
    assert_mirror_equals_git(repo, target, "pggit_v0")
    for sha, kind, content in rows(target, "SELECT sha, type, content FROM pggit_v0.objects"):
        assert len(sha) == 64
        raw = base64.b64decode(content) if kind == "tree" else content.encode()
        assert git_hash("sha256", kind, raw) == sha
    result = verify_mirror(repo, target, MirrorOptions(v2_schema="pggit_v0"))
    assert result.ok, result.format_text()
    assert result.column_check == "done" and result.history_rows_checked > 20


# --------------------------------------------------------------------------- idempotence


SMALL = [
    Change("CREATE TABLE users (id int PRIMARY KEY, name text);", at(1), "alice",
           [("CREATE", "TABLE", "public", "users"), ("CREATE", "INDEX", "public", "users_pkey")]),
    Change("CREATE VIEW names AS SELECT name FROM users;", at(2), "bob",
           [("CREATE", "VIEW", "public", "names")]),
    Change("ALTER TABLE users ADD COLUMN email text;", at(3), "alice",
           [("ALTER", "TABLE", "public", "users")]),
]
MORE = [
    Change("CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int);", at(4), "carol",
           [("CREATE", "TABLE", "billing", "invoices")]),
    Change("DROP VIEW names;", at(5), "bob", [("DROP", "VIEW", "public", "names")]),
    Change("ALTER TABLE users RENAME TO members;", at(6), "alice",
           [("ALTER", "TABLE", "public", "members")]),
]


def test_rerun_adds_nothing_and_incremental_adds_only_new_commits(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), SMALL)
    repo = tmp_path / "repo"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    first = mirror_repository(repo, source)
    assert first.commits_added == 3 and first.audit_changes_added > 0
    old_head = git(repo, "rev-parse", "main").strip()

    again = mirror_repository(repo, source)
    added = ("commits_added", "objects_added", "tree_entries_added", "audit_changes_added",
             "object_versions_added")
    assert [getattr(again, name) for name in added] == [0, 0, 0, 0, 0]
    assert again.commits_already_mirrored == 3 and again.ref_action == "unchanged"

    with psycopg.connect(source) as conn:
        append_changes(conn, MORE)
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    new_commits = git(repo, "rev-list", f"{old_head}..main").split()
    assert len(new_commits) == 3
    audit_before = rows(source, "SELECT change_id, commit_sha FROM pggit_audit.changes")

    third = mirror_repository(repo, source)
    assert third.commits_added == 3 and third.commits_already_mirrored == 3
    assert third.ref_action == "fast-forwarded"
    new_objects = git(repo, "rev-list", "--objects", "main", "--not", old_head).splitlines()
    assert third.objects_added == len(new_objects)
    audit_after = rows(source, "SELECT change_id, commit_sha FROM pggit_audit.changes")
    assert set(audit_before) < set(audit_after)
    assert {c for _, c in set(audit_after) - set(audit_before)} <= set(new_commits)
    expected_changes = sum(
        len(git(repo, "diff", "--name-status", f"{c}^", c).splitlines()) for c in new_commits
    )
    assert third.audit_changes_added == expected_changes
    assert_mirror_equals_git(repo, source)
    # The rename is a DROP of the old name and a CREATE of the new one.
    renamed = rows(source, "SELECT change_type, object_name FROM pggit_audit.changes "
                   "WHERE commit_sha = %s ORDER BY 1", (new_commits[0],))
    assert renamed == [("CREATE", "members"), ("DROP", "users")]
    assert verify_mirror(repo, source).ok


def test_ref_that_left_the_branch_is_not_moved(
    demo: tuple[str, Path], demo_copy: str
) -> None:
    load_fixture_tables(demo_copy)
    with psycopg.connect(demo_copy) as conn:
        conn.execute("INSERT INTO pggit_v2.objects VALUES (%s, 'blob', 1, 'x')", ("e" * 40,))
        conn.execute("INSERT INTO pggit_v2.refs VALUES ('main', %s, 'branch')", ("e" * 40,))
    with pytest.raises(MirrorError, match="refusing to move it"):
        mirror_repository(demo[1], demo_copy)
    assert scalar(demo_copy, "SELECT count(*) FROM pggit_v2.objects") == 1
    assert scalar(demo_copy, "SELECT count(*) FROM pggit_audit.changes") == 0


# --------------------------------------------------------------------------- audit


def test_audit_rows_follow_the_tree_diffs(demo: tuple[str, Path], mirrored_demo: str) -> None:
    repo = demo[1]
    commits = git(repo, "rev-list", "--reverse", "main").split()
    counts = dict(rows(mirrored_demo,
                       "SELECT commit_sha, count(*) FROM pggit_audit.changes GROUP BY 1"))
    for commit in commits:
        status = git(repo, "diff-tree", "-r", "--root", "--no-commit-id", "--name-status", commit)
        assert counts.get(commit, 0) == len(status.splitlines()), commit
    assert sum(counts.values()) == scalar(mirrored_demo, "SELECT count(*) FROM pggit_audit.changes")

    by_kind = dict(rows(mirrored_demo, """
        SELECT change_type, bool_and(
            CASE change_type
                WHEN 'CREATE' THEN old_definition IS NULL AND new_definition IS NOT NULL
                WHEN 'DROP' THEN new_definition IS NULL AND old_definition IS NOT NULL
                ELSE old_definition <> new_definition END
            AND backfilled_from_v1 AND NOT verified)
        FROM pggit_audit.changes GROUP BY 1"""))
    assert by_kind == {"CREATE": True, "ALTER": True, "DROP": True}
    types = dict(rows(mirrored_demo, """
        SELECT object_schema || '.' || object_name, object_type FROM pggit_audit.changes
        WHERE change_type = 'CREATE'"""))
    assert types["public.public"] == "SCHEMA"
    assert types["public.citext"] == "EXTENSION"
    assert types["public.orders"] == "TABLE"
    assert types["reporting.order_totals"] == "VIEW"
    assert types["billing.invoice_number_seq"] == "SEQUENCE"
    assert types["billing.price_band"] == "TYPE"
    assert types["billing.format_amount"] == "FUNCTION"
    first = rows(mirrored_demo, "SELECT author, committed_at, commit_message "
                 "FROM pggit_audit.changes WHERE commit_sha = %s LIMIT 1", (commits[1],))[0]
    log = git(repo, "log", "-1", "--format=%an|%at", commits[1]).strip().split("|")
    assert first[0] == log[0]
    assert first[1] == dt.datetime.fromtimestamp(int(log[1]), dt.timezone.utc).replace(tzinfo=None)
    assert first[2] == git(repo, "log", "-1", "--format=%B", commits[1]).rstrip("\n") + "\n"


def test_object_versions_count_on_across_drop_and_recreate(
    demo: tuple[str, Path], mirrored_demo: str
) -> None:
    repo = demo[1]
    order = {c: i for i, c in enumerate(git(repo, "rev-list", "--reverse", "main").split())}
    history = rows(mirrored_demo, """
        SELECT c.commit_sha, c.change_type, v.version_number, v.definition = c.new_definition
        FROM pggit_audit.changes c
        LEFT JOIN pggit_audit.object_versions v
          ON v.commit_sha = c.commit_sha AND v.object_schema = c.object_schema
         AND v.object_name = c.object_name
        WHERE c.object_schema = 'reporting' AND c.object_name = 'daily_sales'""")
    history.sort(key=lambda r: order[r[0]])
    kinds = [r[1] for r in history]
    assert kinds.count("DROP") >= 2 and kinds.count("CREATE") >= 3
    numbers = [r[2] for r in history if r[1] != "DROP"]
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(r[3] for r in history if r[1] != "DROP")
    assert all(r[2] is None for r in history if r[1] == "DROP")
    # Every object: 1, 2, 3... in history order, no gaps.
    for (numbers_in_order,) in rows(mirrored_demo, """
            SELECT array_agg(version_number ORDER BY version_number)
            FROM pggit_audit.object_versions GROUP BY object_schema, object_name"""):
        assert numbers_in_order == list(range(1, len(numbers_in_order) + 1))


# --------------------------------------------------------------------------- locking


@pytest.mark.timing
def test_second_mirror_waits_for_the_first(
    demo: tuple[str, Path], demo_copy: str
) -> None:
    holder = psycopg.connect(demo_copy, autocommit=True)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIRROR_LOCK_KEY,))
        with pytest.raises(MirrorError, match="another pggit-export mirror"):
            mirror_repository(demo[1], demo_copy, MirrorOptions(lock_timeout=0.3))

        outcome: dict[str, Any] = {}

        def run() -> None:
            outcome["report"] = mirror_repository(demo[1], demo_copy)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 10
        waiting: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline and not waiting:
            waiting = holder.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchall()
            time.sleep(0.05)
        assert waiting, "the second mirror is not waiting on the advisory lock"
        time.sleep(0.3)
        assert thread.is_alive()
        assert holder.execute("SELECT to_regclass('pggit_v2.objects')").fetchone() == (None,)
        holder.execute("COMMIT")
        thread.join(timeout=60)
        assert outcome["report"].commits_added == 58
    finally:
        holder.close()


# --------------------------------------------------------------------------- verify


def test_verify_reports_tampering(demo: tuple[str, Path], demo_copy: str) -> None:
    repo = demo[1]
    mirror_repository(repo, demo_copy)
    good = verify_mirror(repo, demo_copy)
    assert good.ok, good.format_text()
    assert good.objects_checked == len(git_objects(repo))
    assert good.column_check == "done" and good.history_rows_checked > 20
    assert good.column_mismatches == []
    assert good.format_text().endswith("OK")

    blob = git(repo, "rev-parse", "main:public/orders.sql").strip()
    with psycopg.connect(demo_copy) as conn:
        conn.execute("UPDATE pggit_v2.objects SET content = content || ' ' WHERE sha = %s", (blob,))
        conn.execute("DELETE FROM pggit_audit.changes WHERE change_id = "
                     "(SELECT change_id FROM pggit_audit.changes LIMIT 1)")
    bad = verify_mirror(repo, demo_copy)
    assert not bad.ok
    assert bad.problem_counts["objects"] == 1 and bad.problem_counts["audit"] == 1
    assert any(p.sha == blob and "hash" in p.message for p in bad.problems)
    assert "FAILED" in bad.format_text()
    assert bad.to_dict()["ok"] is False


def test_verify_finds_a_history_row_whose_columns_differ(
    demo: tuple[str, Path], demo_copy: str
) -> None:
    repo = demo[1]
    mirror_repository(repo, demo_copy)
    # The last recorded state of public.orders: rename one column in what v1 recorded.
    history_id = scalar(demo_copy, """
        SELECT max(h.id) FROM pggit.history h JOIN pggit.objects o ON o.id = h.object_id
        WHERE o.object_type = 'TABLE' AND o.schema_name = 'public' AND o.object_name = 'orders'
          AND h.change_type IN ('CREATE', 'ALTER') AND h.new_metadata ? 'columns'""")
    with psycopg.connect(demo_copy) as conn:
        conn.execute("""
            UPDATE pggit.history
            SET new_metadata = jsonb_set(
                new_metadata #- '{columns,placed_at}',
                '{columns,placed_on}', new_metadata #> '{columns,placed_at}')
            WHERE id = %s""", (history_id,))
    result = verify_mirror(repo, demo_copy)
    assert not result.ok
    assert [m.history_id for m in result.column_mismatches] == [history_id]
    mismatch = result.column_mismatches[0]
    assert mismatch.missing == ["placed_on"] and mismatch.unexpected == ["placed_at"]
    assert mismatch.path == "public/orders.sql"
    assert not result.problem_counts


def test_column_parsing_and_type_normalisation() -> None:
    text = (
        "CREATE SEQUENCE public.t_id_seq\n    AS integer;\n\n"
        "CREATE TABLE public.t (\n"
        "    id integer DEFAULT nextval('public.t_id_seq'::regclass) NOT NULL,\n"
        "    code character varying(16) COLLATE pg_catalog.\"C\",\n"
        "    \"Odd, name\" timestamp(3) with time zone DEFAULT '(,)'::text,\n"
        "    tags text[],\n    amount billing.money,\n"
        "    CONSTRAINT t_check CHECK ((id > 0))\n)\nINHERITS (public.base);\n"
    )
    table = parse_table_file(text)
    assert table is not None
    assert table.columns == {
        "id": "integer", "code": "character varying(16)",
        "Odd, name": "timestamp(3) with time zone", "tags": "text[]", "amount": "billing.money",
    }
    assert table.parents == ["public.base"]
    recorded = {
        "id": {"type": "int4"}, "code": {"type": "varchar(16)"},
        "Odd, name": {"type": "timestamptz"}, "tags": {"type": "_text"},
        "amount": {"type": "numeric"},
    }
    assert compare_columns(recorded, table.columns, {"money": "numeric(12,2)"}) == ([], [], [])
    recorded["code"] = {"type": "varchar(20)"}
    assert compare_columns(recorded, table.columns, {"money": "numeric(12,2)"})[2] == [
        "code: v1 varchar(20), file character varying(16)"
    ]


# --------------------------------------------------------------------------- unusual trees


ODD_NAMES = ["tab\there.txt", "back\\slash.txt", "new\nline.txt", "cr\rname.txt",
             "café.txt", "sp ace.txt"]


def _commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=Tester", "-c", "user.email=tester@example.com",
        "commit", "-q", "-m", message)


def _write(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)


def _git_ls_tree_r(repo: Path) -> set[tuple[str, str, str, str]]:
    """(tree, path, mode, blob) of every tree on main, from `git ls-tree -r -z`."""
    ids = git(repo, "rev-list", "--objects", "--no-object-names", "main").split()
    kinds = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input="\n".join(ids) + "\n", capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    entries = set()
    for line in filter(None, kinds):
        sha, kind = line.split()
        if kind != "tree":
            continue
        listing = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-z", sha],
                                 capture_output=True, check=True).stdout.decode()
        for record in filter(None, listing.split("\0")):
            meta, path = record.split("\t", 1)
            mode, _, blob = meta.split()
            entries.add((sha, path, mode, blob))
    return entries


def _odd_repo(repo: Path, commits: int) -> None:
    """A repository whose trees nest, repeat a subtree and hold names COPY must escape."""
    steps: list[Callable[[], None]] = [
        lambda: [
            *(_write(repo, f"odd/{name}", f"{name!r}\n") for name in ODD_NAMES),
            _write(repo, "deep/a/b/c.txt", "c\n"), _write(repo, "deep/a/d.txt", "d\n"),
            _write(repo, "copy1/x.txt", "same\n"), _write(repo, "copy2/x.txt", "same\n"),
            _write(repo, "public/users.sql", "CREATE TABLE public.users (\n    id integer\n);\n"),
            _write(repo, "run.sh", "#!/bin/sh\n"), (repo / "run.sh").chmod(0o755),
            (repo / "link").symlink_to("deep/a/d.txt"),
        ],
        lambda: _write(repo, "deep/a/b/c.txt", "c, changed\n"),
        lambda: _write(repo, "public/orders.sql", "CREATE TABLE public.orders (\n    id integer\n);\n"),
        lambda: (repo / "copy2").rename(repo / "copy3"),
        lambda: _write(repo, f"odd/{ODD_NAMES[0]}", "changed\n"),
        lambda: _write(repo, "deep/e/f.txt", "f\n"),
    ]
    done = len(git(repo, "rev-list", "--all").split()) if (repo / ".git").exists() else 0
    if not done:
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "main")
    for number in range(done, commits):
        steps[number]()
        _commit_all(repo, f"step {number}")


def test_nested_shared_and_oddly_named_trees_mirror_like_ls_tree(
    make_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pggit_export.mirror.write as mirror_module

    monkeypatch.setattr(mirror_module, "BATCH_COMMITS", 2)  # several batches per run
    repo = tmp_path / "odd"
    target = make_database()
    _odd_repo(repo, 3)
    first = mirror_repository(repo, target)
    assert first.commits_added == 3
    assert set(rows(target, "SELECT * FROM pggit_v2.tree_entries")) == _git_ls_tree_r(repo)
    assert first.tree_entries_added == len(_git_ls_tree_r(repo))

    _odd_repo(repo, 6)  # incremental: keys exist now, old subtrees are reused
    second = mirror_repository(repo, target)
    assert second.commits_added == 3 and second.commits_already_mirrored == 3
    expected = _git_ls_tree_r(repo)
    assert set(rows(target, "SELECT * FROM pggit_v2.tree_entries")) == expected
    assert first.tree_entries_added + second.tree_entries_added == len(expected)
    paths = {path for _, path, _, _ in expected}
    assert {"odd/new\nline.txt", "odd/tab\there.txt", "odd/café.txt", "link"} <= paths
    assert {("run.sh", "100755"), ("link", "120000")} <= {(p, m) for _, p, m, _ in expected}
    result = verify_mirror(repo, target)
    assert result.ok, result.format_text()


def test_mirror_into_a_latin1_database(pg_admin_dsn: str, tmp_path: Path) -> None:
    repo = tmp_path / "odd"
    _odd_repo(repo, 6)
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
        ).format(sql.Identifier(name)))
    try:
        target = dsn_for(pg_admin_dsn, name)
        mirror_repository(repo, target)
        assert set(rows(target, "SELECT * FROM pggit_v2.tree_entries")) == _git_ls_tree_r(repo)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_submodule_is_refused(make_database: Callable[[], str], tmp_path: Path) -> None:
    repo = tmp_path / "sub"
    _odd_repo(repo, 1)
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},vendor/lib")
    git(repo, "-c", "user.name=Tester", "-c", "user.email=tester@example.com",
        "commit", "-q", "-m", "a submodule")
    target = make_database()
    with pytest.raises(MirrorError, match="submodule"):
        mirror_repository(repo, target)
    assert scalar(target, "SELECT to_regclass('pggit_v2.objects') IS NULL")


def test_mirror_stays_out_of_pggit_history(
    demo: tuple[str, Path], databases: Callable[[str | None], str], pg_admin_dsn: str
) -> None:
    """pgGit's event triggers would record the mirror's CREATE TABLEs as history rows,
    which the next export would commit: the mirror's DDL runs unseen by them."""
    repo = demo[1]
    target = dsn_for(pg_admin_dsn, databases(None))
    for name in ("pggit_v1_schema.sql", "v1_capture.sql"):
        with psycopg.connect(target) as conn:
            conn.execute((FIXTURES / name).read_text("utf-8"))  # type: ignore[arg-type]
    with psycopg.connect(target) as conn:  # the capture works: a table of ours is recorded
        conn.execute("CREATE TABLE public.recorded (id int)")
    before = rows(target, "SELECT count(*) FROM pggit.history")[0][0]
    assert before > 0
    result = cli("mirror", str(repo), target, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["created_tables"]) == 9 and report["commits_added"] == 58
    assert rows(target, "SELECT count(*) FROM pggit.history")[0][0] == before
    assert not report["warnings"] and not result.stderr
    assert_mirror_equals_git(repo, target)
