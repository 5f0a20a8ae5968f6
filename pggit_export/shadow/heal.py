"""Healing the replay: when a changeset fails, repair the shadow from the evidence, retry.

v1 does not record everything (CREATE TYPE, RENAME COLUMN, CREATE TABLE AS, DROP
FUNCTION, ... sent on their own leave no row), so a faithful replay of what it
did record trips over what it missed. The evidence for a repair is, in order:

1. the failing statement itself: a history that CREATEs `x` says `x` did not
   exist at that moment; a history that DROPs `x` says it existed (and a DROP of
   something the shadow never had needs no replay at all);
2. the source's live catalog, read only: an object a statement needs and the
   replay never created is taken from it; a blocking object it no longer has
   is dropped.

Each repair is one `Repair`: what was done and why, in words that go into the
commit (`Pggit-Repaired: ...`), the report and `--json`. Repairs run in the
shadow, committed before the retry (an enum value added in the retry's own
transaction could not be used there). What cannot be repaired stays a failure.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.rows

from pggit_export.identifiers import (
    IDENTIFIER_PATTERN,
    catalog_name,
    qualified_name,
    quote_identifier,
    quote_identifier_if_needed,
    quote_literal,
)
from pggit_export.read.environment import search_path_schemas
from pggit_export.read.history import Changeset
from pggit_export.read.sqlsplit import split, without_leading_comments
from pggit_export.render.dialect import Dialect
from pggit_export.render.snapshot import ObjectKey, render_objects
from pggit_export.restore import load_files
from pggit_export.shadow.evidence import (
    RUN_GAP,
    LaterChanges,
    Mention,
    OidClock,
    RecordedCreations,
    UnrecordedObject,
    date_labels,
    read_label_mentions,
    sorted_last,
)
from pggit_export.shadow.later_parts import LeftOut, later_parts
from pggit_export.shadow.replay import REPLAY_ROLE, ReplayFailure, Shadow, Statement
from pggit_export.shadow.standin import build_stand_in
from pggit_export.shadow.transaction_ids import DatedComment

MAX_ROUNDS = 12  # per changeset; each round must fix something new


@dataclass(frozen=True)
class Repair:
    """One change the tool made to the shadow, or to a statement, and why."""

    description: str  # "created type public.mood from the live database (never recorded)"
    sql: tuple[str, ...] = ()  # run in the shadow, in one transaction, as the replay role
    admin_sql: tuple[str, ...] = ()  # run as the shadow's superuser (roles, grants)
    load: dict[str, str] = field(default_factory=dict)  # files to load (live definitions)
    override: tuple[int, str | None] | None = None  # (statement index, new text or None: skip)
    extension_files: dict[str, str] = field(default_factory=dict)  # a stand-in (standin.py)
    after_load: tuple[str, ...] = ()  # run once `load` is in, in its transaction


# ---------------------------------------------------------------- live catalog

_FIND_RELATION_SQL = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(name)s AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
ORDER BY n.nspname = 'public' DESC, n.nspname
"""

_FIND_TYPE_SQL = """
SELECT n.nspname, t.typname
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typname = %(name)s AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
  AND t.typtype IN ('e', 'd', 'r', 'c')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
ORDER BY n.nspname = 'public' DESC, n.nspname
"""

_FIND_FUNCTION_SQL = """
SELECT DISTINCT n.nspname, p.proname, n.nspname = 'public' AS in_public
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = %(name)s AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
ORDER BY in_public DESC, n.nspname
"""

# PostgreSQL 15 and later, then older ones: no control file for the extension.
_EXTENSION_UNAVAILABLE = re.compile(
    r'extension "([^"]+)" is not available|could not open extension control file ".*/([^/"]+)\.control"'
)

_RELATION_OID_SQL = "SELECT pg_catalog.to_regclass(%(name)s)::oid::bigint"

# The extension a live object of that name belongs to (relation, type, function, operator
# class): its name and schema. %(schema)s NULL: any schema.
_EXTENSION_OF_SQL = """
SELECT e.extname, en.nspname
FROM pg_catalog.pg_depend AS d
JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid
JOIN pg_catalog.pg_namespace AS en ON en.oid = e.extnamespace
WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
  AND (d.classid, d.objid) IN (
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid
    FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE %(what)s = 'relation' AND c.relname = %(name)s
      AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
    FROM pg_catalog.pg_type AS t JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace
    WHERE %(what)s = 'type' AND t.typname = %(name)s
      AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid
    FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
    WHERE %(what)s = 'function' AND p.proname = %(name)s
      AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
    UNION ALL
    SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_opclass AS o JOIN pg_catalog.pg_namespace AS n ON n.oid = o.opcnamespace
    WHERE %(what)s = 'operator class' AND o.opcname = %(name)s
      AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s))
ORDER BY en.nspname = 'public' DESC, e.extname
LIMIT 1
"""
_SHADOW_EXTENSION_SQL = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = %(name)s),
       EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = %(name)s)
