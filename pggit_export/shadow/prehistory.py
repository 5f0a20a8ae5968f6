"""The schema before the history: live objects that no history row creates, at the start.

A database rarely starts empty when pgGit is installed: the application's schema is often
years older than the extension. v1 then holds ALTERs, indexes and DROPs of tables it never
saw created. Left to the healer, each such table would appear when a statement first trips
over it, and every commit before that would miss it (on a real history whose first
schema predates pgGit, every point differed from the truth by a thousand lines).

The evidence (shadow/evidence.py, ``RecordedCreations``): v1 writes a row for every
CREATE TABLE, CREATE VIEW, CREATE INDEX and CREATE FUNCTION it sees. So a live table, view
or function whose name no recorded text creates (or renames into being) and that v1 never
recorded as created existed before pgGit was installed: the earliest point the evidence
allows, and the only one it leaves. ``plan_prehistory`` lists them, with what later rows
add to them (columns, indexes, constraints, triggers: left out, with the id that adds
each); ``load_prehistory`` loads their live definitions into the empty shadow, with the
types, sequences and schemas they need (found by the healer, from the same live catalog),
before the first changeset replays. The exporter commits the result as the root commit
(``Pggit-Baseline: live database``).

Objects of kinds v1 does not record (types, sequences, materialized views, procedures,
triggers) give no such evidence on their own: they come as something a pre-history object
needs, or, when the recorded OIDs can be trusted (``OidClock``), as sequences, types,
materialized views and procedures whose OID is older than every object the history records
as created; otherwise they stay with the healer, which creates them when the history first
needs them, or when their OID dates them (``heal.plan_dated_objects``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import qualified_name, quote_identifier
from pggit_export.render.snapshot import ObjectKey, render_objects
from pggit_export.restore import LoadFailure, load_files
from pggit_export.shadow.evidence import (
    LaterChanges,
    OidClock,
    RecordedCreations,
    read_unrecorded_objects,
)
from pggit_export.shadow.heal import Healer

# Live tables, views and functions, outside excluded and system schemas, not members of an
# extension and not part of another object (a range type's constructor functions).
_CANDIDATES_SQL = r"""
SELECT CASE WHEN c.relkind = 'v' THEN 'view' ELSE 'table' END, n.nspname, c.relname, c.oid
FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype IN ('e', 'i'))
UNION ALL
SELECT 'function', n.nspname, p.proname, p.oid
FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'w')
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                    AND d.deptype IN ('e', 'i'))
ORDER BY 1, 2, 3
"""

# What a table file brings along that a later row may add: indexes (other than a
# constraint's), constraints (not PostgreSQL 18's NOT NULL ones: those are the columns')
# user triggers, comments on the table and its columns (name '' for the table's), and
# storage parameters and attribute options (with the options' names). Named as the catalog
# names them.
_PARTS_SQL = r"""
SELECT 'index', n.nspname, t.relname, i.relname, NULL::text[]
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class AS t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE x.indrelid = ANY (%(tables)s::oid[])
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS k WHERE k.conindid = x.indexrelid
                  AND k.conrelid = x.indrelid)
UNION ALL
SELECT 'constraint', n.nspname, t.relname, k.conname, NULL
FROM pg_catalog.pg_constraint AS k
JOIN pg_catalog.pg_class AS t ON t.oid = k.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE k.conrelid = ANY (%(tables)s::oid[]) AND k.contype <> 'n'
UNION ALL
SELECT 'trigger', n.nspname, t.relname, g.tgname, NULL
FROM pg_catalog.pg_trigger AS g
JOIN pg_catalog.pg_class AS t ON t.oid = g.tgrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE g.tgrelid = ANY (%(tables)s::oid[]) AND NOT g.tgisinternal
UNION ALL
SELECT 'comment', n.nspname, t.relname, coalesce(a.attname, ''), NULL
FROM pg_catalog.pg_description AS d
JOIN pg_catalog.pg_class AS t ON t.oid = d.objoid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
LEFT JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = d.objsubid
WHERE d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = ANY (%(tables)s::oid[])
UNION ALL
SELECT 'options', n.nspname, t.relname, '',
       ARRAY(SELECT split_part(o, '=', 1) FROM unnest(t.reloptions) AS o)
