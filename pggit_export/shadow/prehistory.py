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

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.render.snapshot import ObjectKey, render_objects
from pggit_export.restore import LoadFailure, load_files
from pggit_export.shadow.evidence import (
    LaterChanges,
    OidClock,
    RecordedCreations,
    UnrecordedObject,
)
from pggit_export.shadow.heal import Healer
from pggit_export.shadow.later_parts import LeftOut, later_parts
from pggit_export.shadow.transaction_ids import DatedComment

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
    *,
    unrecorded: Iterable[UnrecordedObject],
    comments: Collection[DatedComment] = (),
) -> PrehistoryPlan:
    """The pre-history objects of the source `conn` (read only, the reader's transaction).
    With a usable `clock`, also those of `unrecorded` (the live objects of kinds v1 never
    records, evidence.read_unrecorded_objects, which the healer dates too) older than
    every object the history records as created."""
    dated: list[ObjectKey] = []
    if clock is not None and clock.usable and clock.oids:
        # Older than every object the history records as created; an enum also by its
        # newest label (else the healer builds it without the later labels: PostgreSQL
        # cannot drop a label after loading it).
        bound = min(clock.oids)
        dated = sorted({ObjectKey(o.key_kind, o.schema, o.name)
                        for o in unrecorded
                        if o.oid < bound and (o.newest_label is None or o.newest_label < bound)
                        and recorded.created_object(o.key_kind, o.name) is None
                        and not (o.kind == "type" and later.labels_added_from(o.name, 0))})
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_CANDIDATES_SQL, {"exclude": list(exclude_schemas)}).fetchall()
        # A function file holds every overload of a name: one created later keeps it out.
        picked = [(kind, schema, name, oid) for kind, schema, name, oid in rows
                  if recorded.created_object(kind, name) is None]
    tables = [(oid, schema, name) for kind, schema, name, oid in picked if kind == "table"]
    left_out = later_parts(conn, tables, recorded, later, since=0, comments=comments)
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