"""

_SCHEMA_EXISTS_SQL = "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %(name)s)"

_COLUMNS_SQL = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_LIVE_ENUMS_SQL = """
SELECT n.nspname, t.typname
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'e' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND n.nspname <> ALL (%(exclude)s::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2
"""
_HISTORY_TIME_SQL = """
SELECT h.created_at FROM pggit.history AS h WHERE h.id = %(id)s
"""
_ENUM_LABELS_SQL = """
SELECT e.enumlabel, e.oid::bigint
FROM pg_catalog.pg_enum e
JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(schema)s AND t.typname = %(name)s
ORDER BY e.enumsortorder
"""

_RELKIND_KINDS = {"r": "table", "p": "table", "v": "view", "m": "matview", "S": "sequence",
                  "c": "type"}


@dataclass(frozen=True)
class LiveTrigger:
    """A live trigger: where it is, the function it runs, and how to create it."""

    schema: str
    table: str
    name: str
    function_schema: str
    function: str
    definition: str  # pg_get_triggerdef: CREATE TRIGGER ... ON schema.table ...
    oid: int = 0  # its pg_trigger OID, to date it (OID chronology)


class LiveCatalog:
    """The source's live catalog, read through the reader's read-only transaction."""

    def __init__(self, conn: psycopg.Connection[Any], exclude_schemas: Collection[str]) -> None:
        self.conn = conn
        self.exclude = list(exclude_schemas)
        self._overloads: dict[tuple[str, str], set[str]] = {}
        self._triggers: list[LiveTrigger] | None = None
        self._mentions: dict[tuple[str, str], tuple[Mention, ...]] = {}

    def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall()

    def find_relation(self, schema: str | None, name: str) -> ObjectKey | None:
        rows = self._rows(_FIND_RELATION_SQL, {"schema": schema, "name": name,
                                                "exclude": self.exclude})
        return ObjectKey(_RELKIND_KINDS[rows[0][2]], rows[0][0], rows[0][1]) if rows else None

    def find_type(self, schema: str | None, name: str) -> ObjectKey | None:
        rows = self._rows(_FIND_TYPE_SQL, {"schema": schema, "name": name, "exclude": self.exclude})
        if not rows:
            return None
        relation = self.find_relation(rows[0][0], rows[0][1])  # a table's row type is the table
        return relation or ObjectKey("type", rows[0][0], rows[0][1])

    def find_function(self, schema: str | None, name: str) -> ObjectKey | None:
        rows = self._rows(_FIND_FUNCTION_SQL, {"schema": schema, "name": name,
                                                "exclude": self.exclude})
        return ObjectKey("function", rows[0][0], rows[0][1]) if rows else None

    def triggers(self) -> list[LiveTrigger]:
        """Every live user trigger, with its definition (asked once, as `overloads`)."""
        if self._triggers is None:
            self._triggers = [LiveTrigger(*row)
                              for row in self._rows(_LIVE_TRIGGERS_SQL, {"exclude": self.exclude})]
        return self._triggers

    def overloads(self, schema: str, name: str) -> set[str]:
        """Identity arguments of each live function `schema.name` (asked once: the
        reader's snapshot does not change)."""
        if (schema, name) not in self._overloads:
            self._overloads[schema, name] = {
                r[0] for r in self._rows(_LIVE_OVERLOADS_SQL, {"schema": schema, "name": name})}
        return self._overloads[schema, name]

    def extension_of(self, what: str, schema: str | None, name: str) -> tuple[str, str] | None:
        """(extension, its schema) of the live `what` (relation, type, function, operator
        class) `schema.name` when an extension owns it; None otherwise."""
        rows = self._rows(_EXTENSION_OF_SQL, {"what": what, "schema": schema, "name": name})
        return (rows[0][0], rows[0][1]) if rows else None

    def relation_oid(self, schema: str, name: str) -> int | None:
        rows = self._rows(_RELATION_OID_SQL, {"name": qualified_name(schema, name)})
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def has_schema(self, name: str) -> bool:
        return bool(self._rows(_SCHEMA_EXISTS_SQL, {"name": name})[0][0])

    def columns(self, schema: str, name: str) -> list[tuple[str, str, bool, str | None]]:
        return [tuple(r) for r in self._rows(_COLUMNS_SQL, {"schema": schema, "name": name})]  # type: ignore[misc]

    def enum_labels(self, schema: str, name: str) -> list[str]:
        return list(self.enum_label_oids(schema, name))

    def enum_label_oids(self, schema: str, name: str) -> dict[str, int]:
        """Labels in their order, each with its OID (for OID chronology)."""
        return {r[0]: r[1] for r in self._rows(_ENUM_LABELS_SQL, {"schema": schema, "name": name})}

    def enum_types(self) -> list[tuple[str, str]]:
        """(schema, name) of every live enum type outside the excluded schemas and
        extensions."""
        return [(r[0], r[1]) for r in self._rows(_LIVE_ENUMS_SQL, {"exclude": self.exclude})]

    def history_time(self, history_id: int) -> dt.datetime | None:
        """When history row `history_id` ran (None: not recorded)."""
        rows = self._rows(_HISTORY_TIME_SQL, {"id": history_id})
        return rows[0][0] if rows else None

    def label_mentions(self, type_name: str,
                       labels: Collection[str]) -> dict[str, tuple[Mention, ...]]:
        """History ids of the texts naming each label of enum `type_name`
        (shadow/evidence.py; asked once per label: the reader's snapshot does not change)."""
        unknown = [label for label in labels if (type_name, label) not in self._mentions]
        if unknown:
            found = read_label_mentions(self.conn, type_name, unknown)
            self._mentions.update(((type_name, label), m) for label, m in found.items())
        return {label: self._mentions[type_name, label] for label in labels}

    def definition(self, key: ObjectKey) -> str | None:
        """The live object's file, as the snapshot would render it."""
        return render_objects(self.conn, [key], exclude_schemas=self.exclude).files.get(key)


# ------------------------------------------------------------------ diagnosis

_NAME = r'"((?:[^"]|"")+)"'


_SEARCH_PATH = re.compile(r"\bsearch_path\b", re.I)
# "column r.full_name does not exist": a qualified reference, as the statement wrote it.
_QUALIFIED_COLUMN = re.compile(
    r'column (?:(?:"(?:[^"]|"")+"|[^\s."]+)\.)+(?P<column>"(?:[^"]|"")+"|[^\s."]+) does not exist$')


def _split_name(text: str) -> tuple[str | None, str]:
    """`s.x` or `x` as PostgreSQL prints it in messages (quotes already removed)."""
    if "." in text:
        schema, _, name = text.partition(".")
        return schema, name
    return None, text


def _label(key: ObjectKey) -> str:
    kinds = {"matview": "materialized view"}
    return f"{kinds.get(key.kind, key.kind)} {key.schema}.{key.name}"


def _added_later(items: Mapping[str, str]) -> str:
    """`x (added by history id 12)`, for a repair's description: each with its evidence."""
    return ", ".join(f"{name} ({evidence})" for name, evidence in sorted(items.items()))


def _names_word(text: str, name: str) -> bool:
    """Whether `text` names `name` as a word (quoted or not, any case)."""
    return re.search(r'(?<![\w$])"?' + re.escape(name) + r'"?(?![\w$])', text, re.I) is not None


def _add_values(schema: str, name: str, live_labels: list[str], have: list[str],
                missing: list[str]) -> tuple[str, ...]:
    """ALTER TYPE ... ADD VALUE statements putting each of `missing` where the live enum
    has it: BEFORE the next live label the type has by then, else at the end."""
    have = list(have)
    statements = []
    for label in missing:
        position = live_labels.index(label)
        before = next((lab for lab in live_labels[position + 1:] if lab in have), None)
        where = f" BEFORE {quote_literal(before)}" if before is not None else ""
        statements.append(f"ALTER TYPE {qualified_name(schema, name)} ADD VALUE IF NOT EXISTS "
                          f"{quote_literal(label)}{where}")
        have.append(label)
    return tuple(statements)


def _is_drop(statement: str) -> bool:
    return bool(re.match(r"\s*DROP\b", statement, re.I))


# The schema holding a relation or type of a name (optionally in a given schema).
_RELATION_SCHEMA_SQL = """
SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(n)s AND (%(s)s::text IS NULL OR n.nspname = %(s)s)
ORDER BY n.nspname = 'public' DESC LIMIT 1
"""
_TYPE_SCHEMA_SQL = """
SELECT n.nspname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typname = %(n)s AND (%(s)s::text IS NULL OR n.nspname = %(s)s)
ORDER BY n.nspname = 'public' DESC LIMIT 1
"""


_CREATES_FUNCTION = re.compile(
    rf"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?:{IDENTIFIER_PATTERN}\s*\.\s*)?"
    rf"(?P<name>{IDENTIFIER_PATTERN})\s*\(",
    re.I,
)
_SHADOW_TYPE_SQL = "SELECT pg_catalog.to_regtype(%(name)s) IS NOT NULL"
_SHADOW_FUNCTION_SQL = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
               JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
               WHERE n.nspname = %(schema)s AND p.proname = %(name)s)
"""

# A relation of the shadow by name (and its column, when one is named; '' for none): its
# kind and the comment it has now.
_SHADOW_COMMENTED_SQL = """
SELECT c.relkind::text,
       CASE WHEN %(column)s = '' THEN pg_catalog.obj_description(c.oid, 'pg_class')
            ELSE pg_catalog.col_description(c.oid, a.attnum) END
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute AS a
  ON a.attrelid = c.oid AND a.attname = %(column)s AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %(schema)s AND c.relname = %(relation)s
  AND (%(column)s = '' OR a.attnum IS NOT NULL)
"""

_SHADOW_OVERLOADS_SQL = """
SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY (%(names)s::text[]) AND p.prokind = 'f' AND n.nspname !~ '^pg_'
ORDER BY 1, 2, 3
"""
# Functions of the shadow whose names start with one of the stems, in the schemas of the
# functions named (note_superseded); an extension's own functions are its extension's.
_SHADOW_FUNCTIONS_BY_STEM_SQL = """
SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind = 'f'
  AND p.pronamespace IN (SELECT q.pronamespace FROM pg_catalog.pg_proc q
                         WHERE q.proname = ANY (%(names)s::text[]))
  AND EXISTS (SELECT 1 FROM unnest(%(stems)s::text[]) AS s(stem)
              WHERE pg_catalog.starts_with(p.proname, s.stem))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""
# A versioned function name: its stem and version (`f` -1, `f_v1` 1).
_VERSIONED_NAME = re.compile(r"^(?P<stem>.+?)_v(?P<version>\d+)$", re.S | re.I)


def name_version(name: str) -> tuple[str, int]:
    """A function name's stem and version number: ``f_v2`` -> (``f``, 2), ``f`` -> (``f``,
    -1). Only a ``_v<digits>`` ending counts (``f_2`` is as often a disambiguator)."""
    m = _VERSIONED_NAME.match(name)
    return (m.group("stem"), int(m.group("version"))) if m else (name, -1)


# Live user triggers (not of pgGit's schemas, system schemas or extension tables).
_LIVE_TRIGGERS_SQL = """
SELECT n.nspname, c.relname, t.tgname, fn.nspname, p.proname, pg_catalog.pg_get_triggerdef(t.oid),
       t.oid::bigint
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""
# Which scheduled triggers can be made now: table and function there, trigger not yet.
_TRIGGERS_READY_SQL = """
SELECT k.i::int, pg_catalog.to_regclass(k.tbl) IS NOT NULL
         AND EXISTS (SELECT FROM pg_catalog.pg_proc p
                     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = k.fs AND p.proname = k.fn),
       EXISTS (SELECT FROM pg_catalog.pg_trigger t
               WHERE t.tgrelid = pg_catalog.to_regclass(k.tbl) AND t.tgname = k.tg)
FROM unnest(%(tables)s::text[], %(triggers)s::text[], %(schemas)s::text[], %(functions)s::text[])
     WITH ORDINALITY AS k(tbl, tg, fs, fn, i)
"""
_LIVE_OVERLOADS_SQL = """
SELECT pg_catalog.pg_get_function_identity_arguments(p.oid)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = %(name)s
"""


# A table's columns as v1's capture_table_columns() records them in new_metadata (from
# information_schema.columns: udt_name plus the length, the domain's base type, the
# default as deparsed), read from pg_attribute directly: the view costs milliseconds.
_RECORDED_SHAPE_SQL = """
SELECT n.nspname, c.relname, a.attname,
       coalesce(bt.typname, t.typname)::text || coalesce('(' || information_schema._pg_char_max_length(
           information_schema._pg_truetypid(a.*, t.*),
           information_schema._pg_truetypmod(a.*, t.*)) || ')', ''),
       NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)),
       CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(tables)s::text[]))
  AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY n.nspname, c.relname, a.attnum
