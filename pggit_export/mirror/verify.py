"""Check a mirror against its repository, and the repository against what v1 recorded.

`verify_mirror` reads the target in one REPEATABLE READ, READ ONLY transaction (it writes
nothing, not even temporary tables) and checks, for the branch's history:

1. objects: every object reachable from the branch has a row whose content, hashed the
   git way (``"<type> <size>\\0" + raw``, SHA-1 or SHA-256 as the repository), gives its
   id, and whose type and size are git's;
2. commit_graph: each commit's parents, tree, generation, author, committer, dates and
   message are git's;
3. refs and HEAD: the branch's ref points at the tip, and HEAD exists and names a ref
   (a HEAD naming another existing ref is a note, not a failure: mirror leaves it alone);
4. tree_entries: each tree's rows are exactly ``git ls-tree -r`` of it;
5. audit: each commit's ``pggit_audit.changes`` rows are the object diff against its
   first parent (same rules as the mirror, see mirror.py), and its object_versions rows
   hold the new definitions, with numbers that grow along the history;
6. v1 columns: for each table that the history (``pggit.history`` in the target) recorded
   as created or altered with ``new_metadata`` columns, the table's file in the commit
   whose ``Pggit-History-Ids`` trailer covers the row declares the same columns.

Column check rules. Within one commit only the last row of each table counts (a batch
that creates a table then alters it records the intermediate state first), and a table
whose last row there is a DROP is skipped. Commits whose replay failed or was skipped
(``Pggit-Replay`` trailer) are not compared: their tree is knowingly not what v1 saw.
The file's columns are its own plus those of the tables it is a PARTITION OF or INHERITS
from (looked up in the same commit's tree). Names compare exactly. Types compare after
normalising both sides to v1's spelling (``information_schema`` udt names):
schema qualification and quotes are dropped; SQL names become internal ones
(``integer`` -> ``int4``, ``character varying`` -> ``varchar``, ``character`` ->
``bpchar``, ``timestamp with time zone`` -> ``timestamptz``, ``double precision`` ->
``float8``, ...); ``x[]`` becomes ``_x``; a domain is replaced by its base type (v1
records the base type for a domain column) using the domain files of that commit;
a type modifier (``(16)``, ``(12,2)``) is compared only when v1 recorded one, since v1
records lengths of character and bit types but never numeric precision or time scale.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from dulwich.objects import Commit
from psycopg import sql

from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK
from pggit_export.git.message import parse_id_ranges, read_trailer
from pggit_export.identifiers import strip_identifier_quotes
from pggit_export.mirror.write import (
    GitReader,
    MirrorError,
    MirrorOptions,
    ObjectId,
    _redacted,
    branch_tip,
    existing_tables,
    first_parent_tree,
    generations,
    identity_name,
    iter_chunks,
    open_repository,
    utc,
)
from pggit_export.read.history import read_history_columns

MAX_LISTED = 1000  # problems kept in the report; the counts are always complete


@dataclass
class Problem:
    """One thing the mirror gets wrong."""

    check: str  # objects, commits, refs, tree_entries, audit, versions
    message: str
    sha: str | None = None


@dataclass
class ColumnMismatch:
    """A table file whose columns are not what the v1 history row recorded."""

    history_id: int
    commit: str
    table: str  # schema.name
    path: str | None
    missing: list[str] = field(default_factory=list)  # recorded by v1, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not recorded
    types: list[str] = field(default_factory=list)  # "col: v1 int4, file text"
    note: str = ""

    def describe(self) -> str:
        parts = []
        if self.note:
            parts.append(self.note)
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected " + ", ".join(self.unexpected))
        if self.types:
            parts.append("types differ: " + "; ".join(self.types))
        return (f"history id {self.history_id}: {self.table} at {self.commit[:12]} "
                f"({self.path or 'no file'}): " + "; ".join(parts))


@dataclass
class VerifyReport:
    """What verify found; `ok` is the exit status, `to_dict()` the `--json` output."""

    repository: str
    target: str
    branch: str
    v2_schema: str
    audit_schema: str
    object_format: str = "sha1"
    head: str | None = None
    objects_checked: int = 0
    commits_checked: int = 0
    trees_checked: int = 0
    tree_entries_checked: int = 0
    audit_changes_checked: int = 0
    object_versions_checked: int = 0
    history_rows_checked: int = 0
    column_check: str = "not run"  # done, or why it was skipped
    problem_counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    column_mismatches: list[ColumnMismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problem_counts and not self.column_mismatches

    def add(self, check: str, message: str, sha: str | None = None) -> None:
        self.problem_counts[check] = self.problem_counts.get(check, 0) + 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(Problem(check, message, sha))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    @property
    def exit_code(self) -> int:
        """EXIT_OK when everything matched, else EXIT_INCOMPLETE (the mismatches are listed)."""
        return EXIT_OK if self.ok else EXIT_INCOMPLETE

    def format_text(self, limit: int = 50) -> str:
        """A human summary: one line per check, then the first `limit` problems."""
        def status(*checks: str) -> str:
            count = sum(self.problem_counts.get(c, 0) for c in checks)
            return "ok" if not count else f"{count} problem{'s' if count > 1 else ''}"

        lines = [
            (
                f"verify {self.repository} (branch {self.branch}, {self.object_format}, "
                f"head {(self.head or '-')[:12]}) against {self.v2_schema}/{self.audit_schema}"
            ),
            f"  objects       {self.objects_checked:>7} checked      {status('objects')}",
            f"  commits       {self.commits_checked:>7} checked      {status('commits')}",
            f"  refs, HEAD                          {status('refs')}",
            f"  tree entries  {self.trees_checked:>7} trees        {status('tree_entries')}",
            f"  audit changes {self.audit_changes_checked:>7} checked      {status('audit')}",
            f"  versions      {self.object_versions_checked:>7} checked      {status('versions')}",
        ]
        if self.column_check == "done":
            mismatches = len(self.column_mismatches)
            verdict = "ok" if not mismatches else f"{mismatches} mismatch(es)"
            lines.append(f"  v1 columns    {self.history_rows_checked:>7} rows         {verdict}")
        else:
            lines.append(f"  v1 columns    skipped: {self.column_check}")
        shown = 0
        for problem in self.problems:
            if shown >= limit:
                break
            lines.append(f"  - [{problem.check}] {problem.message}")
            shown += 1
        for mismatch in self.column_mismatches[: max(0, limit - shown)]:
            lines.append(f"  - [v1 columns] {mismatch.describe()}")
        hidden = sum(self.problem_counts.values()) + len(self.column_mismatches) - shown
        hidden -= min(len(self.column_mismatches), max(0, limit - shown))
        if hidden > 0:
            lines.append(f"  ... and {hidden} more (see --json)")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- hashing


def git_hash(object_format: Any, type_name: str, raw: bytes) -> str:
    """The id git gives an object: hash of `"<type> <size>\\0" + raw`."""
    header = f"{type_name} {len(raw)}\0".encode("ascii")
    return object_format.hash_object_hex(header + raw).decode("ascii")  # type: ignore[no-any-return]


def raw_from_content(type_name: str, content: str) -> bytes:
    """The raw object bytes a row's content stands for (trees are base64)."""
    if type_name == "tree":
        return base64.b64decode(content.encode("ascii"), validate=True)
    return content.encode("utf-8")


