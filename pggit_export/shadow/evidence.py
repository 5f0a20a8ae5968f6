"""Evidence read ahead: what later recorded statements add, so a repair does not add it early.

The healer creates what a changeset trips over from the source's *live* catalog, which holds
each object's final shape. An enum created there with every live label would hold a label
that the history adds months later with ``ALTER TYPE ... ADD VALUE``: the commits in between
would show it, and the later statement would fail ("already exists") and roll its whole
changeset back. A repair must never make the replay less true.

So before the first replay, one pass over the recorded texts (``read_later_changes``) notes
every enum label a statement adds (``ALTER TYPE t ADD VALUE 'x'``) and every column
(``ALTER TABLE t ADD [COLUMN] c ...``), with the history id of the first row that adds it,
and every text that drops a function by name (``DROP FUNCTION f(...)``).
A repair made before the changeset starting at history id N (it then replays whole) leaves
out what is first added at N or later (``LaterChanges.labels_added_from`` /
``columns_added_from``) and says so.

Where the recorded texts are silent (one statement per query loses every ``ALTER TYPE``),
the OIDs can speak: ``OidClock`` dates a live object between two history rows by its OID,
when the recorded OIDs can be trusted (below).

Names are compared as the catalog spells them, by the object's own name: a statement that
names ``app.mood`` and one that names ``mood`` under another ``search_path`` both count
for any schema's ``mood`` (an over-cautious answer costs a label the later statement adds
anyway; a missed one imports the future).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import IDENTIFIER_PATTERN, catalog_name
from pggit_export.read.history import ALL_COLUMNS, HistoryColumns
from pggit_export.read.sqlsplit import split, without_leading_comments

_NAME = IDENTIFIER_PATTERN
_QUALIFIED = rf"(?:{_NAME}\s*\.\s*)?(?P<name>{_NAME})"
_ADD_VALUE = re.compile(
    rf"^\s*ALTER\s+TYPE\s+{_QUALIFIED}\s+ADD\s+VALUE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"'(?P<label>(?:[^']|'')*)'",
    re.I,
)
_ALTER_TABLE = re.compile(
    rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}\s+(?P<actions>.*)$",
    re.I | re.S,
)
# One ADD action of ALTER TABLE: ADD [COLUMN] [IF NOT EXISTS] name, not a constraint.
_ADD_COLUMN = re.compile(
    rf"(?:^|,)\s*ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?P<column>{_NAME})",
    re.I,
)
_CREATE_ENUM = re.compile(
    rf"^\s*CREATE\s+TYPE\s+{_QUALIFIED}\s+AS\s+ENUM\s*\((?P<labels>(?:[^')]|'(?:[^']|'')*')*)\)",
    re.I | re.S,
)
_LABEL = re.compile(r"'((?:[^']|'')*)'")
_NOT_COLUMNS = {"constraint", "primary", "unique", "check", "foreign", "exclude", "column"}
_DROP_FUNCTION = re.compile(
    rf"\bDROP\s+(?:FUNCTION|PROCEDURE)\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}", re.I)
_DROP_TABLE = re.compile(rf"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}", re.I)

# Only texts that can add a label or a column are read: the server filters.
_CANDIDATES_SQL = r"""
SELECT min(h.id) AS id, h.sql_executed
FROM pggit.history AS h
WHERE h.sql_executed ~* 'ADD\s+VALUE|AS\s+ENUM|ALTER\s+TABLE|DROP\s+(FUNCTION|PROCEDURE|TABLE)'
GROUP BY h.sql_executed
ORDER BY min(h.id)
"""


@dataclass(frozen=True)
class LaterChanges:
    """First history id adding each enum label and each column (see the module)."""

    # type name -> label -> first history id; table name -> column -> first history id
    enum_labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    columns: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # function name -> history ids of the texts that drop a function of that name
    function_drops: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # table name -> history ids of the texts that drop a table of that name
    table_drops: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # enum type name -> (first history id creating it with CREATE TYPE ... AS ENUM, labels)
    enum_creations: Mapping[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)

    def drops_table_from(self, name: str, history_id: int) -> int | None:
        """The first history id at or after `history_id` whose text drops a table `name`."""
        return next((i for i in self.table_drops.get(name, ()) if i >= history_id), None)

    def drops_function_from(self, name: str, history_id: int) -> int | None:
        """The first history id at or after `history_id` whose text drops a function
        `name` itself (any overload), or None."""
        return next((i for i in self.function_drops.get(name, ()) if i >= history_id), None)

    def labels_added_from(self, type_name: str, history_id: int) -> dict[str, int]:
        """Labels of enum `type_name` that the history first adds at `history_id` or later
        (a repair runs before the changeset starting there: its own statements count)."""
        return {label: first for label, first in self.enum_labels.get(type_name, {}).items()
                if first >= history_id}

    def columns_added_from(self, table_name: str, history_id: int) -> dict[str, int]:
        """Columns of table `table_name` that the history first adds at `history_id` or later."""
        return {column: first for column, first in self.columns.get(table_name, {}).items()
                if first >= history_id}


def later_changes_of(texts: Iterable[tuple[int, str]]) -> LaterChanges:
    """Read (history id, recorded text) pairs, in id order."""
    labels: dict[str, dict[str, int]] = {}
    columns: dict[str, dict[str, int]] = {}
    drops: dict[str, list[int]] = {}
    table_drops: dict[str, list[int]] = {}
    created: dict[str, tuple[int, tuple[str, ...]]] = {}
    for history_id, text in texts:
        # Searched whole: a DROP inside a DO block counts too.
        for pattern, found in ((_DROP_FUNCTION, drops), (_DROP_TABLE, table_drops)):
            for drop in pattern.finditer(text):
                ids = found.setdefault(catalog_name(drop.group("name")), [])
                if not ids or ids[-1] != history_id:
                    ids.append(history_id)
        for piece in split(text):
            # The patterns read from the statement's first word, behind any comments.
            statement = without_leading_comments(piece)
            if m := _ADD_VALUE.match(statement):
                label = m.group("label").replace("''", "'")
                labels.setdefault(catalog_name(m.group("name")), {}).setdefault(label, history_id)
            elif m := _CREATE_ENUM.match(statement):
                created.setdefault(catalog_name(m.group("name")), (history_id, tuple(
                    label.replace("''", "'") for label in _LABEL.findall(m.group("labels")))))
            elif m := _ALTER_TABLE.match(statement):
                table = columns.setdefault(catalog_name(m.group("name")), {})
                for action in _ADD_COLUMN.finditer(m.group("actions")):
                    column = action.group("column")
                    if column.lower() not in _NOT_COLUMNS:
                        table.setdefault(catalog_name(column), history_id)
    return LaterChanges(enum_labels=labels, columns={t: c for t, c in columns.items() if c},
                        function_drops={name: tuple(ids) for name, ids in drops.items()},
                        table_drops={name: tuple(ids) for name, ids in table_drops.items()},
                        enum_creations=created)


# OID chronology. OIDs come from one cluster-wide counter, so an object's OID says when it
# was created relative to others, as long as the database was never dumped and restored
# (which gives every object a new OID) and the counter did not wrap. v1 records the OID of
# each table, view and index it sees created (new_metadata.oid), and names each function
# it records by its OID (pggit.objects.object_name): both are points of the clock. Only
# the relations can be checked against the live catalog (a function's name is its OID).
_RECORDED_OIDS_SQL = r"""
SELECT h.id,
       CASE WHEN o.object_type::text = 'FUNCTION' THEN o.object_name::bigint
            ELSE (h.new_metadata->>'oid')::bigint END AS oid,
       o.object_type::text = 'FUNCTION' AS is_function, o.schema_name, o.object_name,
       CASE WHEN o.object_type::text <> 'FUNCTION' THEN
       pg_catalog.to_regclass(pg_catalog.quote_ident(o.schema_name) || '.'
                              || pg_catalog.quote_ident(o.object_name))::oid::bigint
       END AS live_oid
