"""Stage 5: mirror an exported repository into pgGit's v2 tables and its audit tables.

What goes where (the table shapes are pgGit's, see fixtures/pggit_v2_schema.sql and
fixtures/pggit_audit_schema.sql; missing schemas and tables are created with that DDL):

* ``<v2>.objects``: every object reachable from the branch, under its real git id (SHA-1,
  or SHA-256 in a SHA-256 repository). ``content`` is the blob's text, the commit's raw
  text, or for a tree the base64 of git's binary tree encoding; ``size`` is the length in
  bytes of the raw object (what ``git cat-file -s`` prints), so hashing
  ``"<type> <size>\\0" + raw`` gives the id back.
* ``<v2>.tree_entries``: for every tree (root and subtrees alike) the blobs under it as
  ``git ls-tree -r <tree>`` lists them: path relative to that tree, mode as octal text
  (``100644``), blob id. Subtrees themselves are not rows, as in ``ls-tree -r``.
* ``<v2>.commit_graph``: one row per commit. ``generation`` is the distance from the root:
  a root commit is 0, any other commit is 1 + the largest generation of its parents.
  ``author``/``committer`` are ``Name <email>``; times are UTC (``timestamp``).
* ``<v2>.refs``: the branch under its short name (``main``), type ``branch``, as pgGit
  names its branches. ``<v2>."HEAD"``: row 1 naming that ref, written only when the table
  has no row (an existing HEAD is the target's choice and is left alone).
* ``<audit>.changes``: one row per object a commit created, altered or dropped, against
  its first parent (a root commit against the empty tree); ``backfilled_from_v1`` true.
* ``<audit>.object_versions``: each CREATE/ALTER's new definition, numbered per
  (object_schema, object_name) from 1 up; a dropped and re-created object keeps counting.

Objects are diffed by identity, not by path: each file decodes to (schema, name, type)
(``layout.decode_name``; ``<schema>/_schema.sql`` is the schema itself, named after it;
the type comes from the kind suffix of ``users.table.sql``, else from the file's CREATE
statement). For the files pggit-export writes this is exactly the file-by-file
``git diff --name-status``, with two exceptions that are deliberate: a file renamed by the
layout when a name clash appears (``users.sql`` -> ``users.table.sql``) is the same object
(an ALTER if its text changed, else nothing), and a path whose object changes kind (a view
replaced by a table) is a DROP plus a CREATE. A table rename is a DROP plus a CREATE.
Files outside ``<dir>/<file>.sql`` are mirrored into the v2 tables but are not objects.

Rules of a run:

* Idempotent and incremental. Commits already in ``commit_graph`` are skipped entirely
  (their objects, entries and audit rows are there since the run that added them); only
  the new commits' rows are written. Object and tree-entry rows shared with earlier
  commits are inserted with ON CONFLICT DO NOTHING. Existing rows are never changed or
  deleted, with one exception: the branch's ``refs`` row is fast-forwarded to the new tip.
  A ref that points somewhere that is not on the branch's history is never moved: the run
  stops before writing anything.
* One transaction for the whole run; rows go through COPY into temporary tables, then one
  INSERT ... SELECT per table and batch (``BATCH_COMMITS`` commits, or ``BATCH_BYTES`` of
  text), so the cost is a few statements per few hundred commits, never a round trip per
  row. Python holds at most two batches (the one being read, the one being inserted),
  never the rows of the whole run.
* tree_entries rows are made by the server, not sent. For each new tree the batch sends
  its walk: one row per tree at or below it, with that tree's path prefix (``""`` for
  itself, ``public/`` for a schema directory), and, once per batch, the entries of each
  tree a walk names (``pggit_mirror_levels``: name, mode, id, one level deep, subtrees
  included and then left out). One INSERT ... SELECT joins walks to levels: a root
  tree's ``ls-tree -r`` rows are its subtrees' entries behind their prefixes. What
  travels is the entries of new trees (a schema directory's few hundred files for each
  new version of it) instead of every root tree's full listing: on the 20,001-commit
  benchmark, 6.2 million level rows and 165,000 walk rows instead of 24.6 million entry
  rows (the table's rows are the same: ``git ls-tree -r`` of every tree).
* When this run creates tree_entries, the table gets its primary key and foreign keys
  after the rows are in (one index build, one validating scan per key, instead of a
  B-tree insert and two key lookups per row); the catalog ends up the same as the DDL's.
  An existing table keeps its keys, and the INSERT's ON CONFLICT DO NOTHING applies.
* Reading and writing overlap: this thread reads a batch from git and COPYs it; a second
  thread runs the batch's INSERT ... SELECT statements while this one reads the next.
  Objects are read from git's packs directly, searching first the pack that held the
  last object read (an export writes a pack per 200 commits, and dulwich alone tries
  them in the order it opened them), and trees are parsed once (``GitReader.entries``).
* Two mirrors into one database never interleave: the transaction first takes
  ``pg_advisory_xact_lock(MIRROR_LOCK_KEY)``. A second mirror waits for the first to commit
  (``MirrorOptions.lock_timeout`` seconds at most, when set; then it fails with
  MirrorError and writes nothing).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
import stat
import textwrap
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import compress, filterfalse
from operator import itemgetter
from typing import Any, NamedTuple

import psycopg
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree, parse_tree
from dulwich.pack import Pack, PackFileDisappeared
from dulwich.refs import Ref
from dulwich.repo import Repo
from psycopg import sql

from pggit_export.errors import EXIT_OK, PggitExportError
from pggit_export.progress import Progress, ProgressEvent
from pggit_export.render.layout import SCHEMA_FILE_STEM, decode_name

# int.from_bytes(b"pggitmir", "big"): the key of pg_advisory_xact_lock(bigint) that every
# mirror takes first. Advisory locks are per database, so mirrors into different databases
# never wait for each other.
MIRROR_LOCK_KEY = 8099556157471680882

DEFAULT_V2_SCHEMA = "pggit_v2"
DEFAULT_AUDIT_SCHEMA = "pggit_audit"

# Flush rows to the server every this many commits, or when this much text is pending:
# bounds the memory of a 20,000-commit mirror without adding round trips per commit.
BATCH_COMMITS = 500
BATCH_BYTES = 32 * 1024 * 1024

KIND_SUFFIX_TYPES = {
    "schema": "SCHEMA",
    "extension": "EXTENSION",
    "table": "TABLE",
    "view": "VIEW",
    "matview": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "function": "FUNCTION",
    "type": "TYPE",
}

# The statement that creates a file's object starts a line. A table file may begin with
# the CREATE SEQUENCE of the sequences its columns own, so a sequence only decides the
# type when nothing else is created (a standalone sequence's file).
_CREATE_RE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+)?"
    r"(MATERIALIZED\s+VIEW|TABLE|VIEW|FUNCTION|PROCEDURE|TYPE|DOMAIN|SEQUENCE|EXTENSION|SCHEMA)\b",
    re.MULTILINE,
)
_CREATE_TYPES = {
    "TABLE": "TABLE",
    "VIEW": "VIEW",
    "MATERIALIZED VIEW": "MATERIALIZED VIEW",
    "FUNCTION": "FUNCTION",
    "PROCEDURE": "FUNCTION",  # procedures share their name's file with functions
    "TYPE": "TYPE",
    "DOMAIN": "TYPE",
    "SEQUENCE": "SEQUENCE",
    "EXTENSION": "EXTENSION",
    "SCHEMA": "SCHEMA",
}


class MirrorError(PggitExportError, RuntimeError):
    """The repository cannot be mirrored into the target (nothing was written)."""


@dataclass
class MirrorOptions:
    """What `mirror_repository` and `verify_mirror` can be told; defaults are the CLI's."""

    v2_schema: str = DEFAULT_V2_SCHEMA  # newer pgGit installs call it pggit_v0
    audit_schema: str = DEFAULT_AUDIT_SCHEMA
    branch: str = "main"
    progress: Progress | None = None  # after each commit mirrored (progress.py)
    # Seconds to wait for another mirror into the same database; None: as long as it takes.
    lock_timeout: float | None = None