# ----------------------------------------------------------------------------- the checks

_OBJECTS_SQL = "SELECT sha, type, size, content FROM {} WHERE sha = ANY (%s)"
_COMMITS_SQL = """
SELECT commit_sha, parent_shas, tree_sha, generation, author, committer, authored_at,
       committed_at, message
FROM {} WHERE commit_sha = ANY (%s)
"""
_ENTRIES_SQL = "SELECT tree_sha, path, mode, object_sha FROM {} WHERE tree_sha = ANY (%s)"
_CHANGES_SQL = """
SELECT commit_sha, object_schema, object_name, object_type, change_type, old_definition,
       new_definition, author, committed_at, commit_message, backfilled_from_v1
FROM {} WHERE commit_sha = ANY (%s)
"""
_VERSIONS_SQL = """
SELECT commit_sha, object_schema, object_name, version_number, definition
FROM {} WHERE commit_sha = ANY (%s)
"""


def _q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _reachable(reader: GitReader, commits: list[Commit]) -> tuple[dict[str, str], list[bytes]]:
    """Every object of the branch: {hex id: type}, and the trees among them."""
    kinds: dict[str, str] = {}
    trees: list[bytes] = []

    def walk(tree_sha: bytes) -> None:
        key = tree_sha.decode()
        if key in kinds:
            return
        kinds[key] = "tree"
        trees.append(tree_sha)
        for _, mode, sha in reader.entries(tree_sha):
            if stat.S_ISDIR(mode):
                walk(sha)
            else:
                kinds.setdefault(sha.decode(), "blob")

    for commit in commits:
        kinds[commit.id.decode()] = "commit"
        walk(commit.tree)
    return kinds, trees