FROM pggit.history AS h
JOIN pggit.objects AS o ON o.id = h.object_id
WHERE h.change_type::text = 'CREATE'
  AND (o.object_type::text IN ('TABLE', 'VIEW', 'INDEX')
       AND h.new_metadata ? 'oid' AND (h.new_metadata->>'oid') ~ '^[0-9]{1,10}$'
       OR o.object_type::text = 'FUNCTION' AND o.object_name ~ '^[0-9]{1,10}$')
ORDER BY h.id
"""


@dataclass(frozen=True)
class OidClock:
    """Dates a live object by its OID against the OIDs history rows recorded (see above).

    ``usable`` only when the recorded OIDs grow with the history and every recorded
    relation that still exists under its name has its recorded OID; ``reason`` says why or
    why not. An object of OID `oid` was created after the row ``last_older(oid)`` and
    before the row ``first_newer(oid)``.
    """

    ids: tuple[int, ...] = ()  # history ids of CREATE rows with an OID, ascending
    oids: tuple[int, ...] = ()  # their OIDs
    usable: bool = False
    reason: str = "no history row records an OID"

    def last_older(self, oid: int) -> int | None:
        """The last history id whose recorded object is older than `oid`: the object of
        `oid` was created after that row. None: unusable, or older than every row's."""
        if not self.usable:
            return None
        older = [row_id for row_id, recorded in zip(self.ids, self.oids) if recorded < oid]
        return max(older) if older else None

    def first_newer(self, oid: int) -> int | None:
        """The first history id whose recorded object is newer than `oid`: the object of
        `oid` was created before that row. None: unusable, or newer than every row's."""
        if not self.usable:
            return None
        return next((row_id for row_id, recorded in zip(self.ids, self.oids) if recorded > oid),
                    None)