"""

ColumnShape = tuple[str, bool, str | None]  # v1's type text, nullable, default


def _shape(columns: dict[str, ColumnShape]) -> dict[str, tuple[str, bool]]:
    """What the post-condition compares: each column's type and nullability."""
    return {name: (type_text, nullable) for name, (type_text, nullable, _) in columns.items()}


def _type_sql(recorded: str) -> str:
    """v1's type text as SQL: ``varchar(50)`` as is, ``_int4`` (an array) as ``int4[]``."""
    array = recorded.startswith("_")
    name = recorded[1:] if array else recorded
    if not re.fullmatch(r"[a-z_][a-z0-9_]*(\(\d+\))?", name):
        name = quote_identifier(name)
    return name + ("[]" if array else "")


def plan_labels(live: LiveCatalog, later: LaterChanges,
                clock: OidClock) -> dict[tuple[str, str], dict[str, tuple[int, str]]]:
    """Labels of live enums that a recorded CREATE TYPE ... AS ENUM did not list and no
    recorded ADD VALUE adds, that the evidence dates after the type's creation
    (evidence.date_label, from the creating row): (schema, type) -> label -> (the history
    id it comes before, why). A migration made only of ``ALTER TYPE ... ADD VALUE``
    leaves no row; without a date such a label waits until a statement needs it."""
    plan: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    for schema, name in live.enum_types():
        creation = later.enum_creations.get(name)
        if creation is None:
            continue  # never created by a recorded text: a repair creates it (_from_live)
        created_at, listed = creation
        added = later.enum_labels.get(name, {})
        oids = {label: oid for label, oid in live.enum_label_oids(schema, name).items()
                if label not in listed and label not in added}
        if not oids:
            continue
        mentions = live.label_mentions(name, list(oids))
        since = live.history_time(created_at)
        # Not in the recorded list: certainly added later, wherever it sorts (unlike a
        # label of an enum created unrecorded: Healer._dated_labels).
        dated = date_labels(oids, mentions, clock, created_at, since)
        if dated:
            plan[schema, name] = dated
    return plan


@dataclass(frozen=True)
class DatedObject:
    """A live object of a kind v1 never records (evidence.UnrecordedObject) that no history
    text creates, dated by its OID: created after history row `after_id` (None: before
    every row recording an OID) and before row `before_id`."""

    key: ObjectKey
    statement: str  # what makes it, never recorded: CREATE SEQUENCE, ...
    oid: int
    after_id: int | None
    before_id: int

    def evidence(self) -> str:
        newer = (f"newer than history id {self.after_id}'s object and "
                 if self.after_id is not None else "")
        return (f"its OID {self.oid} is {newer}older than history id {self.before_id}'s "
                f"(OID chronology), and v1 never records {self.statement}")


def plan_dated_objects(objects: Iterable[UnrecordedObject], recorded: RecordedCreations,
                       clock: OidClock) -> list[DatedObject]:
    """Live objects of kinds v1 never records (read_unrecorded_objects: sequences, types,
    materialized views, procedures) that no recorded text creates and that the usable OID
    clock dates inside the history: each is created before the changeset of the first row
    newer than it (a migration made only of ``CREATE SEQUENCE``/``CREATE TYPE``/...
    leaves no row; without this it would wait until a statement needs it, or forever).
    Older than every recorded creation: the pre-history's (shadow/prehistory.py); newer
    than every one: nothing dates it inside the history."""
    if not clock.usable or not clock.oids:
        return []
    bound = min(clock.oids)
    planned = []
    for item in objects:
        if item.oid < bound or recorded.created_object(item.key_kind, item.name) is not None:
            continue
        before = clock.first_newer(item.oid)
        if before is not None:
            planned.append(DatedObject(ObjectKey(item.key_kind, item.schema, item.name),
                                       item.statement, item.oid, clock.last_older(item.oid),
                                       before))
    return planned