def _check_objects(
    conn: psycopg.Connection[Any], reader: GitReader, kinds: dict[str, str],
    options: MirrorOptions, report: VerifyReport,
) -> None:
    query = sql.SQL(_OBJECTS_SQL).format(_q(options.v2_schema, "objects"))
    found: set[str] = set()
    fmt = reader.object_format
    for chunk in iter_chunks(sorted(kinds), 2000):
        for sha, type_name, size, content in conn.execute(query, (chunk,)):
            found.add(sha)
            report.objects_checked += 1
            expected_type = kinds[sha]
            if type_name != expected_type:
                report.add("objects", f"{sha} is a {expected_type}, the row says {type_name}", sha)
                continue
            try:
                raw = raw_from_content(type_name, content)
            except (binascii.Error, ValueError):
                report.add("objects", f"tree {sha}: content is not base64", sha)
                continue
            wrong = []
            if git_hash(fmt, type_name, raw) != sha:
                wrong.append("its content does not hash to its id")
            git_size = len(reader.raw(sha.encode())[1])
            if size != git_size or len(raw) != git_size:
                wrong.append(
                    f"size column {size}, content {len(raw)} bytes, git {git_size} bytes"
                )
            if wrong:
                report.add("objects", f"{type_name} {sha}: {'; '.join(wrong)}", sha)
    for sha in sorted(set(kinds) - found):
        report.add("objects", f"{kinds[sha]} {sha} is missing", sha)


def _check_commits(
    conn: psycopg.Connection[Any], commits: list[Commit], options: MirrorOptions,
    report: VerifyReport,
) -> None:
    gen = generations(commits)
    by_sha = {c.id.decode(): c for c in commits}
    query = sql.SQL(_COMMITS_SQL).format(_q(options.v2_schema, "commit_graph"))
    found: set[str] = set()
    for chunk in iter_chunks(list(by_sha), 5000):
        for row in conn.execute(query, (chunk,)):
            sha = row[0]
            found.add(sha)
            report.commits_checked += 1
            commit = by_sha[sha]
            expected = (
                [p.decode() for p in commit.parents], commit.tree.decode(), gen[commit.id],
                commit.author.decode("utf-8", "replace"),
                commit.committer.decode("utf-8", "replace"),
                utc(commit.author_time), utc(commit.commit_time),
                commit.message.decode("utf-8", "replace"),
            )
            names = ("parent_shas", "tree_sha", "generation", "author", "committer",
                     "authored_at", "committed_at", "message")
            pairs = zip(names, expected, row[1:], strict=True)
            wrong = [name for name, want, got in pairs if want != got]
            if wrong:
                report.add("commits", f"commit {sha}: {', '.join(wrong)} differ from git", sha)
    for sha in sorted(set(by_sha) - found):
        report.add("commits", f"commit {sha} is missing from commit_graph", sha)


def _check_refs(
    conn: psycopg.Connection[Any], tip: str, options: MirrorOptions, report: VerifyReport
) -> None:
    refs = _q(options.v2_schema, "refs")
    row = conn.execute(
        sql.SQL("SELECT target_sha, type FROM {} WHERE name = %s").format(refs), (options.branch,)
    ).fetchone()
    if row is None:
        report.add("refs", f"no ref {options.branch!r}")
    elif row[0] != tip or row[1] != "branch":
        report.add("refs", f"ref {options.branch!r} is a {row[1]} at {row[0]}, git has {tip}")
    head = conn.execute(
        sql.SQL("SELECT ref_name, direct_sha FROM {}").format(_q(options.v2_schema, "HEAD"))
    ).fetchall()
    if not head:
        report.add("refs", "HEAD has no row")
    elif head[0][0] != options.branch:
        other = conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE name = %s").format(refs), (head[0][0],)
        ).fetchone()
        if other is None:
            report.add("refs", f"HEAD names ref {head[0][0]!r}, which does not exist")
        else:
            report.notes.append(f"HEAD names ref {head[0][0]!r}, not {options.branch!r}")