def read_oid_clock(
    conn: psycopg.Connection[Any], columns: HistoryColumns = ALL_COLUMNS
) -> OidClock:
    """The recorded OIDs, and whether they may be trusted (in the reader's transaction)."""
    if not (columns.has("history", "new_metadata") and columns.has("history", "change_type")):
        return OidClock(reason="pggit.history records no change types or metadata: not used")
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_RECORDED_OIDS_SQL).fetchall()
    if not rows:
        return OidClock()
    # CREATE OR REPLACE of an existing view or function records its old OID again: date
    # by the first.
    first_rows = list({row[1]: row for row in reversed(rows)}.values())
    first_rows.sort(key=lambda row: row[0])
    ids = tuple(row[0] for row in first_rows)
    oids = tuple(row[1] for row in first_rows)
    # The last CREATE of each relation's name is the object that may still be there.
    last: dict[tuple[str, str], tuple[int, int | None]] = {
        (row[3], row[4]): (row[1], row[5]) for row in rows if not row[2]
    }
    live = [(recorded, now) for recorded, now in last.values() if now is not None]
    if any(later < earlier for earlier, later in zip(oids, oids[1:])):
        return OidClock(ids, oids, False, "recorded OIDs do not grow with the history "
                        "(the OID counter wrapped, or the rows were edited): not used")
    if not live:
        return OidClock(ids, oids, False, "no recorded object exists live to check the OIDs "
                        "against: not used")
    wrong = sum(1 for recorded, now in live if recorded != now)
    if wrong:
        return OidClock(ids, oids, False, f"{wrong} of {len(live)} recorded OIDs differ from "
                        "the live objects' (the database was dumped and restored?): not used")
    return OidClock(ids, oids, True, f"usable: {len(live)} recorded OIDs match the live "
                    "objects and grow with the history")


# Live objects of kinds v1 never writes a row for, with their OIDs for the clock: standalone
# sequences (not a column's), types (enum, domain, range, composite; not a table's row
# type), materialized views and procedures (one row per name: the oldest overload), outside
# extensions; for an enum, also its newest label's OID.
_UNRECORDED_KINDS_SQL = r"""
SELECT CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'matview' END,
       n.nspname, c.relname, c.oid::bigint, NULL::bigint
FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('S', 'm')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT 'type', n.nspname, t.typname, t.oid::bigint,
       (SELECT max(e.oid::bigint) FROM pg_catalog.pg_enum AS e WHERE e.enumtypid = t.oid)
FROM pg_catalog.pg_type AS t JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'c')
  AND (t.typtype <> 'c' OR (SELECT r.relkind FROM pg_catalog.pg_class AS r
                            WHERE r.oid = t.typrelid) = 'c')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                  WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid
                    AND d.deptype IN ('e', 'i'))
UNION ALL
SELECT 'procedure', n.nspname, p.proname, min(p.oid::bigint), NULL
FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.prokind = 'p'
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
GROUP BY n.nspname, p.proname
ORDER BY 1, 2, 3
"""

