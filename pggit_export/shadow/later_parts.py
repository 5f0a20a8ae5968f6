"""What later history rows add to a live table: left out when the table is made early.

A live table's definition holds its final shape. When it is loaded before the history
reaches it (the pre-history, shadow/prehistory.py) or created from the live database
because a statement needed it (the healer, shadow/heal.py), whatever a later recorded
text adds to it would come in early: the commits in between would show it, and the later
statement would trip over it ("already exists"). A repair must never import the future.

So each part of the table that a recorded text creates or sets at or after the point of
the repair (its columns, indexes, constraints, triggers, comments, storage parameters and
attribute options, by name: ``RecordedCreations`` and ``LaterChanges``, read ahead in
shadow/evidence.py) is undone right after the table is made, with the history id that adds
it back (``LeftOut``). So is a comment that no text sets but whose transaction id dates
it at or after that point (shadow/transaction_ids.py): the healer sets it then.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import qualified_name, quote_identifier
from pggit_export.shadow.evidence import LaterChanges, RecordedCreations
from pggit_export.shadow.transaction_ids import DatedComment

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
    """A part of a live table that a later history row adds."""

    kind: str  # column, index, constraint, trigger, comment, options
    schema: str
    table: str
    name: str  # for a comment or options: the column's, or '' for the table's own
    history_id: int | None  # the first row that adds it (a dated comment: None, after all)
    options: tuple[str, ...] = ()  # for options: the names of those set
    dated: DatedComment | None = None  # a comment no text sets, dated by its transaction

    def describe(self) -> str:
        where = f"{self.schema}.{self.table}"
        on = f"column {where}.{self.name}" if self.name else f"table {where}"
        if self.dated is not None:
            when = (f"before history id {self.history_id}" if self.history_id is not None
                    else "after the last history row")
            return f"comment on {on} (set {when}: {self.dated.evidence()})"
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


def later_parts(conn: psycopg.Connection[Any], tables: Sequence[tuple[int, str, str]],
                recorded: RecordedCreations, later: LaterChanges, since: int,
                comments: Collection[DatedComment] = ()) -> list[LeftOut]:
    """The parts of the live `tables` ((oid, schema, name) in the source `conn`, read only)
    that a recorded text first adds at history id `since` or later, or that are among the
    dated `comments` due then or later, in the order to undo them."""
    if not tables:
        return []
    dated = {(c.schema, c.relation, c.column): c for c in comments}
    with conn.cursor(row_factory=tuple_row) as cur:
        parts = cur.execute(_PARTS_SQL, {"tables": [oid for oid, _, _ in tables]}).fetchall()
    left_out: list[LeftOut] = []
    for kind, schema, table, name, options in parts:
        comment = dated.get((schema, table, name)) if kind == "comment" else None
        if comment is not None:
            if comment.due_id is None or comment.due_id >= since:
                left_out.append(LeftOut(kind, schema, table, name, comment.due_id,
                                        dated=comment))
            continue
        if kind in ("comment", "options"):  # noted as "table" or "table.column" (evidence.py)
            first = recorded.created(kind, f"{table}.{name}" if name else table)
        elif kind == "trigger":
            # Trigger names repeat across tables (one `set_updated_at` on each): only a
            # text that creates this one on this table counts.
            first = (recorded.created(kind, name) if recorded.creates_trigger(name, table)
                     else None)
        elif kind == "constraint":
            # Constraint names repeat across tables too (`fk_user`): ALTER TABLE this one
            # ADD CONSTRAINT counts; ADD CONSTRAINT x UNIQUE also makes index x.
            first = (recorded.created("constraint_on", f"{table}.{name}")
                     or recorded.created("index", name))
        else:
            first = recorded.created(kind, name)
        if first is not None and first >= since:
            left_out.append(LeftOut(kind, schema, table, name, first, tuple(options or ())))
    for _, schema, name in tables:
        for column, first in sorted(later.columns_added_from(name, since).items()):
            left_out.append(LeftOut("column", schema, name, column, first))
    left_out.sort(key=lambda item: (_LEAVE_OUT_ORDER[item.kind], item.schema, item.table,
                                    item.name))
    return left_out