def _check_entries(
    conn: psycopg.Connection[Any], reader: GitReader, trees: list[bytes],
    options: MirrorOptions, report: VerifyReport,
) -> None:
    query = sql.SQL(_ENTRIES_SQL).format(_q(options.v2_schema, "tree_entries"))
    for chunk in iter_chunks(trees, 2000):
        rows: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for tree_sha, path, mode, object_sha in conn.execute(query, ([t.decode() for t in chunk],)):
            rows[tree_sha].add((path, mode, object_sha))
            report.tree_entries_checked += 1
        for tree in chunk:
            report.trees_checked += 1
            expected = {(p, m, s.decode()) for p, m, s in reader.listing(tree)}
            got = rows.get(tree.decode(), set())
            if expected != got:
                missing = sorted(p for p, _, _ in expected - got)
                extra = sorted(p for p, _, _ in got - expected)
                report.add(
                    "tree_entries",
                    f"tree {tree.decode()}: entries differ from ls-tree -r "
                    f"(missing or wrong: {', '.join(missing[:5]) or '-'}; "
                    f"unexpected or wrong: {', '.join(extra[:5]) or '-'})",
                    tree.decode(),
                )


def _check_audit(
    conn: psycopg.Connection[Any], reader: GitReader, commits: list[Commit],
    options: MirrorOptions, report: VerifyReport,
) -> None:
    tables = existing_tables(conn, [options.audit_schema])
    for table in ("changes", "object_versions"):
        if (options.audit_schema, table) not in tables:
            report.add("audit", f"{options.audit_schema}.{table} does not exist")
            return
    changes_q = sql.SQL(_CHANGES_SQL).format(_q(options.audit_schema, "changes"))
    versions_q = sql.SQL(_VERSIONS_SQL).format(_q(options.audit_schema, "object_versions"))
    # Version numbers seen so far per object, in history order, to check they grow.
    last_version: dict[tuple[str, str], int] = {}
    for chunk in iter_chunks(commits, 500):
        shas = [c.id.decode() for c in chunk]
        got_changes: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
        for row in conn.execute(changes_q, (shas,)):
            got_changes[row[0]][tuple(row[1:])] += 1
            report.audit_changes_checked += 1
        got_versions: dict[str, list[tuple[str, str, int, str]]] = defaultdict(list)
        for row in conn.execute(versions_q, (shas,)):
            got_versions[row[0]].append((row[1], row[2], row[3], row[4]))
            report.object_versions_checked += 1
        for commit in chunk:
            sha = commit.id.decode()
            author = identity_name(commit.author.decode("utf-8", "replace"))
            when = utc(commit.commit_time)
            message = commit.message.decode("utf-8", "replace")
            expected_changes: Counter[tuple[Any, ...]] = Counter()
            expected_versions: Counter[tuple[str, str, str]] = Counter()
            for change in reader.audit_changes(first_parent_tree(reader, commit), commit.tree):
                obj = change.object
                expected_changes[(
                    obj.schema, obj.name, obj.type, change.change_type, change.old_definition,
                    change.new_definition, author, when, message, True,
                )] += 1
                if change.new_definition is not None:
                    expected_versions[(obj.schema, obj.name, change.new_definition)] += 1
            got = got_changes.get(sha, Counter())
            if got != expected_changes:
                _describe_audit_difference(report, sha, expected_changes, got)
            versions = got_versions.get(sha, [])
            if Counter((s, n, d) for s, n, _, d in versions) != expected_versions:
                report.add(
                    "versions",
                    f"commit {sha}: {len(versions)} object_versions rows, expected "
                    f"{sum(expected_versions.values())} (or their definitions differ)", sha,
                )
            for schema, name, number, _ in sorted(versions, key=lambda v: v[2]):
                previous = last_version.get((schema, name))
                if previous is not None and number <= previous:
                    report.add(
                        "versions",
                        f"{schema}.{name}: version {number} at {sha} does not follow {previous}",
                        sha,
                    )
                last_version[(schema, name)] = number