# Each kind's snapshot file (an ObjectKey's kind: a procedure is in its name's function
# file) and the statement v1 never records.
_UNRECORDED_KINDS = {"sequence": ("sequence", "CREATE SEQUENCE"), "type": ("type", "CREATE TYPE"),
                     "matview": ("matview", "CREATE MATERIALIZED VIEW"),
                     "procedure": ("function", "CREATE PROCEDURE")}


@dataclass(frozen=True)
class UnrecordedObject:
    """A live object of a kind v1 never records (sequence, type, materialized view,
    procedure): only its OID can date it."""

    kind: str  # sequence, type, matview, procedure
    schema: str
    name: str
    oid: int
    newest_label: int | None  # an enum's newest label's OID (labels can be added later)

    @property
    def key_kind(self) -> str:
        """The kind of its snapshot file (render.snapshot.ObjectKey)."""
        return _UNRECORDED_KINDS[self.kind][0]

    @property
    def statement(self) -> str:
        """The statement that makes it, which v1 never records."""
        return _UNRECORDED_KINDS[self.kind][1]


def read_unrecorded_objects(conn: psycopg.Connection[Any],
                            exclude_schemas: Collection[str]) -> list[UnrecordedObject]:
    """The live objects of kinds v1 never records, of `conn` (read only), by kind, schema
    and name."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_UNRECORDED_KINDS_SQL, {"exclude": list(exclude_schemas)}).fetchall()
    return [UnrecordedObject(*row) for row in rows]


def read_later_changes(conn: psycopg.Connection[Any]) -> LaterChanges:
    """The read-ahead over the source's whole history, in the reader's transaction."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return later_changes_of((row[0], _text(row[1])) for row in cur.execute(_CANDIDATES_SQL))