FROM pg_catalog.pg_class AS t
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE t.oid = ANY (%(tables)s::oid[]) AND t.reloptions IS NOT NULL
UNION ALL
SELECT 'options', n.nspname, t.relname, a.attname,
       ARRAY(SELECT split_part(o, '=', 1) FROM unnest(a.attoptions) AS o)
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS t ON t.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
WHERE a.attrelid = ANY (%(tables)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attoptions IS NOT NULL
ORDER BY 1, 2, 3, 4
"""

# Dropped in this order: triggers and constraints first (a foreign key can rest on a
# unique index), columns last.
_LEAVE_OUT_ORDER = {"comment": 0, "options": 0, "trigger": 0, "constraint": 1, "index": 2,
                    "column": 3}


@dataclass(frozen=True)
class LeftOut:
    """A part of a pre-history table that a later history row adds."""

    kind: str  # column, index, constraint, trigger, comment, options
    schema: str
    table: str
    name: str  # for a comment or options: the column's, or '' for the table's own
    history_id: int  # the first row that adds it
    options: tuple[str, ...] = ()  # for options: the names of those set

    def describe(self) -> str:
        where = f"{self.schema}.{self.table}"
        on = f"column {where}.{self.name}" if self.name else f"table {where}"
        if self.kind == "comment":
            return f"comment on {on} (added by history id {self.history_id})"
        if self.kind == "options":
            return (f"{', '.join(self.options)} on {on} (set by history id "
                    f"{self.history_id})")
        what = f"{where}.{self.name}" if self.kind == "column" else f"{self.name} on {where}"
        return f"{self.kind} {what} (added by history id {self.history_id})"

    def statement(self) -> str:
        table = qualified_name(self.schema, self.table)
        name = quote_identifier(self.name)
        if self.kind == "comment":
            on = f"COLUMN {table}.{name}" if self.name else f"TABLE {table}"
            return f"COMMENT ON {on} IS NULL"
        if self.kind == "options":
            reset = f"RESET ({', '.join(quote_identifier(o) for o in self.options)})"
            column = f"ALTER COLUMN {name} " if self.name else ""
            return f"ALTER TABLE {table} {column}{reset}"
        if self.kind == "trigger":
            return f"DROP TRIGGER IF EXISTS {name} ON {table}"
        if self.kind == "constraint":
            return f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
        if self.kind == "index":
            return f"DROP INDEX IF EXISTS {qualified_name(self.schema, self.name)}"
        return f"ALTER TABLE {table} DROP COLUMN IF EXISTS {name}"


@dataclass(frozen=True)
class PrehistoryPlan:
    """Live objects that existed before the history, and what to leave out of them."""

    objects: tuple[ObjectKey, ...] = ()
    left_out: tuple[LeftOut, ...] = ()
    # Of kinds v1 never records, dated before the history by their OIDs (OID chronology).
    dated: tuple[ObjectKey, ...] = ()

    @property
    def keys(self) -> tuple[ObjectKey, ...]:
        """Everything to load: the objects and the OID-dated ones."""
        return self.objects + self.dated

    def describe(self, keys: tuple[ObjectKey, ...] | None = None) -> str:
        """``12 tables, 1 view and 2 functions`` (of `keys`, the objects by default)."""
        counts: dict[str, int] = {}
        for key in self.objects if keys is None else keys:
            counts[key.kind] = counts.get(key.kind, 0) + 1
        parts = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in sorted(counts.items())]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def plan_prehistory(
    conn: psycopg.Connection[Any],
    recorded: RecordedCreations,
    later: LaterChanges,
    exclude_schemas: Collection[str],
    clock: OidClock | None = None,
) -> PrehistoryPlan:
    """The pre-history objects of the source `conn` (read only, the reader's transaction).
    With a usable `clock`, also the sequences and types older than every object the
    history records as created."""
    dated: list[ObjectKey] = []
    if clock is not None and clock.usable and clock.oids:
        # Older than every object the history records as created; an enum also by its
        # newest label (else the healer builds it without the later labels: PostgreSQL
        # cannot drop a label after loading it).
        bound = min(clock.oids)
        dated = sorted({ObjectKey(o.key_kind, o.schema, o.name)
                        for o in read_unrecorded_objects(conn, exclude_schemas)
                        if o.oid < bound and (o.newest_label is None or o.newest_label < bound)
                        and recorded.created_object(o.key_kind, o.name) is None
                        and not (o.kind == "type" and later.labels_added_from(o.name, 0))})
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_CANDIDATES_SQL, {"exclude": list(exclude_schemas)}).fetchall()
        # A function file holds every overload of a name: one created later keeps it out.
        picked = [(kind, schema, name, oid) for kind, schema, name, oid in rows
                  if recorded.created_object(kind, name) is None]
        tables = [oid for kind, _, _, oid in picked if kind == "table"]
        parts = cur.execute(_PARTS_SQL, {"tables": tables}).fetchall() if tables else []
    left_out: list[LeftOut] = []
    for kind, schema, table, name, options in parts:
        if kind in ("comment", "options"):  # noted as "table" or "table.column" (evidence.py)
            first = recorded.created(kind, f"{table}.{name}" if name else table)
        else:
            first = recorded.created(kind, name)
        if first is None and kind == "constraint":  # ADD CONSTRAINT x UNIQUE makes index x
            first = recorded.created("index", name)
        if first is not None:
            left_out.append(LeftOut(kind, schema, table, name, first, tuple(options or ())))
    for kind, schema, name, _ in picked:
        if kind == "table":
            for column, first in sorted(later.columns_added_from(name, 0).items()):
                left_out.append(LeftOut("column", schema, name, column, first))
    left_out.sort(key=lambda item: (_LEAVE_OUT_ORDER[item.kind], item.schema, item.table,
                                    item.name))
    keys = sorted({ObjectKey(kind, schema, name) for kind, schema, name, _ in picked})
    # A procedure shares its name's function file, which may be a pre-history object already.
    dated = [key for key in dated if key not in keys]
    return PrehistoryPlan(tuple(keys), tuple(left_out), tuple(dated))


@dataclass
class PrehistoryResult:
    """What ``load_prehistory`` put into the shadow."""

    statements: int = 0
    needed: list[str] = field(default_factory=list)  # repairs of what the objects needed
    kept: list[str] = field(default_factory=list)  # left-outs that could not be dropped
    failures: list[LoadFailure] = field(default_factory=list)


def _loads_recorded(load_paths: Collection[str], recorded: RecordedCreations) -> bool:
    """Whether a repair's files hold an object the history creates (it cannot predate it)."""
    for path in load_paths:  # heal's paths: schema/name.kind.sql
        name, _, kind = path.split("/", 1)[-1].removesuffix(".sql").rpartition(".")
        if recorded.created_object(kind, name) is not None:
            return True
    return False


def load_prehistory(
    healer: Healer, live: psycopg.Connection[Any], plan: PrehistoryPlan,
    recorded: RecordedCreations, exclude_schemas: Collection[str],
) -> PrehistoryResult:
    """Load the plan's live definitions into the (empty) shadow of `healer`, then drop what
    later rows add; what the definitions need comes first, from the healer's repairs."""
    result = PrehistoryResult()
    if not plan.keys:
        return result
    rendered = render_objects(live, plan.keys, exclude_schemas=exclude_schemas).files
    files = {f"{key.schema}/{key.name}.{key.kind}.sql": text for key, text in rendered.items()}
    conn = healer.shadow.conn
    tried: set[str] = set()
    while True:
        with conn.transaction() as tx:
            loaded = load_files(conn, files)
            needs = [need for need in healer.needs_of(loaded.failures)
                     if need.description not in tried
                     and not need.load.keys() & files.keys()
                     and not _loads_recorded(need.load.keys(), recorded)]
            if needs:
                raise psycopg.Rollback(tx)  # make what is needed, then load again
            for item in plan.left_out:
                try:
                    with conn.transaction():
                        conn.execute(item.statement())  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    result.kept.append(f"{item.describe()}: {str(exc).strip().splitlines()[0]}")
            result.statements = loaded.statements
            result.failures = loaded.failures
            break
        for need in needs:
            tried.add(need.description)
            if healer.apply(need) is None:
                result.needed += [r.description for r in healer.extra] + [need.description]
            healer.extra = []
    conn.execute("DISCARD ALL")
    return result