@dataclass
class MirrorReport:
    """What a mirror run did; `to_dict()` is the `--json` summary."""

    repository: str
    target: str
    branch: str
    v2_schema: str
    audit_schema: str
    object_format: str = "sha1"
    head: str | None = None
    commits_on_branch: int = 0
    commits_already_mirrored: int = 0
    commits_added: int = 0
    objects_added: int = 0
    tree_entries_added: int = 0
    audit_changes_added: int = 0
    object_versions_added: int = 0
    ref_action: str = "unchanged"  # created, fast-forwarded, unchanged
    head_action: str = "unchanged"  # created, unchanged (HEAD already named a ref)
    created_schemas: list[str] = field(default_factory=list)
    created_tables: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exit_code(self) -> int:
        """Always EXIT_OK: a mirror that ran wrote everything (or nothing new was there);
        one that could not raised MirrorError instead, having written nothing."""
        return EXIT_OK

    def format_stderr(self) -> str:
        """What the command line prints on stderr ("" for nothing): the warnings."""
        return "\n".join(f"warning: {warning}" for warning in self.warnings)

    def format_text(self, quiet: bool = False) -> str:
        """The summary the command line prints on stdout ("" when `quiet`); the warnings
        are in `format_stderr`."""
        if quiet:
            return ""
        lines = [
            f"Mirrored {self.commits_added} new commits ({self.commits_already_mirrored} "
            f"already there) of {self.repository} into {self.v2_schema} and "
            f"{self.audit_schema}: {self.objects_added} objects, {self.tree_entries_added} "
            f"tree entries, {self.audit_changes_added} audit changes, "
            f"{self.object_versions_added} object versions"
        ]
        if self.created_tables:
            lines.append(f"  created tables: {', '.join(self.created_tables)}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- DDL
# The same DDL as fixtures/pggit_v2_schema.sql and fixtures/pggit_audit_schema.sql
# (tests/test_mirror.py checks that both give the same catalog). It lives here too
# because the fixtures are not part of the installed package.

V2_TABLES: dict[str, str] = {
    "objects": """
        CREATE TABLE {schema}.objects (
            sha text PRIMARY KEY,
            type text NOT NULL CHECK (type IN ('commit', 'tree', 'blob', 'tag')),
            size integer NOT NULL,
            content text NOT NULL,
            created_at timestamp DEFAULT now()
        )""",
    "refs": """
        CREATE TABLE {schema}.refs (
            name text PRIMARY KEY,
            target_sha text NOT NULL REFERENCES {schema}.objects (sha),
            type text CHECK (type IN ('branch', 'tag', 'remote'))
        )""",
    "HEAD": """
        CREATE TABLE {schema}."HEAD" (
            id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            ref_name text NOT NULL,
            direct_sha text
        )""",
    "commit_graph": """
        CREATE TABLE {schema}.commit_graph (
            commit_sha text PRIMARY KEY REFERENCES {schema}.objects (sha),
            parent_shas text[] NOT NULL DEFAULT '{{}}',
            tree_sha text NOT NULL,
            generation integer NOT NULL DEFAULT 0,
            author text NOT NULL,
            committer text NOT NULL,
            authored_at timestamp NOT NULL,
            committed_at timestamp NOT NULL,
            message text NOT NULL
        )""",
    "tree_entries": """
        CREATE TABLE {schema}.tree_entries (
            tree_sha text REFERENCES {schema}.objects (sha),
            path text,
            mode text,
            object_sha text REFERENCES {schema}.objects (sha),
            PRIMARY KEY (tree_sha, path)
        )""",
    "merge_base_cache": """
        CREATE TABLE {schema}.merge_base_cache (
            commit1_sha text,
            commit2_sha text,
            merge_base_sha text,
            computed_at timestamp DEFAULT now(),
            PRIMARY KEY (commit1_sha, commit2_sha)
        )""",
}

# A tree_entries table this run creates gets its keys after it is filled: one index build
# and one validating join per foreign key instead of a B-tree insert and two foreign-key
# lookups per row (24.6 million rows for the 20,001-commit benchmark; the keys take about
# 25 s once the rows are in, most of it the index build's sort). Same catalog result as
# V2_TABLES["tree_entries"]: the constraint names are the ones PostgreSQL gives inline ones.
TREE_ENTRIES_BARE = """
        CREATE TABLE {schema}.tree_entries (
            tree_sha text,
            path text,
            mode text,
            object_sha text
        )"""
TREE_ENTRIES_KEYS = """
        ALTER TABLE {schema}.tree_entries
            ADD CONSTRAINT tree_entries_pkey PRIMARY KEY (tree_sha, path),
            ADD CONSTRAINT tree_entries_tree_sha_fkey
                FOREIGN KEY (tree_sha) REFERENCES {schema}.objects (sha),
            ADD CONSTRAINT tree_entries_object_sha_fkey
                FOREIGN KEY (object_sha) REFERENCES {schema}.objects (sha)"""

AUDIT_TABLES: dict[str, str] = {
    "changes": """
        CREATE TABLE {schema}.changes (
            change_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            commit_sha text NOT NULL,
            object_schema text NOT NULL,
            object_name text NOT NULL,
            object_type text NOT NULL,
            change_type text NOT NULL,
            old_definition text,
            new_definition text,
            author text,
            committed_at timestamp,
            commit_message text,
            backfilled_from_v1 boolean DEFAULT false,
            verified boolean DEFAULT false,
            created_at timestamp DEFAULT now()
        );
        CREATE INDEX changes_commit_sha_idx ON {schema}.changes (commit_sha);
        CREATE INDEX changes_object_idx ON {schema}.changes (object_schema, object_name)""",
    "object_versions": """
        CREATE TABLE {schema}.object_versions (
            version_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            object_schema text,
            object_name text,
            version_number bigint,
            definition text NOT NULL,
            commit_sha text NOT NULL,
            created_at timestamp NOT NULL,
            UNIQUE (object_schema, object_name, version_number)
        );
        CREATE INDEX object_versions_commit_sha_idx ON {schema}.object_versions (commit_sha)""",
    "compliance_log": """
        CREATE TABLE {schema}.compliance_log (
            log_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            change_id uuid REFERENCES {schema}.changes (change_id),
            verified_at timestamp DEFAULT now(),
            verified_by text NOT NULL,
            verification_status text CHECK (verification_status IN ('PASSED', 'FAILED', 'PENDING')),
            verification_notes text,
            created_at timestamp DEFAULT now()
        );
        CREATE FUNCTION {schema}.compliance_log_immutable() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'compliance_log is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$;
        CREATE TRIGGER compliance_log_immutable
            BEFORE UPDATE OR DELETE ON {schema}.compliance_log
            FOR EACH ROW EXECUTE FUNCTION {schema}.compliance_log_immutable()""",
}

# Columns the mirror writes (or reads, for versions), checked before anything is written
# so that an incompatible existing table fails with a clear message.
V2_COLUMNS = {
    "objects": ("sha", "type", "size", "content"),
    "refs": ("name", "target_sha", "type"),
    "HEAD": ("id", "ref_name", "direct_sha"),
    "commit_graph": (
        "commit_sha", "parent_shas", "tree_sha", "generation", "author", "committer",
        "authored_at", "committed_at", "message",
    ),
    "tree_entries": ("tree_sha", "path", "mode", "object_sha"),
}
AUDIT_COLUMNS = {
    "changes": (
        "change_id", "commit_sha", "object_schema", "object_name", "object_type",
        "change_type", "old_definition", "new_definition", "author", "committed_at",
        "commit_message", "backfilled_from_v1",
    ),
    "object_versions": (
        "version_id", "object_schema", "object_name", "version_number", "definition",
        "commit_sha", "created_at",
    ),
}


def ddl_statements(tables: dict[str, str], schema: str) -> list[sql.Composed]:
    """The CREATE statements of `tables` for schema `schema`, ready to execute."""
    out = []
    for text in tables.values():
        for statement in _split_ddl(text):
            out.append(sql.SQL(statement).format(schema=sql.Identifier(schema)))
    return out


def _split_ddl(text: str) -> list[str]:
    # The texts are ours: statements end with ";\n" outside dollar quotes, and the only
    # dollar-quoted body ($$ ... $$) holds no ";\n        CREATE".
    parts = re.split(r";\n\s*(?=CREATE )", textwrap.dedent(text).strip())
    return [part.strip() for part in parts if part.strip()]


# ----------------------------------------------------------------------------- git side


def open_repository(path: str | os.PathLike[str]) -> Repo:
    """Open an existing repository (normal or bare) or raise MirrorError."""
    try:
        return Repo(str(path))
    except Exception as exc:  # dulwich raises several kinds
        raise MirrorError(f"{path} is not a git repository: {exc}") from exc


def branch_tip(repo: Repo, branch: str) -> bytes:
    """The commit id the branch points at."""
    ref = Ref(f"refs/heads/{branch}".encode())
    tip = repo.refs.as_dict().get(ref)
    if tip is None:
        raise MirrorError(f"{repo.path} has no branch {branch}")
    return tip


def branch_commits(
    repo: Repo, tip: bytes, get: Callable[[bytes], ShaFile] | None = None
) -> list[Commit]:
    """Every commit reachable from `tip`, parents before children (read with `get`)."""
    get = get or (lambda sha: repo[sha])
    order: list[Commit] = []
    loaded: dict[bytes, Commit] = {}
    entered: set[bytes] = set()
    stack: list[tuple[bytes, bool]] = [(tip, False)]
    while stack:
        sha, finished = stack.pop()
        if finished:
            order.append(loaded[sha])
            continue
        if sha in entered:
            continue
        entered.add(sha)
        try:
            commit = get(sha)
        except KeyError:
            raise MirrorError(
                f"commit {sha.decode()} is missing from {repo.path} (a shallow clone?)"
            ) from None
        if not isinstance(commit, Commit):
            raise MirrorError(f"{sha.decode()} is a {commit.type_name.decode()}, not a commit")
        loaded[sha] = commit
        stack.append((sha, True))
        # Reversed so the first parent is explored first: root-first order follows it.
        for parent in reversed(commit.parents):
            if parent not in entered:
                stack.append((parent, False))
    return order


def generations(commits: Sequence[Commit]) -> dict[bytes, int]:
    """Distance from the root: 0 for a root commit, else 1 + the largest parent's."""
    gen: dict[bytes, int] = {}
    for commit in commits:  # parents come first
        gen[commit.id] = 1 + max((gen[p] for p in commit.parents), default=-1)
    return gen


def utc(seconds: int) -> dt.datetime:
    """A git timestamp as a naive UTC datetime (the tables hold `timestamp`)."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).replace(tzinfo=None)


def text_of(raw: bytes, what: str) -> str:
    """Object bytes as PostgreSQL text: UTF-8 without NUL, else MirrorError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MirrorError(f"{what} is not UTF-8: it cannot be stored as text") from exc
    if "\x00" in text:
        raise MirrorError(f"{what} holds a NUL byte: it cannot be stored as text")
    return text


def identity_name(identity: str) -> str:
    """`Name <email>` -> `Name`: the database user pgGit recorded."""
    name, sep, _ = identity.rpartition(" <")
    return name if sep else identity


class _Lru(OrderedDict[bytes, Any]):
    """A small least-recently-used cache: listings and texts are reused by the next commits."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_or(self, key: bytes, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.capacity:
            self.popitem(last=False)
        return value


@dataclass(frozen=True, order=True)
class ObjectId:
    """Who a file stands for in the audit tables."""

    schema: str
    name: str
    type: str  # TABLE, VIEW, MATERIALIZED VIEW, FUNCTION, SEQUENCE, TYPE, SCHEMA, EXTENSION


@dataclass(frozen=True)
class AuditChange:
    """One row of pggit_audit.changes, before the commit's own columns are added."""

    object: ObjectId
    change_type: str  # CREATE, ALTER, DROP
    old_definition: str | None
    new_definition: str | None
    path: str  # the new file's path (the old one's for a DROP)


def object_type_of(text: str) -> str:
    """The object type a file's CREATE statements say (TABLE, VIEW, ...), or UNKNOWN."""
    found = [_CREATE_TYPES[" ".join(m.group(1).split())] for m in _CREATE_RE.finditer(text)]
    for kind in found:
        if kind != "SEQUENCE":
            return kind
    return "SEQUENCE" if found else "UNKNOWN"


# A tree entry as dulwich's parse_tree gives it: (name, mode, hex id).
Entry = tuple[bytes, int, bytes]
_MODE = itemgetter(1)


class _ParsedTree(NamedTuple):
    entries: list[Entry]
    subtrees: list[Entry]  # the entries that are trees


class GitReader:
    """Reads what the mirror and verify need from a repository, with caches."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.store = repo.object_store
        self.object_format = repo.object_format
        # dulwich looks an id up in its packs one after the other, in the order they were
        # opened; an export writes one pack per 200 commits, so a 20,000-commit repository
        # has 100 of them, and a mirror reading in history order mostly wants the newest
        # one it used. `raw` searches the pack that had the last object first.
        self._packs: list[Pack] | None = None
        # Trees are read from git once, then reused by the next commits from these caches;
        # the sizes bound the memory (a directory's entries are a few hundred tuples).
        self._entries = _Lru(512)
        self._walks = _Lru(8192)
        self._listings = _Lru(512)
        self._texts = _Lru(4096)
        self._types: dict[bytes, str] = {}
        self.commits: dict[ObjectID, Commit] = {}

    def raw(self, sha: bytes) -> tuple[int, bytes]:
        """(type number, raw bytes) of an object, by its hex id; KeyError when missing."""
        binary = binascii.unhexlify(sha)
        packs = self._packs
        if packs is None:
            packs = self._packs = list(self.store.packs)
        for index, pack in enumerate(packs):
            try:
                found = pack.get_raw(binary)
            except KeyError:
                continue
            except PackFileDisappeared:  # a concurrent gc: let dulwich rescan
                self._packs = None
                break
            if index:
                packs.insert(0, packs.pop(index))
            return found
        # Loose, in an alternate, or in a pack newer than the list: dulwich's own search.
        return self.store.get_raw(ObjectID(sha))

    def __getitem__(self, sha: bytes) -> ShaFile:
        type_num, raw = self.raw(sha)
        return ShaFile.from_raw_string(
            type_num, raw, ObjectID(sha), object_format=self.object_format
        )

    def commit(self, sha: bytes) -> Commit:
        """A commit of the branch (loaded by `load_branch`), else read from git."""
        found = self.commits.get(ObjectID(sha))
        if found is None:
            obj = self[sha]
            if not isinstance(obj, Commit):
                raise MirrorError(f"{sha.decode()} is not a commit")
            found = obj
        return found

    def load_branch(self, tip: bytes) -> list[Commit]:
        """The branch's commits, parents first; kept for `commit()`."""
        commits = branch_commits(self.repo, tip, self.__getitem__)
        self.commits = {c.id: c for c in commits}
        return commits

    def entries(self, sha: bytes, raw: bytes | None = None) -> list[Entry]:
        """A tree's entries, (name, mode, hex id), in the tree's order.

        `raw` is the tree's raw bytes when the caller has read them already.
        """
        return self._parsed(sha, raw).entries

    def subtrees(self, sha: bytes) -> list[Entry]:
        """The entries of a tree that are trees."""
        return self._parsed(sha, None).subtrees

    def _parsed(self, sha: bytes, raw: bytes | None) -> _ParsedTree:
        def load() -> _ParsedTree:
            data = raw
            if data is None:
                type_num, data = self.raw(sha)
                if type_num != Tree.type_num:
                    raise MirrorError(f"{sha.decode()} is not a tree")
            entries = parse_tree(data, self.object_format.oid_length)
            # Filtered in C: a tree of a few hundred files is read for every new version.
            subtrees = list(compress(entries, map(stat.S_ISDIR, map(_MODE, entries))))
            return _ParsedTree(entries, subtrees)
        return self._entries.get_or(sha, load)  # type: ignore[no-any-return]

    def remember_text(self, blob_sha: bytes, text: str) -> None:
        """A blob's text that the caller read anyway: the audit diff will want it."""
        self._texts.get_or(blob_sha, lambda: text)

    def changed_files(
        self, old_tree: bytes | None, new_tree: bytes | None, prefix: str = ""
    ) -> Iterator[tuple[str, bytes | None, bytes | None]]:
        """(path, old blob, new blob) of every regular file that differs between two trees.

        Identical subtrees are skipped without being read, as `git diff` does.
        """
        if old_tree == new_tree:
            return
        old = set(self.entries(old_tree)) if old_tree else set()
        old_changed: dict[bytes, tuple[int, bytes]] = {}
        new_changed: dict[bytes, tuple[int, bytes]] = {}
        for name, mode, sha in old.symmetric_difference(self.entries(new_tree) if new_tree else ()):
            side = old_changed if (name, mode, sha) in old else new_changed
            side[name] = (mode, sha)
        for name in sorted(old_changed.keys() | new_changed.keys()):
            before, after = old_changed.get(name), new_changed.get(name)
            path = prefix + text_of(name, "a path")
            old_sub = before[1] if before and stat.S_ISDIR(before[0]) else None
            new_sub = after[1] if after and stat.S_ISDIR(after[0]) else None
            if old_sub != new_sub:
                yield from self.changed_files(old_sub, new_sub, path + "/")
            old_file = before[1] if before and stat.S_ISREG(before[0]) else None
            new_file = after[1] if after and stat.S_ISREG(after[0]) else None
            if old_file != new_file:
                yield path, old_file, new_file

    def listing(self, tree_sha: bytes) -> list[tuple[str, str, bytes]]:
        """`git ls-tree -r`: (path relative to the tree, octal mode, blob id) for every blob."""
        return self._listings.get_or(tree_sha, lambda: self._list(tree_sha))  # type: ignore[no-any-return]

    def _list(self, tree_sha: bytes) -> list[tuple[str, str, bytes]]:
        out: list[tuple[str, str, bytes]] = []
        for raw_name, mode, sha in self.entries(tree_sha):
            name = text_of(raw_name, f"a path in tree {tree_sha.decode()}")
            if stat.S_ISDIR(mode):
                out.extend((f"{name}/{p}", m, s) for p, m, s in self.listing(sha))
            elif stat.S_ISLNK(mode) or stat.S_ISREG(mode):
                out.append((name, f"{mode:06o}", sha))
            else:  # a gitlink names a commit of another repository: no object to store
                raise MirrorError(f"{name} in tree {tree_sha.decode()} is a submodule")
        return out

    def walk(self, tree_sha: bytes) -> list[tuple[str, bytes]]:
        """(path prefix, tree) of a tree itself (``""``) and of every tree below it (``dir/``).

        `ls-tree -r` of a tree is, for each (prefix, tree) here, the files directly in
        that tree with the prefix before their names: the mirror's tree_entries rows.
        """
        def make() -> list[tuple[str, bytes]]:
            out = [("", tree_sha)]
            for name, _, sha in self.subtrees(tree_sha):
                path = text_of(name, f"a path in tree {tree_sha.decode()}")
                out.extend((f"{path}/{p}", t) for p, t in self.walk(sha))
            return out
        return self._walks.get_or(tree_sha, make)  # type: ignore[no-any-return]

    def text(self, blob_sha: bytes, path: str) -> str:
        """A blob's content as text."""
        def load() -> str:
            type_num, raw = self.raw(blob_sha)
            if type_num != Blob.type_num:
                raise MirrorError(f"{path} (object {blob_sha.decode()}) is not a blob")
            return text_of(raw, f"file {path} (blob {blob_sha.decode()})")
        return self._texts.get_or(blob_sha, load)  # type: ignore[no-any-return]

    def object_of(self, path: str, blob_sha: bytes) -> ObjectId | None:
        """The object a file holds, or None for a path that is not `<dir>/<file>.sql`."""
        directory, sep, file_name = path.partition("/")
        if not sep or "/" in file_name or not file_name.endswith(".sql"):
            return None
        try:
            schema = decode_name(directory)
            name = decode_name(file_name)
        except UnicodeDecodeError:
            return None
        parts = file_name.split(".")
        kind = parts[1] if len(parts) == 3 else None
        if kind == "schema" or (kind is None and parts[0] == SCHEMA_FILE_STEM):
            return ObjectId(schema, schema, "SCHEMA")
        object_type = KIND_SUFFIX_TYPES.get(kind or "")
        if object_type is None:
            object_type = self._types.get(blob_sha)
            if object_type is None:
                object_type = self._types[blob_sha] = object_type_of(self.text(blob_sha, path))
        return ObjectId(schema, name, object_type)

    def audit_changes(self, old_tree: bytes | None, new_tree: bytes) -> list[AuditChange]:
        """The objects created, altered and dropped between two root trees."""
        before: dict[ObjectId, tuple[str, bytes]] = {}
        after: dict[ObjectId, tuple[str, bytes]] = {}
        for path, old_blob, new_blob in self.changed_files(old_tree, new_tree):
            for blob, side in ((old_blob, before), (new_blob, after)):
                if blob is not None:
                    key = self.object_of(path, blob)
                    if key is not None:
                        side[key] = (path, blob)
        changes: list[AuditChange] = []
        for key in sorted(before.keys() | after.keys()):
            old, new = before.get(key), after.get(key)
            if old is not None and new is not None:
                if old[1] == new[1]:
                    continue  # moved by the layout, same text: not a change of the object
                changes.append(AuditChange(
                    key, "ALTER", self.text(old[1], old[0]), self.text(new[1], new[0]), new[0]
                ))
            elif new is not None:
                changes.append(AuditChange(key, "CREATE", None, self.text(new[1], new[0]), new[0]))
            elif old is not None:
                changes.append(AuditChange(key, "DROP", self.text(old[1], old[0]), None, old[0]))
        return changes


def first_parent_tree(reader: GitReader, commit: Commit) -> bytes | None:
    """The tree a commit's audit rows are diffed against (None: the empty tree)."""
    if not commit.parents:
        return None
    return reader.commit(commit.parents[0]).tree


# ----------------------------------------------------------------------------- database side


def _q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


_EXISTING_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p')
"""

_EXISTING_SCHEMAS_SQL = "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY (%s)"

_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
"""


def existing_tables(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> set[tuple[str, str]]:
    """(schema, table) of the tables that exist in `schemas`."""
    rows = conn.execute(_EXISTING_TABLES_SQL, {"schemas": list(schemas)}).fetchall()
    return {(r[0], r[1]) for r in rows}


def ensure_tables(
    conn: psycopg.Connection[Any], options: MirrorOptions, report: MirrorReport
) -> list[sql.Composed]:
    """Create the missing schemas and tables; check that existing ones have our columns.

    Returns the statements to run once the rows are in (keys of a new tree_entries).
    """
    deferred: list[sql.Composed] = []
    schemas = [options.v2_schema, options.audit_schema]
    present_schemas = {r[0] for r in conn.execute(_EXISTING_SCHEMAS_SQL, (schemas,))}
    tables = existing_tables(conn, schemas)
    for schema, definitions in ((options.v2_schema, V2_TABLES),
                                (options.audit_schema, AUDIT_TABLES)):
        if schema not in present_schemas:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            present_schemas.add(schema)
            report.created_schemas.append(schema)
        for table, text in definitions.items():
            if (schema, table) in tables:
                continue
            if schema == options.v2_schema and table == "tree_entries":
                text = TREE_ENTRIES_BARE
                deferred += ddl_statements({table: TREE_ENTRIES_KEYS}, schema)
            for statement in ddl_statements({table: text}, schema):
                conn.execute(statement)
            report.created_tables.append(f"{schema}.{table}")

    columns: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in conn.execute(_COLUMNS_SQL, {"schemas": schemas}):
        columns.setdefault((schema, table), set()).add(column)
    missing = []
    for schema, required in ((options.v2_schema, V2_COLUMNS),
                             (options.audit_schema, AUDIT_COLUMNS)):
        for table, names in required.items():
            lacking = [c for c in names if c not in columns.get((schema, table), set())]
            if lacking:
                missing.append(f"{schema}.{table} lacks {', '.join(lacking)}")
    if missing:
        raise MirrorError(
            "the target's pgGit tables are not the shape pggit-export writes: "
            + "; ".join(missing)
        )
    return deferred


@contextmanager
def unrecorded_ddl(conn: psycopg.Connection[Any], report: MirrorReport) -> Iterator[None]:
    """Run the mirror's own DDL (its tables and keys, its temporary tables) unseen by
    pgGit's event triggers, which would record each CREATE TABLE as a history row of the
    database it writes into, for the next export to commit.

    Event triggers created plainly (ENABLE, as pgGit's are) do not fire while
    session_replication_role is `replica`. Only DDL runs under it: the rows go in with
    the role's own setting, so ordinary triggers and foreign keys check them as always.
    Setting it takes a superuser (or, from PostgreSQL 15, a role granted SET on it);
    without, the DDL runs as it is, and the report says that pgGit may record it.
    """
    previous = conn.execute("SELECT pg_catalog.current_setting('session_replication_role')")
    row = previous.fetchone()
    setting = str(row[0]) if row else "origin"
    try:
        with conn.transaction():  # a savepoint: a refusal must not end the mirror's work
            conn.execute("SELECT pg_catalog.set_config('session_replication_role', "
                         "'replica', true)")
    except psycopg.errors.InsufficientPrivilege:
        listening = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D')"
        ).fetchone()
        warning = ("event triggers of this database (pgGit's?) may record the mirror's own "
                   "tables as history rows: this role may not set session_replication_role "
                   "to keep them silent (the export skips pgGit's own objects)")
        if listening and listening[0] and warning not in report.warnings:
            report.warnings.append(warning)
        yield
        return
    try:
        yield
    finally:
        conn.execute("SELECT pg_catalog.set_config('session_replication_role', %s, true)",
                     (setting,))


def _take_lock(conn: psycopg.Connection[Any], lock_timeout: float | None) -> None:
    if lock_timeout is not None:
        milliseconds = max(1, int(lock_timeout * 1000))
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",))
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIRROR_LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise MirrorError(
            f"another pggit-export mirror is writing into this database (advisory lock "
            f"{MIRROR_LOCK_KEY} held for over {lock_timeout} s); try again when it is done"
        ) from None
    if lock_timeout is not None:
        conn.execute("SELECT set_config('lock_timeout', '0', true)")


def mirrored_commits(
    conn: psycopg.Connection[Any], v2_schema: str, shas: Sequence[str]
) -> set[str]:
    """Which of `shas` commit_graph already holds."""
    query = sql.SQL("SELECT commit_sha FROM {} WHERE commit_sha = ANY (%s)").format(
        _q(v2_schema, "commit_graph")
    )
    found: set[str] = set()
    for start in range(0, len(shas), 10_000):
        found.update(r[0] for r in conn.execute(query, (list(shas[start:start + 10_000]),)))
    return found


# Temporary tables: COPY fills them, one INSERT ... SELECT per batch empties them. The
# staged content is not compressed (STORAGE EXTERNAL): the objects table compresses it
# anyway, in the INSERT, which runs while the next batch is read from git.
_TEMP_TABLES_SQL = """
CREATE TEMP TABLE pggit_mirror_objects (
    sha text, type text, size integer, content text) ON COMMIT DROP;
CREATE TEMP TABLE pggit_mirror_commits (
    commit_sha text, parent_shas text[], tree_sha text, generation integer, author text,
    committer text, authored_at timestamp, committed_at timestamp, message text) ON COMMIT DROP;
CREATE TEMP TABLE pggit_mirror_levels (
    tree_sha text, name text, mode text, object_sha text) ON COMMIT DROP;
CREATE TEMP TABLE pggit_mirror_walks (
    tree_sha text, prefix text, level_sha text) ON COMMIT DROP;
CREATE TEMP TABLE pggit_mirror_changes (
    seq bigint, change_id uuid, commit_sha text, object_schema text, object_name text,
    object_type text, change_type text, old_definition text, new_definition text,
    author text, committed_at timestamp, commit_message text) ON COMMIT DROP;
CREATE TEMP TABLE pggit_mirror_versions (
    seq bigint, version_id uuid, object_schema text, object_name text, definition text,
    commit_sha text, created_at timestamp) ON COMMIT DROP;
ALTER TABLE pggit_mirror_objects ALTER content SET STORAGE EXTERNAL
"""

_INSERT_OBJECTS_SQL = """
INSERT INTO {objects} (sha, type, size, content)
SELECT sha, type, size, content FROM pg_temp.pggit_mirror_objects
ON CONFLICT DO NOTHING
"""

_INSERT_COMMITS_SQL = """
INSERT INTO {commit_graph} (commit_sha, parent_shas, tree_sha, generation, author, committer,
                            authored_at, committed_at, message)
SELECT commit_sha, parent_shas, tree_sha, generation, author, committer,
       authored_at, committed_at, message
FROM pg_temp.pggit_mirror_commits
ON CONFLICT DO NOTHING
"""

# Each new tree's `ls-tree -r` rows, built in the server: the blobs of every tree on its
# walk (itself, and each subtree below it under the subtree's path) with the walk's prefix.
_INSERT_ENTRIES_SQL = """
INSERT INTO {tree_entries} (tree_sha, path, mode, object_sha)
SELECT w.tree_sha, w.prefix || l.name, l.mode, l.object_sha
FROM pg_temp.pggit_mirror_walks w
JOIN pg_temp.pggit_mirror_levels l ON l.tree_sha = w.level_sha
WHERE l.mode <> '040000'
ON CONFLICT DO NOTHING
"""

_INSERT_CHANGES_SQL = """
INSERT INTO {changes} (change_id, commit_sha, object_schema, object_name, object_type,
                       change_type, old_definition, new_definition, author, committed_at,
                       commit_message, backfilled_from_v1)
SELECT change_id, commit_sha, object_schema, object_name, object_type,
       change_type, old_definition, new_definition, author, committed_at,
       commit_message, true
FROM pg_temp.pggit_mirror_changes
ORDER BY seq
"""

# Numbering continues from what the table holds for the object (a re-created object keeps
# counting); within the batch, in commit order.
_INSERT_VERSIONS_SQL = """
INSERT INTO {object_versions} (version_id, object_schema, object_name, version_number,
                               definition, commit_sha, created_at)
SELECT t.version_id, t.object_schema, t.object_name,
       COALESCE(last.version_number, 0)
           + row_number() OVER (PARTITION BY t.object_schema, t.object_name ORDER BY t.seq),
       t.definition, t.commit_sha, t.created_at
FROM pg_temp.pggit_mirror_versions t
LEFT JOIN LATERAL (
    SELECT max(v.version_number) AS version_number
    FROM {object_versions} v
    WHERE v.object_schema = t.object_schema AND v.object_name = t.object_name
) last ON true
"""

_TRUNCATE_SQL = """
TRUNCATE pg_temp.pggit_mirror_objects, pg_temp.pggit_mirror_commits,
         pg_temp.pggit_mirror_levels, pg_temp.pggit_mirror_walks, pg_temp.pggit_mirror_changes,
         pg_temp.pggit_mirror_versions
"""

_COPY_TYPES = {
    "pggit_mirror_objects": ["text", "text", "int4", "text"],
    "pggit_mirror_commits": [
        "text", "text[]", "text", "int4", "text", "text", "timestamp", "timestamp", "text",
    ],
    "pggit_mirror_walks": ["text", "text", "text"],
    "pggit_mirror_changes": [
        "int8", "uuid", "text", "text", "text", "text", "text", "text", "text", "text",
        "timestamp", "text",
    ],
    "pggit_mirror_versions": ["int8", "uuid", "text", "text", "text", "text", "timestamp"],
}


@dataclass
class _Batch:
    objects: list[tuple[str, str, int, str]] = field(default_factory=list)
    commits: list[tuple[Any, ...]] = field(default_factory=list)
    # COPY text of pggit_mirror_levels, one piece per tree (see _Levels).
    levels: list[bytes] = field(default_factory=list)
    walks: list[tuple[str, str, str]] = field(default_factory=list)
    level_trees: set[bytes] = field(default_factory=set)  # trees whose levels are queued
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    bytes: int = 0

    def rows(self) -> Iterator[tuple[str, Sequence[tuple[Any, ...]]]]:
        yield "pggit_mirror_objects", self.objects
        yield "pggit_mirror_commits", self.commits
        yield "pggit_mirror_walks", self.walks
        yield "pggit_mirror_changes", self.changes
        yield "pggit_mirror_versions", self.versions


_COPY_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


class _Levels(dict[Entry, bytes]):
    """The COPY text lines of pggit_mirror_levels, without their first (tree) column.

    Keyed by a tree entry as `GitReader.entries()` lists it, so that a tree's
    lines are one `map` over its entries at C speed: a tree entry (a name, a mode and an
    id) recurs in every version of its directory, its line is made once. Subtree
    entries get lines too (mode ``040000``); the INSERT leaves them out.
    """

    LIMIT = 250_000  # lines remembered (~50 MB); then the cache starts over

    def __missing__(self, key: Entry) -> bytes:
        name, mode, sha = key
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            # a gitlink names a commit of another repository: no object to store
            raise _BadEntry(f"{text_of(name, 'a path')} is a submodule")
        text = text_of(name, "a path").translate(_COPY_ESCAPES)
        line = f"{text}\t{mode:06o}\t".encode() + sha
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = line
        return line

    def copy_text(self, reader: GitReader, tree_sha: bytes) -> bytes:
        """The lines of every entry of a tree, ready for COPY ... FROM STDIN (text format)."""
        try:
            lines = list(map(self.__getitem__, reader.entries(tree_sha)))
        except _BadEntry as exc:
            raise MirrorError(f"{exc} in tree {tree_sha.decode()}") from None
        except MirrorError as exc:
            raise MirrorError(f"{exc} in tree {tree_sha.decode()}") from None
        if not lines:
            return b""
        head = tree_sha + b"\t"
        return head + (b"\n" + head).join(lines) + b"\n"


class _BadEntry(Exception):
    pass


class _Writer:
    """Collects the rows of new commits and sends them a batch at a time.

    This thread COPYs a batch into the temporary tables; a second thread then runs the
    batch's INSERT ... SELECT statements while this one reads the next batch from git, so
    the server's work and ours overlap. The second thread does nothing but wait for the
    server (a COPY there would compete with this thread for the GIL at every block it
    sends); the connection is only used by it until `wait` (or leaving the `with`) returns.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], options: MirrorOptions, report: MirrorReport
    ) -> None:
        self.conn = conn
        self.report = report
        v2, audit = options.v2_schema, options.audit_schema
        names = {
            "objects": _q(v2, "objects"), "commit_graph": _q(v2, "commit_graph"),
            "tree_entries": _q(v2, "tree_entries"), "changes": _q(audit, "changes"),
            "object_versions": _q(audit, "object_versions"),
        }
        self.inserts = [
            (sql.SQL(text).format(**names), counter)
            for text, counter in (
                (_INSERT_OBJECTS_SQL, "objects_added"),
                (_INSERT_COMMITS_SQL, "commits_added"),
                (_INSERT_ENTRIES_SQL, "tree_entries_added"),
                (_INSERT_CHANGES_SQL, "audit_changes_added"),
                (_INSERT_VERSIONS_SQL, "object_versions_added"),
            )
        ]
        self.batch = _Batch()
        self.levels = _Levels()
        self.commits_in_batch = 0
        self.seq = 0
        self.encoding = conn.info.encoding
        conn.execute(_TEMP_TABLES_SQL)
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pggit-mirror")
        self._in_flight: Future[None] | None = None

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._in_flight is not None:
                # Already failing: the batch's own error (if any) is not the first one.
                self._in_flight.exception()
                self._in_flight = None
        finally:
            self._sender.shutdown(wait=True)

    def wait(self) -> None:
        """Return when the batch in flight is in the tables; raise what sending it raised."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def commit_done(self) -> None:
        self.commits_in_batch += 1
        if self.commits_in_batch >= BATCH_COMMITS or self.batch.bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send the batch (after the previous one is in) and start a new one."""
        if not self.commits_in_batch and not self.batch.objects:
            return
        batch = self.batch
        self.batch = _Batch()
        self.commits_in_batch = 0
        self.wait()
        self._copy(batch)
        self._in_flight = self._sender.submit(self._insert)

    def _copy(self, batch: _Batch) -> None:
        with self.conn.cursor() as cur:
            for table, rows in batch.rows():
                if not rows:
                    continue
                with cur.copy(
                    sql.SQL("COPY pg_temp.{} FROM STDIN").format(sql.Identifier(table))
                ) as copy:
                    copy.set_types(_COPY_TYPES[table])
                    for row in rows:
                        copy.write_row(row)
            if batch.levels:
                with cur.copy("COPY pg_temp.pggit_mirror_levels FROM STDIN") as copy:
                    for text in batch.levels:
                        if self.encoding != "utf-8":
                            text = text.decode("utf-8").encode(self.encoding)
                        copy.write(text)

    def _insert(self) -> None:
        with self.conn.cursor() as cur:
            for statement, counter in self.inserts:
                cur.execute(statement)
                setattr(self.report, counter, getattr(self.report, counter) + max(cur.rowcount, 0))
            cur.execute(_TRUNCATE_SQL)


def _hex(sha: bytes) -> str:
    return sha.decode("ascii")


def _add_tree(
    reader: GitReader, writer: _Writer, tree_sha: bytes, seen: set[bytes]
) -> None:
    """Queue a tree, its entries and everything under it that is not mirrored yet."""
    if tree_sha in seen:
        return
    type_num, raw_tree = reader.raw(tree_sha)
    if type_num != Tree.type_num:
        raise MirrorError(f"{_hex(tree_sha)} is not a tree")
    batch = writer.batch
    # An entry with a line in writer.levels was in a tree queued before: its object is in
    # `seen` already. Only the others (one or two per new version of a directory) are
    # looked at, in C, rather than the hundreds of files of the directory.
    entries = reader.entries(tree_sha, raw_tree)
    for name, mode, sha in filterfalse(writer.levels.__contains__, entries):
        if stat.S_ISDIR(mode):
            _add_tree(reader, writer, sha, seen)
        elif sha not in seen:
            path = text_of(name, f"a path in tree {_hex(tree_sha)}")
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                raise MirrorError(f"{path} in tree {_hex(tree_sha)} is a submodule")
            blob_type, raw = reader.raw(sha)
            if blob_type != Blob.type_num:
                raise MirrorError(f"{path} in tree {_hex(tree_sha)} is not a blob")
            content = text_of(raw, f"file {path} (blob {_hex(sha)})")
            reader.remember_text(sha, content)
            batch.objects.append((_hex(sha), "blob", len(raw), content))
            batch.bytes += len(raw)
            seen.add(sha)
    batch.objects.append(
        (_hex(tree_sha), "tree", len(raw_tree), base64.b64encode(raw_tree).decode("ascii"))
    )
    batch.bytes += len(raw_tree) * 2
    # Its tree_entries rows are made by the server: the walk says which trees' entries
    # go under which path prefix, the levels give each tree's entries (once per batch).
    tree_hex = _hex(tree_sha)
    for prefix, level in reader.walk(tree_sha):
        batch.walks.append((tree_hex, prefix, _hex(level)))
        batch.bytes += 2 * len(tree_hex) + len(prefix)
        if level not in batch.level_trees:
            batch.level_trees.add(level)
            text = writer.levels.copy_text(reader, level)
            batch.levels.append(text)
            batch.bytes += len(text)
    seen.add(tree_sha)


def _mark_mirrored(reader: GitReader, tree_sha: bytes, seen: set[bytes]) -> None:
    """Remember a mirrored tree and everything under it, so it is not sent again."""
    if tree_sha in seen:
        return
    seen.add(tree_sha)
    for _, mode, sha in reader.entries(tree_sha):
        if stat.S_ISDIR(mode):
            _mark_mirrored(reader, sha, seen)
        else:
            seen.add(sha)


def _add_commit(
    reader: GitReader, writer: _Writer, commit: Commit, generation: int, seen: set[bytes]
) -> None:
    _add_tree(reader, writer, commit.tree, seen)
    raw = commit.as_raw_string()
    commit_hex = _hex(commit.id)
    batch = writer.batch
    batch.objects.append((commit_hex, "commit", len(raw), text_of(raw, f"commit {commit_hex}")))
    author = text_of(commit.author, f"the author of {commit_hex}")
    committer = text_of(commit.committer, f"the committer of {commit_hex}")
    message = text_of(commit.message, f"the message of {commit_hex}")
    committed_at = utc(commit.commit_time)
    batch.commits.append((
        commit_hex, [_hex(p) for p in commit.parents], _hex(commit.tree), generation,
        author, committer, utc(commit.author_time), committed_at, message,
    ))
    batch.bytes += len(raw)
    seen.add(commit.id)

    author_name = identity_name(author)
    for change in reader.audit_changes(first_parent_tree(reader, commit), commit.tree):
        seq = writer.next_seq()
        obj = change.object
        batch.changes.append((
            seq, uuid.uuid4(), commit_hex, obj.schema, obj.name, obj.type, change.change_type,
            change.old_definition, change.new_definition, author_name, committed_at, message,
        ))
        if change.new_definition is not None:
            batch.versions.append((
                seq, uuid.uuid4(), obj.schema, obj.name, change.new_definition, commit_hex,
                committed_at,
            ))
        batch.bytes += len(change.old_definition or "") + 2 * len(change.new_definition or "")


_REF_SQL = "SELECT target_sha, type FROM {refs} WHERE name = %s FOR UPDATE"
_INSERT_REF_SQL = "INSERT INTO {refs} (name, target_sha, type) VALUES (%s, %s, 'branch')"
_MOVE_REF_SQL = "UPDATE {refs} SET target_sha = %s WHERE name = %s AND target_sha = %s"
_HEAD_SQL = "SELECT ref_name FROM {head} FOR UPDATE"
_INSERT_HEAD_SQL = "INSERT INTO {head} (id, ref_name, direct_sha) VALUES (1, %s, NULL)"


def _check_ref(
    conn: psycopg.Connection[Any], options: MirrorOptions, on_branch: set[str]
) -> str | None:
    """The branch's current ref target, after checking we may move it (before any write)."""
    refs = _q(options.v2_schema, "refs")
    row = conn.execute(sql.SQL(_REF_SQL).format(refs=refs), (options.branch,)).fetchone()
    if row is None:
        return None
    target, ref_type = row
    if ref_type not in (None, "branch"):
        raise MirrorError(
            f"{options.v2_schema}.refs already has {options.branch!r} as a {ref_type}: "
            "mirror into another branch name (--branch) or v2 schema"
        )
    if target not in on_branch:
        raise MirrorError(
            f"{options.v2_schema}.refs has branch {options.branch!r} at {target}, which is not "
            "in this repository's history of the branch: refusing to move it (nothing written)"
        )
    return str(target)


def _set_ref_and_head(
    conn: psycopg.Connection[Any], options: MirrorOptions, report: MirrorReport,
    current: str | None, tip: str,
) -> None:
    refs = _q(options.v2_schema, "refs")
    if current is None:
        conn.execute(sql.SQL(_INSERT_REF_SQL).format(refs=refs), (options.branch, tip))
        report.ref_action = "created"
    elif current != tip:
        conn.execute(sql.SQL(_MOVE_REF_SQL).format(refs=refs), (tip, options.branch, current))
        report.ref_action = "fast-forwarded"
    head = _q(options.v2_schema, "HEAD")
    row = conn.execute(sql.SQL(_HEAD_SQL).format(head=head)).fetchone()
    if row is None:
        conn.execute(sql.SQL(_INSERT_HEAD_SQL).format(head=head), (options.branch,))
        report.head_action = "created"
    elif row[0] != options.branch:
        report.warnings.append(
            f'{options.v2_schema}."HEAD" names ref {row[0]!r}, not {options.branch!r}: left as is'
        )


def _schema_hint(
    conn: psycopg.Connection[Any], options: MirrorOptions, report: MirrorReport
) -> None:
    """Warn when the target has pgGit's newer v2 schema and we are about to create another."""
    tables = existing_tables(conn, [options.v2_schema, "pggit_v0", "pggit_v2"])
    if (options.v2_schema, "objects") in tables:
        return
    others = sorted(s for s, t in tables if t == "objects" and s != options.v2_schema)
    if others:
        report.warnings.append(
            f"{options.v2_schema}.objects did not exist, but {others[0]}.objects does: "
            f"this pgGit install may expect --v2-schema {others[0]}"
        )


def mirror_repository(
    repo: str | os.PathLike[str], target: str, options: MirrorOptions | None = None
) -> MirrorReport:
    """Mirror branch `options.branch` of the repository at `repo` into the database `target`.

    `target` is a libpq connection string (usually the export's source database). Only
    commits that `commit_graph` does not hold yet are written; a rerun adds nothing. Raises
    MirrorError (nothing written) when the repository or the target cannot be mirrored.
    """
    options = options or MirrorOptions()
    started = time.monotonic()
    report = MirrorReport(
        repository=str(repo), target=_redacted(target), branch=options.branch,
        v2_schema=options.v2_schema, audit_schema=options.audit_schema,
    )
    with open_repository(repo) as git_repo:
        reader = GitReader(git_repo)
        report.object_format = reader.object_format.name
        tip = branch_tip(git_repo, options.branch)
        report.head = _hex(tip)
        commits = reader.load_branch(tip)
        gen = generations(commits)
        report.commits_on_branch = len(commits)
        hexes = [_hex(c.id) for c in commits]

        with psycopg.connect(target, autocommit=True) as conn, conn.transaction():
            _take_lock(conn, options.lock_timeout)
            _schema_hint(conn, options, report)
            with unrecorded_ddl(conn, report):
                deferred = ensure_tables(conn, options, report)
            done = mirrored_commits(conn, options.v2_schema, hexes)
            report.commits_already_mirrored = len(done)
            current_ref = _check_ref(conn, options, set(hexes))

            todo = [c for c, h in zip(commits, hexes, strict=True) if h not in done]
            seen: set[bytes] = set()
            for commit in todo:
                for parent in commit.parents:
                    if _hex(parent) in done:
                        _mark_mirrored(reader, reader.commit(parent).tree, seen)
                        seen.add(parent)
            with unrecorded_ddl(conn, report):  # its temporary tables
                writer = _Writer(conn, options, report)
            with writer:
                for count, commit in enumerate(todo, 1):
                    _add_commit(reader, writer, commit, gen[commit.id], seen)
                    writer.commit_done()
                    if options.progress is not None:
                        options.progress(ProgressEvent("mirror", count, len(todo), "commits"))
                writer.flush()
            with unrecorded_ddl(conn, report):
                for statement in deferred:
                    conn.execute(statement)
            _set_ref_and_head(conn, options, report, current_ref, report.head)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _redacted(conninfo: str) -> str:
    """A connection string without its password, for reports."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<connection string>"
    if "password" in params:
        params["password"] = "***"
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def iter_chunks(items: Sequence[Any], size: int = 10_000) -> Iterable[list[Any]]:
    """`items` in lists of at most `size`: for `= ANY(%s)` parameters of bounded size."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