def _text(value: str | bytes) -> str:
    """A text column as str: an SQL_ASCII source gives bytes in no known encoding."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# What the history creates, by name. v1 writes a row for every CREATE TABLE, CREATE VIEW,
# CREATE INDEX and CREATE FUNCTION it sees (pggit-tables.md), so a live table, view or
# function that no recorded text creates, renames into being or records as created existed
# before pgGit was installed: it belongs at the start of the history (shadow/prehistory.py).
# Texts are searched whole, function bodies and DO blocks included: a name created anywhere
# counts, which can only keep an object out of the start (as before this evidence), never
# put one there wrongly.
_CREATES = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?"
    r"(?:TEMP\s+|TEMPORARY\s+|UNLOGGED\s+|RECURSIVE\s+|MATERIALIZED\s+|UNIQUE\s+|CONSTRAINT\s+)?"
    r"(?P<kind>TABLE|VIEW|FUNCTION|PROCEDURE|INDEX|TRIGGER|SEQUENCE|TYPE)\s+"
    r"(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?" + _QUALIFIED,
    re.I,
)
_RENAMES = re.compile(
    rf"\bALTER\s+(?:MATERIALIZED\s+)?(?P<kind>TABLE|VIEW|FUNCTION|PROCEDURE|INDEX|SEQUENCE|TYPE)"
    rf"\s+(?:IF\s+EXISTS\s+)?[^;]*?\bRENAME\s+TO\s+(?P<name>{_NAME})",
    re.I,
)
_ADDS_CONSTRAINT = re.compile(rf"\bADD\s+CONSTRAINT\s+(?P<name>{_NAME})", re.I)
# COMMENT ON TABLE [s.]t / COLUMN [s.]t.c: noted as "t" and "t.c" (family "comment").
_COMMENTS = re.compile(
    rf"\bCOMMENT\s+ON\s+(?:(?P<kind>TABLE|VIEW)\s+{_QUALIFIED}"
    rf"|COLUMN\s+(?:{_NAME}\s*\.\s*)?(?P<table>{_NAME})\s*\.\s*(?P<column>{_NAME}))\s+IS\b",
    re.I,
)
# ALTER TABLE [s.]t ... SET (storage parameters) and ALTER [COLUMN] c SET (attribute
# options, n_distinct say): noted as "t" and "t.c" (family "options"). The actions are read
# up to the statement's end.
_ALTERS_TABLE = re.compile(
    rf"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_QUALIFIED}(?P<actions>[^;]*)", re.I)
_SETS_OPTIONS = re.compile(
    rf"(?:^|,)\s*(?:ALTER\s+(?:COLUMN\s+)?(?P<column>{_NAME})\s+)?SET\s*\(", re.I)
# CREATE TRIGGER name ... ON [schema.]table, written out (not assembled at run time: a
# function body's `'... ON %s'` names no table and does not match).
_CREATES_TRIGGER_ON = re.compile(
    rf"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+(?P<name>{_NAME})\s"
    rf"[^;']*?\bON\s+(?:{_NAME}\s*\.\s*)?(?P<table>{_NAME})(?![\w$%])",
    re.I,
)
_KIND_FAMILY = {"table": "relation", "view": "relation", "index": "index",
                "sequence": "relation", "function": "function", "procedure": "function",
                "trigger": "trigger", "type": "type"}

_CREATED_TEXTS_SQL = r"""
SELECT min(h.id) AS id, h.sql_executed
FROM pggit.history AS h
WHERE h.sql_executed ~* '(CREATE|RENAME\s+TO|ADD\s+CONSTRAINT|COMMENT\s+ON|SET\s*\()'
GROUP BY h.sql_executed
ORDER BY min(h.id)
"""

# v1's own account: objects a CREATE row recorded (an index created by an unnamed
# CREATE INDEX is only named here). Functions are recorded under their OID: not used.
_CREATED_OBJECTS_SQL = r"""
SELECT min(h.id), lower(o.object_type::text), o.object_name
FROM pggit.history AS h JOIN pggit.objects AS o ON o.id = h.object_id
WHERE h.change_type::text = 'CREATE'
  AND o.object_type::text IN ('TABLE', 'VIEW', 'INDEX', 'CONSTRAINT', 'TRIGGER', 'SEQUENCE',
                              'TYPE', 'PARTITION', 'MATERIALIZED_VIEW')