def _describe_audit_difference(
    report: VerifyReport, sha: str, expected: Counter[tuple[Any, ...]],
    got: Counter[tuple[Any, ...]],
) -> None:
    missing = expected - got
    extra = got - expected
    def names(rows: Counter[tuple[Any, ...]]) -> str:
        return ", ".join(f"{r[3]} {r[2]} {r[0]}.{r[1]}" for r in sorted(rows)[:5]) or "-"
    report.add(
        "audit",
        f"commit {sha}: {sum(got.values())} change rows, expected {sum(expected.values())} "
        f"(missing or different: {names(missing)}; unexpected: {names(extra)})",
        sha,
    )


# ----------------------------------------------------------------------------- v1 columns

_TYPE_ALIASES = {
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "bit varying": "varbit",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "time with time zone": "timetz",
    "time without time zone": "time",
    "double precision": "float8",
    "real": "float4",
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "boolean": "bool",
    "decimal": "numeric",
    '"char"': "char",
}

_MODIFIER_RE = re.compile(r"\(([^)]*)\)")
_IDENT_RE = r'(?:"(?:[^"]|"")*"|[^".\s]+)'
_QUALIFIED_RE = re.compile(rf"^{_IDENT_RE}\.(?={_IDENT_RE})")


def split_type(type_text: str) -> tuple[str, str | None, int]:
    """`public.foo(3)[]` -> ("foo", "3", 1): base name as v1 spells it, modifier, dimensions."""
    text = type_text.strip()
    dims = 0
    while text.endswith("[]"):
        text = text[:-2].rstrip()
        dims += 1
    modifier = None
    match = _MODIFIER_RE.search(text)
    if match is not None:
        modifier = match.group(1).replace(" ", "")
        text = (text[: match.start()] + text[match.end():]).strip()
        text = " ".join(text.split())
    text = _QUALIFIED_RE.sub("", text)
    if text == '"char"':
        return "char", modifier, dims
    text = strip_identifier_quotes(text)
    return _TYPE_ALIASES.get(text, text), modifier, dims


def v1_type(type_text: str) -> tuple[str, str | None]:
    """v1's spelling: `_int4` for arrays; the modifier separately."""
    base, modifier, dims = split_type(type_text)
    return ("_" + base if dims else base), modifier


def _closing_paren(text: str, start: int) -> int | None:
    """Index of the parenthesis closing the one at `start`, outside quotes."""
    depth, quote = 0, ""
    for index in range(start, len(text)):
        ch = text[index]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return index
    return None


def _split_items(body: str) -> list[str]:
    """The comma-separated items of CREATE TABLE's parentheses, at depth 0, outside quotes."""
    items, depth, current, quote = [], 0, [], ""
    for ch in body:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        items.append("".join(current).strip())
    return items


_CREATE_TABLE_RE = re.compile(
    rf"^CREATE (?:UNLOGGED )?TABLE ({_IDENT_RE}\.{_IDENT_RE})"
    r"(?: PARTITION OF (\S+))?",
    re.MULTILINE,
)
_COLUMN_END_RE = re.compile(r" (?:COLLATE|DEFAULT|GENERATED|NOT NULL|NULL|CONSTRAINT)\b")
_INHERITS_RE = re.compile(r"^INHERITS \((.*)\)", re.MULTILINE)
_DOMAIN_RE = re.compile(rf"^CREATE DOMAIN ({_IDENT_RE}\.{_IDENT_RE}) AS (.+)$", re.MULTILINE)


@dataclass
class TableFile:
    """The columns a table file declares, and the tables it takes columns from."""

    columns: dict[str, str]  # name -> type as written
    parents: list[str]  # qualified names, as written


def parse_table_file(text: str) -> TableFile | None:
    """Columns and parents of the CREATE TABLE in a table file (snapshot.py's format)."""
    match = _CREATE_TABLE_RE.search(text)
    if match is None:
        return None
    parents = [match.group(2)] if match.group(2) else []
    rest = text[match.end():]
    columns: dict[str, str] = {}
    if rest.startswith(" ("):
        end = _closing_paren(rest, 1)
        body = rest[2:end] if end is not None else ""
        for item in _split_items(body):
            if item.startswith("CONSTRAINT ") or not item:
                continue
            name_match = re.match(_IDENT_RE, item)
            if name_match is None:
                continue
            name = strip_identifier_quotes(name_match.group(0))
            tail = item[name_match.end():]
            cut = _COLUMN_END_RE.search(tail)
            columns[name] = (tail[: cut.start()] if cut else tail).strip()
        after = rest[end + 1:] if end is not None else ""
    else:
        after = rest
    statement_end = after.find(";")
    inherits = _INHERITS_RE.search(after[: statement_end if statement_end >= 0 else None])
    if inherits is not None:
        parents += [p.strip() for p in inherits.group(1).split(",")]
    return TableFile(columns, parents)