class Healer:
    """Turns a replay failure into repairs, using the statement and the live catalog."""

    def __init__(
        self,
        live: LiveCatalog | None,
        shadow: Shadow,
        later: LaterChanges | None = None,
        clock: OidClock | None = None,
        dialect: Dialect | None = None,
        recorded: RecordedCreations | None = None,
    ) -> None:
        self.live = live
        self.shadow = shadow
        self.later = later or LaterChanges()  # what later recorded statements add
        # What recorded texts create, by name: a part of a live table one of them adds
        # later is left out when the table is made early (later_parts).
        self.recorded = recorded or RecordedCreations()
        self.clock = clock or OidClock()  # when live objects were created, by their OIDs
        # The source's major against the shadow's, when they differ (render/dialect.py).
        self.dialect = dialect
        # The first history id of the changeset being healed: a repair runs before it replays
        # whole, so what it or a later one adds is left out (shadow/evidence.py). The
        # exporter sets it.
        self.position: int | None = None
        self.position_end: int | None = None  # and its last history id
        self.position_time: dt.datetime | None = None  # and when it ran (None: unknown)
        self.extra: list[Repair] = []  # repairs a repair needed first (see apply)
        # Live triggers no history text creates, waiting for their table and function
        # (schedule_triggers, due_triggers).
        self.scheduled_triggers: list[LiveTrigger] = []
        # Scheduled triggers the OID clock dates later than their parts: (schema, table,
        # name) -> the first history id they may come before.
        self.trigger_dated: dict[tuple[str, str, str], int] = {}
        # Each table's columns as v1's metadata last recorded them (postcondition_repairs).
        self.recorded_shapes: dict[tuple[str, str], dict[str, ColumnShape]] = {}
        # Functions superseded by a later version, waiting for the end of the run of
        # changes that created it: (schema, name, identity arguments) -> (the new
        # version's name, the history id creating it).
        self.superseded: dict[tuple[str, str, str], tuple[str, int]] = {}
        # Enum labels a repair left out because the evidence dates them later: (schema,
        # type) -> label -> (the history id they come before, the evidence); due_labels.
        self.deferred_labels: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
        # The time of the last changeset healed, and whether the current one starts a run.
        self.run_time: dt.datetime | None = None
        self.new_run = True
        # Live objects of kinds v1 never records that the OID clock dates inside the
        # history, waiting for their changeset (schedule_objects, due_objects).
        self.scheduled_objects: list[DatedObject] = []
        self.dated_comments: list[DatedComment] = []  # left out of a table made early
        self.scheduled_comments: list[DatedComment] = []  # of those, the ones to set

    # -- before a changeset: the environment it ran in ----------------------------------

    def environment_repairs(self, changeset: Changeset) -> list[Repair]:
        """Schemas the changeset's search_path names that the shadow lacks and the source
        has: its unqualified names went there (read.environment), so they must exist
        before it replays, or the names land silently in the next schema of the path."""
        if changeset.search_path is None or self.live is None:
            return []
        repairs = []
        for schema in search_path_schemas(changeset.search_path):
            if not self.live.has_schema(schema) or self._shadow_has_schema(schema):
                continue
            repairs.append(Repair(
                f"created schema {schema} before the change: its user {changeset.created_by} "
                f"had search_path {changeset.search_path} (source's pg_db_role_setting), and "
                "the schema is live in the source but never created by the history",
                sql=(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",),
            ))
        return repairs

    def schedule_triggers(self) -> None:
        """Note the live triggers no recorded text creates. v1 never records CREATE
        TRIGGER, so one sent on its own (one statement per query) leaves no trace; the
        earliest point the evidence allows is as soon as the trigger's table and function
        both exist in the replay (due_triggers)."""
        if self.live is not None:
            self.scheduled_triggers = [t for t in self.live.triggers()
                                       if not self.recorded.creates_trigger(t.name, t.table)]

    def due_triggers(self, since: str | None = None) -> list[Repair]:
        """Repairs creating the scheduled triggers whose table and function now exist;
        a trigger the shadow already has (a pre-history table's) is no longer scheduled.
        `since`: what ran since the last call (SQL, repair descriptions); the shadow is only
        asked when it names a waiting trigger's table or function (None: always)."""
        if not self.scheduled_triggers:
            return []
        position = self.position or 0
        if since is not None:
            words = set(re.findall(r"[\w$]+", since.lower()))
            dated_due = any(due <= position for due in self.trigger_dated.values())
            if not dated_due and not any(t.table.lower() in words or t.function.lower() in words
                                         for t in self.scheduled_triggers):
                return []
        pending = self.scheduled_triggers
        with self.shadow.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            cur.execute(_TRIGGERS_READY_SQL, {
                "tables": [qualified_name(t.schema, t.table) for t in pending],
                "triggers": [t.name for t in pending],
                "schemas": [t.function_schema for t in pending],
                "functions": [t.function for t in pending],
            })
            states = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        repairs, waiting = [], []
        for index, trigger in enumerate(pending, start=1):
            ready, exists = states[index]
            if exists:
                continue
            if not ready:
                waiting.append(trigger)
                continue
            # OID chronology: a trigger made (or made again) after a recorded object is
            # not created before that object's row, although its table and function exist.
            last_older = self.clock.last_older(trigger.oid) if trigger.oid else None
            if last_older is not None and last_older >= position:
                self.trigger_dated[trigger.schema, trigger.table, trigger.name] = last_older + 1
                waiting.append(trigger)
                continue
            when = (f"once the history passed id {last_older}, the last recorded object "
                    "older than it (OID chronology)" if last_older is not None else
                    f"as soon as its table and its function {trigger.function_schema}."
                    f"{trigger.function} exist")
            repairs.append(Repair(
                f"created trigger {trigger.name} on {trigger.schema}.{trigger.table} from the "
                f"live database {when} (v1 never records CREATE TRIGGER, and no history text "
                "creates it)",
                sql=(trigger.definition,),
            ))
            waiting.append(trigger)  # until it is there: the repair may fail for now
        self.scheduled_triggers = waiting
        keys = {(t.schema, t.table, t.name) for t in waiting}
        self.trigger_dated = {k: due for k, due in self.trigger_dated.items() if k in keys}
        return repairs

    def postcondition_repairs(self, changeset: Changeset, replayed: bool) -> list[Repair]:
        """After a changeset replayed: make each table v1 recorded in it look as the row's
        ``new_metadata.columns`` says it was right after that statement (a post-condition
        at a known point). A difference is something v1 never recorded (RENAME COLUMN, a
        column added in a DO block, ...) and is repaired here, at that point, not when a
        later statement trips over it.

        Only for a changeset that replayed whole (`replayed`). In a text of several
        statements a row's metadata holds after its own command, not after the text: a
        table is checked there only when one statement of the text names it (no later one
        can have changed it since). Every changeset's metadata is remembered, though, and the shadow is only
        asked when the metadata cannot be explained without it (``_needs_look``): one
        catalog query per changeset would cost a third of the export's time. A changeset
        that did not replay (`replayed` false) leaves its tables unknown: the shadow may
        differ.
        """
        # Each table's recorded shape before this changeset, and its last row's in it.
        start: dict[tuple[str, str], dict[str, ColumnShape] | None] = {}
        wanted: dict[tuple[str, str], tuple[int, dict[str, ColumnShape]]] = {}
        for row in changeset.rows:
            if row.object_type != "TABLE" or not row.new_metadata or not row.schema_name:
                continue
            try:
                columns = json.loads(row.new_metadata).get("columns")
            except (ValueError, AttributeError, RecursionError):  # not v1's shape: no evidence
                continue
            if isinstance(columns, dict) and columns:
                key = (row.schema_name, row.object_name or "")
                shape = {str(name): (str(c.get("type")), bool(c.get("nullable")), c.get("default"))
                         for name, c in columns.items() if isinstance(c, dict)}
                start.setdefault(key, self.recorded_shapes.get(key))
                if not replayed:
                    self.recorded_shapes.pop(key, None)
                    continue
                self.recorded_shapes[key] = shape
                wanted[key] = (row.id, shape)
        text = changeset.sql or ""
        wanted = {key: item for key, item in wanted.items()
                  if self._needs_look(start[key], item[1], text)}
        if wanted:
            statements = [piece for piece in (without_leading_comments(p) for p in split(text))
                          if piece.strip()]
            if len(statements) > 1:
                # Only a table one statement names, and judged by that statement.
                naming = {key: [st for st in statements if _names_word(st, key[1])]
                          for key in wanted}
                wanted = {key: item for key, item in wanted.items()
                          if len(naming[key]) == 1
                          and self._needs_look(start[key], item[1], naming[key][0])}
        if not wanted:
            return []
        have: dict[tuple[str, str], dict[str, ColumnShape]] = {}
        with self.shadow.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            cur.execute(_RECORDED_SHAPE_SQL, {"schemas": [k[0] for k in wanted],
                                              "tables": [k[1] for k in wanted]})
            for schema, table, column, type_text, nullable, default in cur.fetchall():
                have.setdefault((schema, table), {})[column] = (type_text, nullable, default)
        repairs = []
        for key, (history_id, recorded) in sorted(wanted.items()):
            if key in have and _shape(have[key]) != _shape(recorded):
                repairs += self._match_columns(key, history_id, have[key], recorded)
        return repairs

    @staticmethod
    def _needs_look(before: dict[str, ColumnShape] | None, after: dict[str, ColumnShape],
                    statement: str) -> bool:
        """Whether the shadow must be asked. The shadow matched `before` (the table's last
        recorded shape: checked then, or explained), and replayed `statement`: where every
        column that the metadata says appeared, went or changed is named by the statement,
        the statement explains it, and the shadow did the same. A first sight of a table is
        only explained by its CREATE TABLE."""
        if before is None:
            return not re.match(r"\s*CREATE\s+(?:UNLOGGED\s+)?TABLE\b",
                                without_leading_comments(statement), re.I)
        now, then = _shape(after), _shape(before)
        touched = (now.keys() ^ then.keys()) | {c for c in now.keys() & then.keys()
                                                 if now[c] != then[c]}
        return any(not _names_word(statement, name) for name in touched)

    def _match_columns(self, key: tuple[str, str], history_id: int,
                       have: dict[str, ColumnShape], recorded: dict[str, ColumnShape]
                       ) -> list[Repair]:
        table = qualified_name(*key)
        label = f"{key[0]}.{key[1]}"
        evidence = f"v1's metadata of history id {history_id} records the table so right after it"
        repairs = []
        missing = [c for c in recorded if c not in have]
        extra = [c for c in have if c not in recorded]
        # As many gone as new, the same types in the same order: renamed (never recorded).
        if missing and len(missing) == len(extra) and all(
                have[e][0] == recorded[m][0] for e, m in zip(extra, missing)):
            for old, new in zip(extra, missing):
                repairs.append(Repair(
                    f"renamed column {label}.{old} to {new}: {evidence} (RENAME COLUMN is "
                    "never recorded)",
                    sql=(f"ALTER TABLE {table} RENAME COLUMN {quote_identifier(old)} "
                         f"TO {quote_identifier(new)}",)))
                have[new] = have.pop(old)
            missing, extra = [], []
        for column in extra:
            repairs.append(Repair(f"dropped column {label}.{column}: {evidence}, without it",
                                  sql=(f"ALTER TABLE {table} DROP COLUMN {quote_identifier(column)}",)))
        for column in missing:
            type_text, nullable, default = recorded[column]
            definition = _type_sql(type_text) + (f" DEFAULT {default}" if default else "")
            repairs.append(Repair(
                f"added column {label}.{column} {type_text}: {evidence}, with it",
                sql=(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(column)} {definition}"
                     + ("" if nullable else " NOT NULL"),)))
        for column, (type_text, nullable, _) in recorded.items():
            if column not in have:
                continue
            # Defaults are not compared: SET DEFAULT is recorded (an ALTER TABLE), and a
            # default's text depends on the search_path it was printed under.
            now_type, now_nullable, _ = have[column]
            name = quote_identifier(column)
            if now_type != type_text:
                repairs.append(Repair(
                    f"changed column {label}.{column} to {type_text}: {evidence}",
                    sql=(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {_type_sql(type_text)} "
                         f"USING {name}::{_type_sql(type_text)}",)))
            if now_nullable != nullable:
                repairs.append(Repair(
                    f"made column {label}.{column} {'nullable' if nullable else 'NOT NULL'}: "
                    f"{evidence}",
                    sql=(f"ALTER TABLE {table} ALTER COLUMN {name} "
                         f"{'DROP' if nullable else 'SET'} NOT NULL",)))
        return repairs

    def replaced_overloads(self, changeset: Changeset) -> list[Repair]:
        """Overloads of a function the changeset creates that the shadow has and the live
        database lacks: dropped just before it, as the migration that changed the
        signature did (``DROP FUNCTION f(old); CREATE FUNCTION f(new)``). v1 never records
        DROP FUNCTION, so with one statement per query the drop leaves no trace, and every
        old signature would otherwise stay in every later commit."""
        if self.live is None or not changeset.sql:
            return []
        first = changeset.history_ids[0]
        # A name the history itself drops, now or later, is left to the history: a text
        # that keeps the old overload a while (for compatibility) drops it when it did.
        names = {name for m in _CREATES_FUNCTION.finditer(changeset.sql)
                 if self.later.drops_function_from(name := catalog_name(m.group("name")),
                                                   first) is None}
        if not names:
            return []
        repairs = []
        for schema, name, arguments in self._shadow_overloads(sorted(names)):
            if arguments in self.live.overloads(schema, name):
                continue
            signature = f"{qualified_name(schema, name)}({arguments})"
            repairs.append(Repair(
                f"dropped function {schema}.{name}({arguments}) before history id "
                f"{first} creates {name} anew: the live database has no such overload, v1 "
                "never records DROP FUNCTION, and no recorded text drops it",
                sql=(f"DROP FUNCTION IF EXISTS {signature}",),
            ))
        return repairs

    def note_superseded(self, changeset: Changeset) -> None:
        """After a changeset replayed whole: note the earlier versions of each function it
        created under a versioned name (``f_v2`` supersedes ``f_v1`` and ``f``) that the
        shadow has and the live database lacks; ``due_superseded`` drops them once the run
        of changes that created the new version is over.

        Migrations that copy a function to a new versioned name drop the old one in the
        same run or soon after (procrastinate's "post" migrations do it a deploy later),
        and v1 never records DROP FUNCTION: with one statement per query the old versions
        would otherwise stay in every later commit. A name the history itself drops, now
        or later, is left to the history; an overload the live database still has stays.
        """
        if self.live is None or not changeset.sql:
            return
        first = changeset.history_ids[0]
        created: dict[str, int] = {}
        for m in _CREATES_FUNCTION.finditer(changeset.sql):
            name = catalog_name(m.group("name"))
            version = name_version(name)[1]
            if version >= 0:
                created[name] = version
        if not created:
            return
        stems = sorted({name_version(name)[0] for name in created})
        with self.shadow.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            cur.execute(_SHADOW_FUNCTIONS_BY_STEM_SQL, {"names": sorted(created),
                                                        "stems": stems})
            candidates = [(r[0], r[1], r[2]) for r in cur.fetchall()]
        for schema, name, arguments in candidates:
            stem, version = name_version(name)
            newer = sorted(n for n, v in created.items()
                           if name_version(n)[0] == stem and v > version and n != name)
            if not newer or arguments in self.live.overloads(schema, name):
                continue
            if self.later.drops_function_from(name, first) is not None:
                continue
            self.superseded[schema, name, arguments] = (newer[0], first)

    def start(self, changeset: Changeset) -> None:
        """Note the changeset about to be healed: its history ids and time, and whether it
        starts a new *run*: more than ``RUN_GAP`` after the changeset before it (or of
        unknown time)."""
        self.position, self.position_end = changeset.history_ids[0], changeset.last_id
        time = None if changeset.time_inferred else changeset.time
        self.position_time = time
        self.new_run = (self.run_time is None or time is None
                        or time - self.run_time > RUN_GAP)
        self.run_time = time

    def start_before_history(self) -> None:
        """Note that what is healed comes before every history row (the pre-history's
        needs): what any row adds (a label, a column) is left out, as of a repair before
        the first changeset."""
        self.position, self.position_end, self.position_time = 0, 0, None

    def due_superseded(self, changeset: Changeset) -> list[Repair]:
        """Drops of the superseded versions noted, before the first changeset that starts
        a new run. The run's own later changesets may still use the old version."""
        if not self.new_run or not self.superseded:
            return []
        repairs = []
        for (schema, name, arguments), (newer, created_at) in sorted(self.superseded.items()):
            repairs.append(Repair(
                f"dropped function {schema}.{name}({arguments}) before history id "
                f"{changeset.history_ids[0]}, the first change after the run that created "
                f"{newer} (history id {created_at}), a later version of it: the live "
                "database has no such function, v1 never records DROP FUNCTION, and no "
                "recorded text drops it",
                sql=(f"DROP FUNCTION IF EXISTS {qualified_name(schema, name)}({arguments})",),
            ))
        self.superseded = {}
        return repairs

    def _shadow_overloads(self, names: list[str]) -> list[tuple[str, str, str]]:
        with self.shadow.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            cur.execute(_SHADOW_OVERLOADS_SQL, {"names": names})
            return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    # -- the rules, one per kind of failure --------------------------------------------

    def repairs_for(self, failure: ReplayFailure, statements: list[Statement]) -> list[Repair]:
        """Repairs that may let the failing statement run; empty when none apply."""
        msg = failure.message
        code = failure.sqlstate or ""
        stmt = failure.statement
        index = failure.statement_index

        if code in ("42P01", "42704", "42883") and _is_drop(stmt):
            return [Repair(f"skipped statement {index} ({_first_line(stmt)}): what it drops "
                           "was never created in the replay", override=(index, None))]
        if any(_SEARCH_PATH.search(s.text) for s in statements[: index - 1]):
            # The names in the error resolve under a search_path the changeset changed, and
            # the repairs look names up under the default one: one could drop public.a for
            # a failing CREATE TABLE app.a. No evidence, no repair: it stays a failure.
            return []
        if code == "42601" and self.dialect is not None and (
                m := re.match(r'syntax error at or near "([^"]+)"', msg)):
            return self._new_keyword(failure, m.group(1))
        if code in ("0A000", "58P01") and (m := _EXTENSION_UNAVAILABLE.match(msg)):
            return self._stand_in(m.group(1) or m.group(2))
        if code in ("42704", "22023") and (m := re.match(r"role " + _NAME + " does not exist", msg)):
            return self._create_role(m.group(1).replace('""', '"'))
        if code == "42501" and (m := re.search(r"permission denied to set role " + _NAME, msg)):
            return self._create_role(m.group(1).replace('""', '"'))
        if code == "42501" and (m := re.match(r"permission denied for schema (\S+)", msg)):
            return self._grant_schema(m.group(1).strip('"'))
        if code == "3F000" and (m := re.match(r"schema " + _NAME + " does not exist", msg)):
            schema = m.group(1).replace('""', '"')
            return [Repair(f"created schema {schema} (never recorded)",
                           sql=(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",))]
        if code == "42P01" and (m := re.match(r"relation " + _NAME + " does not exist", msg)):
            schema, name = _split_name(m.group(1).replace('""', '"'))
            return (self._from_live("relation", schema, name)
                    or self._gone_table(failure, schema, name))
        if code == "42704" and (m := re.match(r"type " + _NAME + " does not exist", msg)):
            return self._from_live("type", *_split_name(m.group(1).replace('""', '"')))
        if code == "42704" and (m := re.match(r"type ([^\s\"]+?)(?:\[\])* does not exist", msg)):
            # In a function's signature PostgreSQL names the type unquoted, an array with []s.
            return self._from_live("type", *_split_name(m.group(1)))
        if code == "42704" and (m := re.match(r"operator class " + _NAME + " does not exist",
                                              msg)):
            owner = (self.live.extension_of("operator class", *_split_name(
                m.group(1).replace('""', '"'))) if self.live is not None else None)
            return self._extension("operator class", m.group(1), *owner) if owner else []
        if code == "42883" and (m := re.match(r"function ([^(]+)\(", msg)):
            return self._from_live("function", *_split_name(m.group(1).strip('"')))
        if code == "42703":
            return self._missing_column(failure)
        if code == "42704" and (m := re.match(r"constraint " + _NAME + " of relation " + _NAME
                                              + " does not exist", msg)):
            return self._missing_constraint(failure, m.group(1).replace('""', '"'))
        if code == "22P02" and (m := re.match(r'invalid input value for enum ([^:]+): "(.*)"$', msg)):
            return self._enum_values(*_split_name(m.group(1).strip('"')), needed=m.group(2))
        if code in ("42P07", "42710", "42723", "42701", "42P06"):
            return self._already_exists(failure)
        if code == "42P13" and "cannot change return type of existing function" in msg:
            return self._replace_function(failure)
        if code in ("2BP01", "0A000"):
            return self._blocking_dependents(failure)
        return []

    def _new_keyword(self, failure: ReplayFailure, word: str) -> list[Repair]:
        """A name of the source's that the shadow's newer major reserves (``system_user``
        from PostgreSQL 16 on), written as the quoted name it was (Dialect.names_quoted)."""
        assert self.dialect is not None
        rewritten = self.dialect.names_quoted(failure.statement, word)
        if rewritten is None:
            return []
        return [Repair(
            f"quoted the name {word.lower()} in statement {failure.statement_index}: a keyword "
            f"of the shadow's PostgreSQL {self.dialect.rendering_major}, no keyword of the "
            f"source's {self.dialect.source_major}, where the statement ran",
            override=(failure.statement_index, rewritten))]

    def _create_role(self, role: str) -> list[Repair]:
        """A role the history names and the shadow lacks: create it, powerless.

        Only ever a role that does not exist yet, created here with no
        attributes: granting an existing role (postgres, pg_write_server_files,
        ...) to the replay role would hand hostile history its powers.
        """
        admin = self.shadow.admin
        if not self.shadow.private or admin is None or role.startswith("pg_"):
            return []  # never create roles on a server that is not ours
        exists = admin.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %s)", (role,)
        ).fetchone()
        if exists is None or exists[0]:
            return []
        return [Repair(
            f"created role {role} in the shadow (named by the history)",
            admin_sql=(
                f"CREATE ROLE {quote_identifier(role)} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS",
                f"GRANT {quote_identifier(role)} TO {quote_identifier(REPLAY_ROLE)}",
            ),
        )]

    def _grant_schema(self, schema: str) -> list[Repair]:
        # Privileges are not part of a snapshot; in our own server they only get in the way.
        if not self.shadow.private or self.shadow.admin is None:
            return []
        return [Repair(
            f"granted CREATE on schema {schema} to every role in the shadow (privileges are "
            "not part of a snapshot)",
            admin_sql=(f"GRANT USAGE, CREATE ON SCHEMA {quote_identifier(schema)} TO PUBLIC",),
        )]

    def _from_live(self, what: str, schema: str | None, name: str) -> list[Repair]:
        if self.live is None:
            return []
        if schema is not None and not self._shadow_has_schema(schema):
            if self.live.has_schema(schema):
                return [Repair(f"created schema {schema} (never recorded)",
                               sql=(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",))]
            return []
        finder = {"relation": self.live.find_relation, "type": self.live.find_type,
                  "function": self.live.find_function}[what]
        owner = self.live.extension_of(what, schema, name)
        if owner is not None:
            return self._extension(what, name, *owner)
        key = finder(schema, name)
        if key is None:
            return []
        return self._live_object_repairs(key, "never created in the recorded history")

    def _extension(self, what: str, name: str, extension: str, schema: str) -> list[Repair]:
        """The live `what` `name` belongs to extension `extension`, which the shadow lacks:
        create it (where the live one is), as a stand-in if the shadow's server does not
        have it. v1 records a CREATE EXTENSION only through the rows of the functions its
        script creates: an extension without functions, or one created before pgGit,
        leaves none."""
        assert self.live is not None
        installed, available = self._one_row(_SHADOW_EXTENSION_SQL, {"name": extension})
        if installed:
            return []
        create = (f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",
                  f"CREATE EXTENSION IF NOT EXISTS {quote_identifier(extension)} "
                  f"WITH SCHEMA {quote_identifier(schema)}")
        why = (f"created extension {extension} in schema {schema}: the live {what} {name} "
               "belongs to it, and no recorded text creates it")
        if available:
            return [Repair(why, sql=create)]
        stand_in = self._stand_in(extension)
        if not stand_in:
            return []
        return [Repair(f"{why}; {stand_in[0].description}",
                       extension_files=stand_in[0].extension_files, sql=create)]

    def _live_object_repairs(self, key: ObjectKey, why: str) -> list[Repair]:
        """Repairs creating live object `key` in the shadow (and its schema if missing),
        without what the evidence dates after the changeset healed; `why` says why it is
        created from the live database."""
        assert self.live is not None
        text = self.live.definition(key)
        if text is None:
            return []
        repairs = []
        if not self._shadow_has_schema(key.schema):
            repairs.append(Repair(f"created schema {key.schema} (never recorded)",
                                  sql=(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(key.schema)}",)))
        future_labels, dated = (self._later_labels(key.schema, key.name)
                                if key.kind == "type" else ({}, {}))
        if future_labels:
            # The live enum minus what later statements add; built from its labels.
            labels = [lab for lab in self.live.enum_labels(key.schema, key.name)
                      if lab not in future_labels]
            self._defer_labels(key.schema, key.name, dated)
            repairs.append(Repair(
                f"created {_label(key)} from the live database ({why}) without "
                f"{_added_later(future_labels)}",
                sql=(f"CREATE TYPE {qualified_name(key.schema, key.name)} AS ENUM "
                     f"({', '.join(quote_literal(lab) for lab in labels)})",),
            ))
            return repairs
        parts = self._later_parts(key) if key.kind == "table" else []
        columns = {p.name: f"added by history id {p.history_id}" for p in parts
                   if p.kind == "column"}
        others = [p.describe() for p in parts if p.kind != "column"]
        without = ", ".join(([_added_later(columns)] if columns else []) + others)
        repairs.append(Repair(
            f"created {_label(key)} from the live database ({why})"
            + (f" without {without}" if without else ""),
            load={f"{key.schema}/{key.name}.{key.kind}.sql": text},
            after_load=tuple(p.statement() for p in parts),
        ))
        return repairs

    def _later_parts(self, key: ObjectKey) -> list[LeftOut]:
        """What recorded texts add to live table `key` from the changeset healed on
        (columns, indexes, constraints, triggers, comments, options: later_parts)."""
        if self.position is None or self.live is None:
            return []
        oid = self.live.relation_oid(key.schema, key.name)
        if oid is None:
            return []
        return later_parts(self.live.conn, [(oid, key.schema, key.name)], self.recorded,
                           self.later, self.position, self.dated_comments)

    def _later_labels(self, schema: str, name: str
                      ) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
        """Labels of enum `schema.name` that came after the changeset healed, each with
        its evidence: a later recorded statement adds it, or the evidence dates it later
        (`_dated_labels`, also returned: the history id each dated label comes before)."""
        if self.position is None:
            return {}, {}
        later = {label: f"added by history id {i}"
                 for label, i in self.later.labels_added_from(name, self.position).items()}
        dated = self._dated_labels(schema, name, later)
        later.update((label, why) for label, (_due, why) in dated.items())
        return later, dated

    def _dated_labels(self, schema: str, name: str,
                      added: Collection[str]) -> dict[str, tuple[int, str]]:
        """Live labels of enum `schema.name` that the evidence dates after the changeset
        healed, other than those a recorded statement adds (`added`): each with the
        history id it comes before and why. With a usable OID clock, by OID; else by the
        first text naming it, when no text up to this changeset does (evidence.py)."""
        if self.live is None or self.position is None:
            return {}
        end = self.position_end or self.position
        live_oids = self.live.enum_label_oids(schema, name)  # in the enum's order
        oids = {label: oid for label, oid in live_oids.items() if label not in added}
        mentions = self.live.label_mentions(name, list(oids))
        dated = date_labels(oids, mentions, self.clock, end, self.position_time)
        if not self.clock.usable:
            # Named, and not dated late: there from the start (the run rule).
            named = {label for label, by in mentions.items() if by and label not in dated}
            last = sorted_last(list(live_oids), dated, named)
            dated = {label: when for label, when in dated.items() if label in last}
        return dated

    def _defer_labels(self, schema: str, name: str, dated: Mapping[str, tuple[int, str]]) -> None:
        """Remember the labels a repair left out that the evidence dates (not those the
        history adds itself): due_labels adds each before the changeset it is dated to."""
        if dated:
            self.deferred_labels.setdefault((schema, name), {}).update(dated)

    def schedule_labels(self) -> None:
        """Defer the labels of enums the history creates that it never adds but the
        evidence dates (plan_labels): due_labels adds each when its changeset comes."""
        if self.live is not None:
            for key, labels in plan_labels(self.live, self.later, self.clock).items():
                self.deferred_labels.setdefault(key, {}).update(labels)

    def schedule_objects(self, objects: Iterable[UnrecordedObject]) -> None:
        """Note the live objects of kinds v1 never records that the OID clock dates inside
        the history (plan_dated_objects): due_objects creates each before its changeset."""
        self.scheduled_objects = plan_dated_objects(objects, self.recorded, self.clock)

    def due_objects(self, changeset: Changeset) -> list[Repair]:
        """Repairs creating the dated objects due by this changeset (the first row newer
        than the object is in it or before it) that the shadow does not have yet (a
        statement that needed one earlier had it created then)."""
        due = [item for item in self.scheduled_objects if item.before_id <= changeset.last_id]
        if not due or self.live is None:
            return []
        self.scheduled_objects = [item for item in self.scheduled_objects if item not in due]
        repairs = []
        for item in due:
            if not self._shadow_has_object(item.key):
                repairs += self._live_object_repairs(item.key, item.evidence())
        return repairs

    def schedule_comments(self, comments: Iterable[DatedComment]) -> None:
        """Note the live comments no recorded text sets that the transaction-id clock dates
        inside the history (shadow/transaction_ids.py): due_comments sets each then; one
        dated after the history is left to the reconcile commit."""
        self.dated_comments = list(comments)
        self.scheduled_comments = [c for c in self.dated_comments if c.due_id is not None]

    def due_comments(self, changeset: Changeset, *, replayed: bool) -> list[Repair]:
        """Repairs setting the dated comments due by this changeset: before its replay
        those whose relation (and column) the shadow has; after it (`replayed`) the rest,
        for a relation the changeset itself creates. One whose relation is still missing
        then (renamed since?) is given up: the reconcile commit shows it."""
        due = [c for c in self.scheduled_comments
               if c.due_id is not None and c.due_id <= changeset.last_id]
        repairs = []
        for comment in due:
            with self.shadow.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                row = cur.execute(_SHADOW_COMMENTED_SQL, {
                    "schema": comment.schema, "relation": comment.relation,
                    "column": comment.column}).fetchone()
            if row is None and not replayed:
                continue  # perhaps the changeset creates it: after the replay
            self.scheduled_comments.remove(comment)
            if row is not None and row[1] != comment.text:  # not there already (a resume)
                relkind = str(row[0])
                repairs.append(Repair(
                    f"set the {comment.describe()} from the live database: "
                    f"{comment.evidence()}",
                    sql=(comment.statement(relkind),)))
        return repairs

    def due_labels(self, changeset: Changeset) -> list[Repair]:
        """Repairs adding the deferred enum labels dated to this changeset or before it,
        each in its live place (BEFORE the next live label the shadow has)."""
        if not self.deferred_labels or self.live is None:
            return []
        repairs = []
        for (schema, name), waiting in sorted(self.deferred_labels.items()):
            due = {label: why for label, (at, why) in waiting.items()
                   if at <= changeset.last_id}
            if not due:
                continue
            for label in due:
                del waiting[label]
            have = self._shadow_enum_labels(schema, name)
            if not have:
                continue  # the type is not there (yet): a later repair creates it whole
            live_labels = self.live.enum_labels(schema, name)
            missing = [label for label in live_labels if label in due and label not in have]
            if not missing:
                continue
            statements = _add_values(schema, name, live_labels, have, missing)
            repairs.append(Repair(
                f"added value{'s' if len(missing) > 1 else ''} {', '.join(missing)} to enum "
                f"{schema}.{name} from the live database before history id "
                f"{changeset.history_ids[0]}: {_added_later({m: due[m] for m in missing})} "
                "(ALTER TYPE ... ADD VALUE is never recorded)",
                sql=statements,
            ))
        self.deferred_labels = {k: v for k, v in self.deferred_labels.items() if v}
        return repairs

    def _gone_table(self, failure: ReplayFailure, schema: str | None,
                    name: str) -> list[Repair]:
        """A statement on a table the replay never had, the live database no longer has,
        and a later recorded text drops: it existed then (older than the history), but no
        evidence tells its columns. The statement is skipped, so that the rest of its
        changeset replays, instead of the whole changeset failing."""
        if self.live is None or self.position is None:
            return []
        if self.live.find_relation(schema, name) is not None:
            return []
        dropped_at = self.later.drops_table_from(name, self.position)
        if dropped_at is None:
            return []
        index = failure.statement_index
        return [Repair(
            f"skipped statement {index} ({_first_line(failure.statement)}): it needs table "
            f"{name}, which existed then (history id {dropped_at} drops it) and is gone from "
            "the live database, so nothing tells its columns", override=(index, None))]

    def _missing_constraint(self, failure: ReplayFailure, constraint: str) -> list[Repair]:
        """ALTER TABLE ... DROP CONSTRAINT of a constraint the replay never had: the history
        says it existed (it dropped it), but not what it was, and the live database no
        longer has it. Dropping it conditionally lets the rest of the changeset replay."""
        pattern = (r"\bDROP\s+CONSTRAINT\s+(?!IF\s+EXISTS\b)(?="
                   + re.escape(quote_identifier_if_needed(constraint)) + r"(?![\w$]))")
        rewritten = re.sub(pattern, "DROP CONSTRAINT IF EXISTS ", failure.statement, count=1,
                           flags=re.I)
        if rewritten == failure.statement:
            return []
        return [Repair(f"made DROP CONSTRAINT {constraint} conditional in statement "
                       f"{failure.statement_index}: the replay never had the constraint, and "
                       "the live database no longer has it",
                       override=(failure.statement_index, rewritten))]

    def _missing_column(self, failure: ReplayFailure) -> list[Repair]:
        m = re.match(r"column " + _NAME + r"(?: of relation " + _NAME + r")? does not exist",
                     failure.message)
        if m:
            column = m.group(1).replace('""', '"')
        elif q := _QUALIFIED_COLUMN.match(failure.message):
            # A reference through a table or an alias (`r.full_name`): PostgreSQL prints it
            # as written, unquoted; the tables the statement names are looked at.
            column = q.group("column").strip('"')
        else:
            return []
        if m and m.group(2) and re.search(r"\bDROP\s+(COLUMN\s+)?" + re.escape(quote_identifier_if_needed(column)),
                                    failure.statement, re.I):
            rewritten = re.sub(r"\bDROP\s+(COLUMN\s+)?(?!IF\b)", r"DROP \1IF EXISTS ",
                               failure.statement, count=1, flags=re.I)
            return [Repair(f"made DROP COLUMN {column} conditional in statement "
                           f"{failure.statement_index}: the replay never had the column",
                           override=(failure.statement_index, rewritten))]
        if self.live is None:
            return []
        tables = ([_split_name(m.group(2).replace('""', '"'))] if m and m.group(2)
                  else self._tables_named_in(failure.statement))
        for schema, table in tables:
            key = self.live.find_relation(schema, table)
            if key is None or key.kind != "table":
                continue
            live_columns = {c[0]: c for c in self.live.columns(key.schema, key.name)}
            if column not in live_columns:
                continue
            shadow_columns = self._shadow_columns(key.schema, key.name)
            if not shadow_columns or column in shadow_columns:
                continue
            qualified = qualified_name(key.schema, key.name)
            # A column the replay has and the live table lacks, of the same type: renamed.
            gone = [c for c, t in shadow_columns.items()
                    if c not in live_columns and t == live_columns[column][1]]
            if len(gone) == 1:
                return [Repair(
                    f"renamed column {gone[0]} to {column} in table {key.schema}.{key.name}, "
                    "as in the live database (rename never recorded)",
                    sql=(f"ALTER TABLE {qualified} RENAME COLUMN {quote_identifier(gone[0])} "
                         f"TO {quote_identifier(column)}",),
                )]
            _, type_, notnull, default = live_columns[column]
            definition = f"{quote_identifier(column)} {type_}"
            if default is not None:
                definition += f" DEFAULT {default}"
            if notnull:
                definition += " NOT NULL"
            return [Repair(
                f"added column {column} to table {key.schema}.{key.name} from the live database "
                "(never recorded)",
                sql=(f"ALTER TABLE {qualified} ADD COLUMN {definition}",),
            )]
        return []

    def _enum_values(self, schema: str | None, name: str, needed: str) -> list[Repair]:
        if self.live is None:
            return []
        key = self.live.find_type(schema, name)
        if key is None or key.kind != "type":
            return []
        # Not what a later statement adds, unless the failing statement needs it now.
        later, dated = self._later_labels(key.schema, key.name)
        future = {lab: why for lab, why in later.items() if lab != needed}
        live_labels = [lab for lab in self.live.enum_labels(key.schema, key.name)
                       if lab not in future]
        have = self._shadow_enum_labels(key.schema, key.name)
        missing = [label for label in live_labels if label not in have]
        if not missing:
            return []
        self._defer_labels(key.schema, key.name,
                           {lab: due for lab, due in dated.items() if lab != needed})
        statements = _add_values(key.schema, key.name, live_labels, have, missing)
        kept_out = f", not {_added_later(future)}" if future else ""
        return [Repair(
            f"added value{'s' if len(missing) > 1 else ''} {', '.join(missing)} to enum "
            f"{key.schema}.{key.name} from the live database (never recorded){kept_out}",
            sql=tuple(statements),
        )]

    def _already_exists(self, failure: ReplayFailure) -> list[Repair]:
        stmt, msg, index = failure.statement, failure.message, failure.statement_index
        if re.match(r"\s*CREATE\s+SCHEMA\s+(?!IF\b)", stmt, re.I):
            return [Repair(f"made CREATE SCHEMA conditional in statement {index}: the replay "
                           "already had the schema",
                           override=(index, re.sub(r"(?i)CREATE\s+SCHEMA\s+",
                                                   "CREATE SCHEMA IF NOT EXISTS ", stmt,
                                                   count=1)))]
        if re.match(r"\s*CREATE\s+FUNCTION\b|\s*CREATE\s+PROCEDURE\b", stmt, re.I):
            return [Repair(f"made statement {index} CREATE OR REPLACE: the replay still had the "
                           "function (its DROP was never recorded)",
                           override=(index, re.sub(r"(?i)^(\s*)CREATE\s+", r"\1CREATE OR REPLACE ",
                                                   stmt, count=1)))]
        if m := re.match(r"column " + _NAME + " of relation " + _NAME + " already exists", msg):
            rewritten = re.sub(r"(?i)\bADD\s+(COLUMN\s+)?(?!IF\b)", r"ADD \1IF NOT EXISTS ",
                               stmt, count=1)
            return [Repair(f"made ADD COLUMN {m.group(1)} conditional in statement {index}: the "
                           "replay already had the column", override=(index, rewritten))]
        m = re.match(r"(constraint|trigger) " + _NAME + " for relation " + _NAME
                     + " already exists", msg)
        if m:
            kind, name, table = m.group(1), m.group(2), m.group(3)
            schema, rel = self._resolve_relation(table)
            if rel is None:
                return []
            target = qualified_name(schema, rel)
            drop = (f"ALTER TABLE {target} DROP CONSTRAINT {quote_identifier(name)}" if kind == "constraint"
                    else f"DROP TRIGGER {quote_identifier(name)} ON {target}")
            return [Repair(f"dropped {kind} {name} on {schema}.{rel} (the history creates it "
                           "again: its removal was never recorded)", sql=(drop,))]
        if m := re.match(r"(relation|type) " + _NAME + " already exists", msg):
            what, name = m.group(1), m.group(2).replace('""', '"')
            schema, rel = (self._resolve_relation(name) if what == "relation"
                           else self._resolve_type(name))
            if rel is None:
                return []
            kind = self._shadow_kind(schema, rel) if what == "relation" else "TYPE"
            if kind is None:
                return []
            return [Repair(
                f"dropped {kind.lower()} {schema}.{rel} (the history creates it again: its "
                "removal was never recorded)",
                sql=(f"DROP {kind} {qualified_name(schema, rel)}" + (" CASCADE" if kind != "TYPE" else ""),),
            )]
        return []

    def _replace_function(self, failure: ReplayFailure) -> list[Repair]:
        hint = failure.message
        m = re.search(r"Use DROP (FUNCTION|PROCEDURE) (.+?) first", hint + " " + (failure.hint or ""))
        if not m:
            return []
        return [Repair(f"dropped {m.group(1).lower()} {m.group(2)}: the history re-creates it "
                       "with another result type", sql=(f"DROP {m.group(1)} {m.group(2)}",))]

    def _blocking_dependents(self, failure: ReplayFailure) -> list[Repair]:
        detail = failure.detail or ""
        repairs: list[Repair] = []
        for line in detail.splitlines():
            if t := re.match(r"trigger (\S+) on table (\S+) depends on", line):
                repairs += self._blocking_trigger(t.group(1).replace('"', ""),
                                                  t.group(2).replace('"', ""))
                continue
            m = re.match(r"(?:rule _RETURN on )?(view|materialized view) (\S+) depends on", line)
            if not m:
                continue
            kind, name = m.group(1), m.group(2)
            named_schema, named = _split_name(name.replace('"', ""))
            schema, rel = self._resolve_relation(
                named if named_schema is None else f"{named_schema}.{named}"
            )
            if rel is None:
                continue
            absent = self.live is None or self.live.find_relation(schema, rel) is None
            why = "absent in live database" if absent else "it blocks the change; re-created " \
                  "later from the live database if needed"
            repairs.append(Repair(f"dropped {kind} {schema}.{rel} ({why})",
                                  sql=(f"DROP {kind.upper()} IF EXISTS {qualified_name(schema, rel)} CASCADE",)))
        return repairs

    def _blocking_trigger(self, trigger: str, table_name: str) -> list[Repair]:
        """A trigger in the way of a column change (the migration dropped it first, in a
        statement v1 did not record): drop it, and if the live database has it, schedule
        it again, to come back once the change is through (due_triggers)."""
        schema, table = self._resolve_relation(table_name)
        if table is None:
            return []
        live = [t for t in (self.live.triggers() if self.live is not None else [])
                if (t.schema, t.table, t.name) == (schema, table, trigger)]
        self.scheduled_triggers += live
        return [Repair(
            f"dropped trigger {trigger} on {schema}.{table}: it blocks the change"
            + ("; created again from the live database once it can be" if live else
               " (absent in live database)"),
            sql=(f"DROP TRIGGER IF EXISTS {quote_identifier(trigger)} ON "
                 f"{qualified_name(schema, table)}",),
        )]

    def _stand_in(self, name: str) -> list[Repair]:
        """The shadow's server lacks an extension: stand in for it if the source has it."""
        if self.live is None or self.shadow.extension_directory is None:
            return []
        stand_in = build_stand_in(self.live.conn, name)
        if stand_in is None:
            return []
        return [Repair(stand_in.describe(), extension_files=stand_in.files)]

    # -- shadow look-ups -----------------------------------------------------------------

    def _one(self, query: str, params: dict[str, Any]) -> Any:
        row = self.shadow.conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None

    def _one_row(self, query: str, params: dict[str, Any]) -> tuple[Any, ...]:
        row = self.shadow.conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return tuple(row)

    def _shadow_has_schema(self, schema: str) -> bool:
        return bool(self._one(_SCHEMA_EXISTS_SQL, {"name": schema}))

    def _resolve_relation(self, name: str) -> tuple[str, str | None]:
        return self._resolve(name, _RELATION_SCHEMA_SQL)

    def _resolve_type(self, name: str) -> tuple[str, str | None]:
        return self._resolve(name, _TYPE_SCHEMA_SQL)

    def _resolve(self, name: str, query: str) -> tuple[str, str | None]:
        """(schema, name) of a relation or type named as in an error message, public first."""
        schema, bare = _split_name(name)
        found = self._one(query, {"n": bare, "s": schema})
        return (found, bare) if found else ("", None)

    def _shadow_has_object(self, key: ObjectKey) -> bool:
        """Whether the shadow has the sequence, type, materialized view or function `key`."""
        if key.kind == "function":
            return bool(self._one(_SHADOW_FUNCTION_SQL, {"schema": key.schema, "name": key.name}))
        if key.kind == "type":
            return bool(self._one(_SHADOW_TYPE_SQL, {"name": qualified_name(key.schema, key.name)}))
        return self._shadow_kind(key.schema, key.name) is not None

    def _shadow_kind(self, schema: str, rel: str) -> str | None:
        relkind = self._one(
            "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %(s)s AND c.relname = %(r)s",
            {"s": schema, "r": rel})
        return {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
                "S": "SEQUENCE", "i": "INDEX", "I": "INDEX", "c": "TYPE"}.get(relkind or "")

    def _shadow_columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self.shadow.conn.execute(_COLUMNS_SQL, {"schema": schema, "name": table}).fetchall()
        return {r[0]: r[1] for r in rows}

    def _shadow_enum_labels(self, schema: str, name: str) -> list[str]:
        rows = self.shadow.conn.execute(_ENUM_LABELS_SQL, {"schema": schema, "name": name})
        return [r[0] for r in rows.fetchall()]

    def _tables_named_in(self, statement: str) -> list[tuple[str | None, str]]:
        rows = self.shadow.conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^pg_' "
            "AND n.nspname <> 'information_schema'"
        ).fetchall()
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", statement))
        return [(s, t) for s, t in rows if t in words]

    # -- applying ------------------------------------------------------------------------

    def apply(self, repair: Repair, depth: int = 0) -> str | None:
        """Run a repair in the shadow; returns an error text when it could not be applied.

        A live definition can itself need what the shadow lacks (a table of a type
        nobody recorded): those needs are repaired first, a few levels deep, and
        recorded in `self.extra`.
        """
        try:
            if repair.extension_files:
                assert self.shadow.extension_directory is not None
                for file_name, text in repair.extension_files.items():
                    (self.shadow.extension_directory / file_name).write_text(text, "utf-8")
            if repair.admin_sql:
                assert self.shadow.admin is not None
                with self.shadow.admin.transaction():
                    for statement in repair.admin_sql:
                        self.shadow.admin.execute(statement)  # type: ignore[arg-type]
            if repair.sql:
                with self.shadow.conn.transaction():
                    for statement in repair.sql:
                        self.shadow.conn.execute(statement)  # type: ignore[arg-type]
            if repair.load:
                for _ in range(4):
                    with self.shadow.conn.transaction():
                        result = load_files(self.shadow.conn, repair.load)
                        if not result.failures:
                            for statement in repair.after_load:
                                self.shadow.conn.execute(statement)  # type: ignore[arg-type]
                            break
                        if depth >= 3:
                            return result.failures[0].error
                        raise _LoadFailed(result.failures)
        except _LoadFailed as failed:
            # A statement of the load that failed only because an earlier one of the same
            # load did (an index on the table that needs a type) asks for the object being
            # loaded itself: that is no need of its own.
            needs = [need for need in self.needs_of(failed.failures)
                     if not need.load.keys() & repair.load.keys()]
            if not needs or any(self.apply(need, depth + 1) is not None for need in needs):
                return failed.failures[0].error
            self.extra.extend(needs)
            return self.apply(repair, depth + 1)
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0]
        finally:
            self.shadow.conn.execute("DISCARD ALL")
        return None

    def needs_of(self, failures: list[Any]) -> list[Repair]:
        """Repairs for what failed statements of a load of live definitions need."""
        needs: list[Repair] = []
        for failure in failures:
            pseudo = ReplayFailure(1, failure.statement, failure.sqlstate, failure.message)
            needs += [r for r in self.repairs_for(pseudo, []) if r.override is None]
        return needs


class _LoadFailed(Exception):
    """Rolls back a load of live definitions that needs something first."""

    def __init__(self, failures: list[Any]) -> None:
        super().__init__(failures[0].error)
        self.failures = failures


def _first_line(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 60 else text[:57] + "..."