GROUP BY 2, 3
"""
# A snapshot object's kind (render.snapshot.ObjectKey) -> its family.
_KEY_FAMILY = {"table": "relation", "view": "relation", "matview": "relation",
               "sequence": "relation", "function": "function", "type": "type"}
_OBJECT_FAMILY = {"table": "relation", "view": "relation", "partition": "relation",
                  "materialized_view": "relation", "sequence": "relation", "index": "index",
                  "constraint": "constraint", "trigger": "trigger", "type": "type"}


@dataclass(frozen=True)
class RecordedCreations:
    """Names the history creates, per family (relation, index, function, constraint,
    trigger, type; constraint_on: ``table.constraint`` for ``ALTER TABLE table ADD
    CONSTRAINT``; comment: the tables and ``table.column``s a text comments on; options:
    those a text sets storage parameters or attribute options of), each with the first
    history id that creates it."""

    names: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # trigger name -> the tables a text creates a trigger of that name on, written out
    triggers_on: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def creates_trigger(self, name: str, table: str) -> bool:
        """Whether a text creates trigger `name` on `table` (by their names): written out,
        or by calling with the table's name a function whose body assembles it at run time
        (``EXECUTE format('CREATE TRIGGER ... ON %s', t)``, then ``SELECT
        audit.enable('t')``). The function alone does not count: the call that made a live
        trigger may have left no row (sent alone)."""
        return table in self.triggers_on.get(name, frozenset())

    def created(self, family: str, name: str) -> int | None:
        """The first history id creating `name` in `family`, or None: never created."""
        return self.names.get(family, {}).get(name)

    def created_object(self, kind: str, name: str) -> int | None:
        """The same for a snapshot object of `kind` (an ObjectKey's: table, view, ...);
        None also for kinds no family covers."""
        family = _KEY_FAMILY.get(kind)
        return self.created(family, name) if family is not None else None


def recorded_creations_of(
    texts: Iterable[tuple[int, str]], objects: Iterable[tuple[int, str, str]] = (),
    made_by_calls: Mapping[str, Iterable[str]] | None = None,
) -> RecordedCreations:
    """From (history id, text) pairs in id order, v1's (history id, object type, object
    name) CREATE rows, and the triggers recorded calls make (trigger name -> tables:
    ``trigger_calls_of``)."""
    names: dict[str, dict[str, int]] = {}

    def note(family: str, name: str, history_id: int) -> None:
        first = names.setdefault(family, {})
        first[name] = min(first.get(name, history_id), history_id)

    triggers_on: dict[str, set[str]] = {name: set(tables)
                                        for name, tables in (made_by_calls or {}).items()}
    for history_id, text in texts:
        for m in _CREATES_TRIGGER_ON.finditer(text):
            triggers_on.setdefault(catalog_name(m.group("name")), set()).add(
                catalog_name(m.group("table")))
        for m in _CREATES.finditer(text):
            note(_KIND_FAMILY[m.group("kind").lower()], catalog_name(m.group("name")), history_id)
        for m in _RENAMES.finditer(text):
            note(_KIND_FAMILY[m.group("kind").lower()], catalog_name(m.group("name")), history_id)
        for m in _ADDS_CONSTRAINT.finditer(text):
            note("constraint", catalog_name(m.group("name")), history_id)
        for m in _COMMENTS.finditer(text):
            target = (catalog_name(m.group("name")) if m.group("kind") else
                      f"{catalog_name(m.group('table'))}.{catalog_name(m.group('column'))}")
            note("comment", target, history_id)
        for m in _ALTERS_TABLE.finditer(text):
            table = catalog_name(m.group("name"))
            for added in _ADDS_CONSTRAINT.finditer(m.group("actions")):
                note("constraint_on", f"{table}.{catalog_name(added.group('name'))}", history_id)
            for action in _SETS_OPTIONS.finditer(m.group("actions")):
                column = action.group("column")
                note("options", f"{table}.{catalog_name(column)}" if column else table,
                     history_id)
    for history_id, object_type, name in objects:
        family = _OBJECT_FAMILY.get(object_type)
        if family is not None:
            # A table's object name can be schema-qualified or `table.column`: the last part.
            note(family, name.rsplit(".", 1)[-1] if family != "relation" else name, history_id)
    return RecordedCreations(names, {name: frozenset(tables)
                                     for name, tables in triggers_on.items()})


# A call of a function with a string literal first: `audit.enable('billing.payments')`.
_CALL_WITH_LITERAL = re.compile(rf"(?<![\w$])(?:{_NAME}\s*\.\s*)?(?P<name>{_NAME})\s*\(\s*"
                                r"'(?P<table>(?:[^']|'')*)'", re.I)


def trigger_makers_of(texts: Iterable[tuple[int, str]]) -> dict[str, set[str]]:
    """Functions whose bodies create triggers at run time: function name -> trigger
    names (from CREATE FUNCTION texts)."""
    makers: dict[str, set[str]] = {}
    for _, text in texts:
        for piece in split(text):
            statement = without_leading_comments(piece)
            m = _CREATES.match(statement)
            if m is None or m.group("kind").lower() not in ("function", "procedure"):
                continue
            names = {catalog_name(t.group("name")) for t in _CREATES.finditer(statement)
                     if t.group("kind").lower() == "trigger"}
            if names:
                makers.setdefault(catalog_name(m.group("name")), set()).update(names)
    return makers


def trigger_calls_of(texts: Iterable[tuple[int, str]],
                     makers: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Triggers the texts make by calling a maker with a table's name as a literal
    (``SELECT audit.enable('billing.payments')``): trigger name -> table names."""
    made: dict[str, set[str]] = {}
    for _, text in texts:
        for m in _CALL_WITH_LITERAL.finditer(text):
            function = catalog_name(m.group("name"))
            if function in makers:
                table = m.group("table").replace("''", "'").rsplit(".", 1)[-1]
                for trigger in makers[function]:
                    made.setdefault(trigger, set()).add(catalog_name(table))
    return made