def _qualified_key(name: str) -> tuple[str, str]:
    schema, _, table = name.partition(".")
    parts = re.findall(_IDENT_RE, name)
    if len(parts) == 2:
        return strip_identifier_quotes(parts[0]), strip_identifier_quotes(parts[1])
    return strip_identifier_quotes(schema), strip_identifier_quotes(table)


class _Catalog:
    """The tables and domains of one commit's tree, parsed on demand."""

    def __init__(self, reader: GitReader, tree: bytes) -> None:
        self.reader = reader
        self.files: dict[ObjectId, tuple[str, bytes]] = {}
        for path, _, sha in reader.listing(tree):
            key = reader.object_of(path, sha)
            if key is not None:
                self.files[key] = (path, sha)
        self._domains: dict[str, str] | None = None

    def path(self, schema: str, name: str) -> str | None:
        found = self.files.get(ObjectId(schema, name, "TABLE"))
        return found[0] if found else None

    def table(self, schema: str, name: str) -> TableFile | None:
        found = self.files.get(ObjectId(schema, name, "TABLE"))
        if found is None:
            return None
        return parse_table_file(self.reader.text(found[1], found[0]))

    def columns(self, schema: str, name: str, depth: int = 0) -> dict[str, str] | None:
        table = self.table(schema, name)
        if table is None or depth > 20:
            return None
        columns: dict[str, str] = {}
        for parent in table.parents:
            inherited = self.columns(*_qualified_key(parent), depth + 1)
            columns.update(inherited or {})
        columns.update(table.columns)
        return columns

    def domains(self) -> dict[str, str]:
        """Domain name (unqualified, v1 style) -> base type as written."""
        if self._domains is None:
            self._domains = {}
            for key, (path, sha) in self.files.items():
                if key.type != "TYPE":
                    continue
                for match in _DOMAIN_RE.finditer(self.reader.text(sha, path)):
                    self._domains[_qualified_key(match.group(1))[1]] = match.group(2).strip()
        return self._domains


def _normalised(type_text: str, domains: dict[str, str]) -> tuple[str, str | None]:
    base, modifier = v1_type(type_text)
    seen = 0
    while base in domains and seen < 10:  # a domain over a domain: v1 records the last base
        base, modifier = v1_type(domains[base])
        seen += 1
    return base, modifier