def read_recorded_creations(
    conn: psycopg.Connection[Any], columns: HistoryColumns = ALL_COLUMNS
) -> RecordedCreations:
    """What the source's whole history creates, in the reader's transaction. Without
    change types (an older pgGit), from the texts alone. A trigger a function body makes
    at run time counts on the tables recorded texts call that function for."""
    with conn.cursor(row_factory=tuple_row) as cur:
        texts = [(row[0], _text(row[1])) for row in cur.execute(_CREATED_TEXTS_SQL)]
        objects = [(row[0], _text(row[1]), _text(row[2]))
                   for row in cur.execute(_CREATED_OBJECTS_SQL)] \
            if columns.has("history", "change_type") else []
        makers = trigger_makers_of(texts)
        callers = [(row[0], _text(row[1])) for row in cur.execute(
            _CALLING_TEXTS_SQL, {"names": sorted(makers)})] if makers else []
    return recorded_creations_of(texts, objects, trigger_calls_of(callers, makers))


# Texts naming one of the functions (by name, any case): the server filters.
_CALLING_TEXTS_SQL = r"""
SELECT min(h.id) AS id, h.sql_executed
FROM pggit.history AS h
WHERE EXISTS (SELECT 1 FROM unnest(%(names)s::text[]) AS f(name)
              WHERE strpos(lower(h.sql_executed), lower(f.name)) > 0)
GROUP BY h.sql_executed
ORDER BY min(h.id)
"""


# Enum labels named by the history. One statement per query loses every ALTER TYPE ... ADD
# VALUE, but the statements that start using a new label are recorded: a function body, an
# index predicate, a view (`status = 'aborting'`). A label no text names before a point,
# and that a later text names, is taken to have been added just before that text (the
# migration that added it is the one that started using it). A label list of CREATE TYPE
# ... AS ENUM declares, it does not use: it is not read (another type may share a label).
_ENUM_LIST = re.compile(r"^\s*CREATE\s+TYPE\s+[^;]*?\bAS\s+ENUM\b", re.I | re.S)

_MENTIONS_SQL = r"""
SELECT pg_catalog.array_agg(h.id ORDER BY h.id),
       pg_catalog.array_agg(h.created_at ORDER BY h.id), h.sql_executed
FROM pggit.history AS h
WHERE h.sql_executed LIKE ANY (%(patterns)s::text[])
GROUP BY h.sql_executed
"""


@dataclass(frozen=True)
class Mention:
    """A history row whose text names a label, and when it ran (None: not recorded)."""

    history_id: int
    time: dt.datetime | None


def _literal(label: str) -> str:
    return "'" + label.replace("'", "''") + "'"


# A literal followed by a cast: `'x'::type` or `'x'::schema.type`.
_CAST = re.compile(rf"\s*::\s*(?:{_NAME}\s*\.\s*)?(?P<type>{_NAME})")


def label_mentions_of(texts: Iterable[tuple[Iterable[Mention], str]], type_name: str,
                      labels: Iterable[str]) -> dict[str, tuple[Mention, ...]]:
    """For each label of enum `type_name`, the rows (by history id) whose texts name it as
    a string literal outside an enum's label list, and not cast to another type
    (`'cancelled'::other_type` names other_type's label); from (rows, text) pairs."""
    wanted = {label: _literal(label) for label in labels}
    found: dict[str, dict[int, Mention]] = {label: {} for label in wanted}
    for rows, text in texts:
        rows = tuple(rows)
        candidates = [label for label, literal in wanted.items() if literal in text]
        if not candidates:
            continue
        for piece in split(text):
            statement = without_leading_comments(piece)
            if _ENUM_LIST.match(statement):
                continue
            for label in candidates:
                if _names_label(statement, wanted[label], type_name):
                    found[label].update((row.history_id, row) for row in rows)
    return {label: tuple(rows[i] for i in sorted(rows)) for label, rows in found.items()}


def _names_label(statement: str, literal: str, type_name: str) -> bool:
    """Whether `statement` holds `literal` other than cast to a type not `type_name`."""
    start = statement.find(literal)
    while start >= 0:
        end = start + len(literal)
        cast = _CAST.match(statement, end)
        if cast is None or catalog_name(cast.group("type")) == type_name:
            return True
        start = statement.find(literal, end)
    return False


def read_label_mentions(conn: psycopg.Connection[Any], type_name: str,
                        labels: Iterable[str]) -> dict[str, tuple[Mention, ...]]:
    """``label_mentions_of`` over the source's whole history (in the reader's
    transaction); the server only sends the texts that contain one of the literals."""
    labels = list(labels)
    if not labels:
        return {}
    patterns = ["%" + re.sub(r"([\\%_])", r"\\\1", _literal(label)) + "%" for label in labels]
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_MENTIONS_SQL, {"patterns": patterns}).fetchall()
    texts = ((tuple(Mention(i, t) for i, t in zip(row[0], row[1])), _text(row[2])) for row in rows)
    return label_mentions_of(texts, type_name, labels)


def date_labels(oids: Mapping[str, int], mentions: Mapping[str, Sequence[Mention]],
                clock: OidClock, end: int, since: dt.datetime | None
                ) -> dict[str, tuple[int, str]]:
    """``date_label`` for each label (label -> its OID), the labels it dates only."""
    dated = {}
    for label, oid in oids.items():
        when = date_label(oid, mentions[label], clock, end, since)
        if when is not None:
            dated[label] = when
    return dated


# Changesets less than this apart are one run (one deploy of migrations).
RUN_GAP = dt.timedelta(minutes=10)


def date_label(oid: int, mentions: Sequence[Mention], clock: OidClock, end: int,
               since: dt.datetime | None) -> tuple[int, str] | None:
    """The history id before which a live enum label (OID `oid`, named by `mentions`) was
    added, and why, when the evidence dates it after the changeset ending at history id
    `end` (run at `since`); None: it was there by then, or nothing dates it.

    With a usable OID clock: between the last row recording an older OID and the first
    recording a newer one, at the first text naming it within those bounds, else just after
    the lower bound. Without: at the first text naming it, when no text up to `end` does
    and that text ran in a later run (more than RUN_GAP after `since`); a label named in the
    same run was one of the type's from the start."""
    if clock.usable:
        older, newer = clock.last_older(oid), clock.first_newer(oid)
        if newer is not None and newer <= end:
            return None  # older than a row replayed by now: there
        earliest = older + 1 if older is not None else 0
        named_at = next((m.history_id for m in mentions if m.history_id >= earliest), None)
        if named_at is not None and (newer is None or named_at <= newer):
            due, why = named_at, (f"history id {named_at} names it first, and its OID {oid} "
                                  "dates it" + (f" after history id {older}"
                                                if older is not None else ""))
        elif older is not None:
            due, why = earliest, f"its OID {oid} is newer than history id {older}'s"
        else:
            return None
        return (due, why) if due > end else None
    if not mentions or mentions[0].history_id <= end:
        return None  # never named (no evidence), or named by now: there
    named = mentions[0]
    if since is None or named.time is None or named.time - since <= RUN_GAP:
        return None
    return named.history_id, f"first named by history id {named.history_id}, a later run of changes"


def sorted_last(order: Sequence[str], later: Collection[str],
                present: Collection[str]) -> set[str]:
    """The labels of `later` that sort after every label of `present` (`order`: the live
    enum's; `present`: labels known to be there by then, listed by the type's recorded
    CREATE or named by a text and not dated late). ADD VALUE appends unless told BEFORE or AFTER, so
    without OIDs a label that sorts before one the type had all along is taken to have been
    there all along too: its place is better evidence than a late first mention. A label no
    text names is evidence of nothing and does not count."""
    last_present = max((order.index(label) for label in present if label in order), default=-1)
    return {label for label in later if label in order and order.index(label) > last_present}