def compare_columns(
    recorded: dict[str, Any], declared: dict[str, str], domains: dict[str, str]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, type differences) between v1's columns and a file's."""
    missing = sorted(set(recorded) - set(declared))
    unexpected = sorted(set(declared) - set(recorded))
    types = []
    for name in sorted(set(recorded) & set(declared)):
        info = recorded[name] if isinstance(recorded[name], dict) else {}
        v1 = str(info.get("type") or "")
        if not v1:
            continue
        v1_base, v1_mod = v1_type(v1)
        file_base, file_mod = _normalised(declared[name], domains)
        if v1_base != file_base or (v1_mod is not None and v1_mod != file_mod):
            types.append(f"{name}: v1 {v1}, file {declared[name]}")
    return missing, unexpected, types


_HISTORY_SQL = """
SELECT h.id, h.change_type::text, o.schema_name, o.object_name, h.new_metadata -> 'columns'
FROM pggit.history h
JOIN pggit.objects o ON o.id = h.object_id
WHERE o.object_type::text = 'TABLE'
ORDER BY h.id
"""


def _check_v1_columns(
    conn: psycopg.Connection[Any], reader: GitReader, commits: list[Commit],
    report: VerifyReport,
) -> None:
    present = existing_tables(conn, ["pggit"])
    if ("pggit", "history") not in present or ("pggit", "objects") not in present:
        report.column_check = "the target has no pggit.history (v1 tables)"
        report.notes.append("v1 column check skipped: the target has no pggit.history")
        return
    columns = read_history_columns(conn)
    if not (columns.has("history", "new_metadata") and columns.has("history", "change_type")):
        report.column_check = "the target's pggit.history records no column lists"
        report.notes.append("v1 column check skipped: pggit.history has no new_metadata or "
                            "change_type (an older pgGit)")
        return
    commit_of: dict[int, Commit] = {}
    not_comparable: set[bytes] = set()
    for commit in commits:
        message = commit.message.decode("utf-8", "replace")
        ids = read_trailer(message, "Pggit-History-Ids")
        if ids:
            for history_id in parse_id_ranges(ids):
                commit_of[history_id] = commit
        if read_trailer(message, "Pggit-Replay"):
            not_comparable.add(commit.id)
    # Last row per (commit, table): later rows of one changeset supersede earlier ones.
    last: dict[tuple[bytes, str, str], tuple[int, str, Any]] = {}
    skipped_failed = 0
    for history_id, change_type, schema, name, columns in conn.execute(_HISTORY_SQL):
        covering = commit_of.get(history_id)
        if covering is None:
            continue
        if covering.id in not_comparable:
            skipped_failed += 1
            continue
        last[(covering.id, schema, name)] = (history_id, change_type, columns)
    catalogs: dict[bytes, _Catalog] = {}
    by_id: dict[bytes, Commit] = {c.id: c for c in commits}
    for (commit_id, schema, name), (history_id, change_type, columns) in sorted(
        last.items(), key=lambda item: item[1][0]
    ):
        if change_type not in ("CREATE", "ALTER") or not isinstance(columns, dict):
            continue
        report.history_rows_checked += 1
        commit = by_id[commit_id]
        catalog = catalogs.get(commit_id)
        if catalog is None:
            catalog = catalogs[commit_id] = _Catalog(reader, commit.tree)
        declared = catalog.columns(schema, name)
        table = f"{schema}.{name}"
        if declared is None:
            report.column_mismatches.append(ColumnMismatch(
                history_id, commit_id.decode(), table, None,
                note="no file for this table in the commit",
            ))
            continue
        missing, unexpected, types = compare_columns(columns, declared, catalog.domains())
        if missing or unexpected or types:
            report.column_mismatches.append(ColumnMismatch(
                history_id, commit_id.decode(), table, catalog.path(schema, name),
                missing, unexpected, types,
            ))
    report.column_check = "done"
    if skipped_failed:
        report.notes.append(
            f"v1 column check: {skipped_failed} table rows in commits whose replay failed or "
            "was skipped were not compared"
        )


def verify_mirror(
    repo: str | os.PathLike[str], target: str, options: MirrorOptions | None = None
) -> VerifyReport:
    """Check the mirror of `repo`'s branch in `target` (see the module docstring)."""
    options = options or MirrorOptions()
    report = VerifyReport(
        repository=str(repo), target=_redacted(target), branch=options.branch,
        v2_schema=options.v2_schema, audit_schema=options.audit_schema,
    )
    with open_repository(repo) as git_repo:
        reader = GitReader(git_repo)
        report.object_format = reader.object_format.name
        tip = branch_tip(git_repo, options.branch)
        report.head = tip.decode()
        commits = reader.load_branch(tip)
        kinds, trees = _reachable(reader, commits)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                v2_tables = existing_tables(conn, [options.v2_schema])
                missing = [t for t in ("objects", "refs", "HEAD", "commit_graph", "tree_entries")
                           if (options.v2_schema, t) not in v2_tables]
                if missing:
                    for table in missing:
                        report.add("objects", f"{options.v2_schema}.{table} does not exist")
                else:
                    _check_objects(conn, reader, kinds, options, report)
                    _check_commits(conn, commits, options, report)
                    _check_refs(conn, report.head, options, report)
                    _check_entries(conn, reader, trees, options, report)
                _check_audit(conn, reader, commits, options, report)
                _check_v1_columns(conn, reader, commits, report)
            finally:
                conn.execute("ROLLBACK")
    return report


__all__ = [
    "ColumnMismatch", "MirrorError", "Problem", "VerifyReport", "compare_columns",
    "git_hash", "parse_table_file", "split_type", "verify_mirror",
]
