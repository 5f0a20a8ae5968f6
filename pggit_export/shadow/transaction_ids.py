"""Transaction-id chronology: when a comment no history row sets was set.

v1 never records ``COMMENT``, and a comment has no OID for the OID chronology
(shadow/evidence.py) to date: a migration made only of comments leaves no trace in the
history, and the live database holds only the final texts. But every row PostgreSQL
writes carries the id of the transaction that wrote it (``xmin``), and v1 writes each
history row in the transaction of the command it records. So ``pggit.history.xmin`` puts
every history row on the source's transaction clock, and the ``pg_description`` row of a
live comment (rewritten by each ``COMMENT``) says in which transaction its text was set:
after the history row whose transaction is older, before the first one whose transaction
is as new or newer.

The clock is used only where it can be trusted (``XidClock.usable``, ``reason`` says why
not):

* the rows' transaction ids must grow with the history, strictly from one transaction to
  the next (``created_at`` is the transaction's start): a history loaded from a dump, or
  rows inserted by hand in one transaction, all carry the loading transaction's id;
* the catalog must be the one the history was written beside: the row type of a table a
  history row created (still there, under the OID the row recorded) was written in that
  row's transaction, so it must not be newer than the row. A ``pg_upgrade`` or a dump and
  restore rewrites the catalog after the whole history, and then no comment can be dated.

Ids are compared by ``age(xmin)`` in the reader's one snapshot (32-bit ids wrap; a history
spanning more than two billion transactions would not be in order, and is refused by the
first test). Comments are read on relations (tables, views, materialized views,
sequences) and their columns, the parts ``shadow/later_parts.py`` handles.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import qualified_name, quote_identifier, quote_literal
from pggit_export.read.history import ALL_COLUMNS, HistoryColumns
from pggit_export.shadow.evidence import RecordedCreations

# Each row's transaction, as an age (larger: older), and the transaction's start (as
# text: v1 histories hold 'infinity' and years past 9999, which only compare here).
_HISTORY_XIDS_SQL = """
SELECT h.id, pg_catalog.age(h.xmin)::bigint, h.created_at::text
FROM pggit.history AS h
ORDER BY h.id
"""

# For each table a CREATE row recorded (by OID) that still exists with that OID: the
# row, its age and the age of the table's row type in pg_type.
_ANCHORS_SQL = r"""
SELECT h.id, pg_catalog.age(h.xmin)::bigint, pg_catalog.age(t.xmin)::bigint
FROM pggit.history AS h
JOIN pggit.objects AS o ON o.id = h.object_id
JOIN pg_catalog.pg_class AS c
  ON c.oid = (h.new_metadata->>'oid')::bigint::oid AND c.relname = o.object_name
JOIN pg_catalog.pg_type AS t ON t.oid = c.reltype
WHERE h.change_type::text = 'CREATE' AND o.object_type::text = 'TABLE'
  AND h.new_metadata ? 'oid' AND (h.new_metadata->>'oid') ~ '^[0-9]{1,10}$'
"""

# Comments on relations and their columns outside the schemas excluded, with their ages.
_COMMENTS_SQL = """
SELECT n.nspname, c.relname, coalesce(a.attname, ''), c.relkind::text, d.description,
       pg_catalog.age(d.xmin)::bigint
FROM pg_catalog.pg_description AS d
JOIN pg_catalog.pg_class AS c ON c.oid = d.objoid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = d.objsubid
WHERE d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND (d.objsubid = 0 OR a.attnum IS NOT NULL)
  AND n.nspname <> ALL (%(exclude)s::text[]) AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class XidClock:
    """The history rows on the source's transaction clock (see the module's docstring)."""

    ids: tuple[int, ...] = ()  # history ids, ascending
    ages: tuple[int, ...] = ()  # age of each row's transaction id: never growing
    usable: bool = False
    reason: str = "the history has no rows"

    def due(self, age: int) -> int | None:
        """The first history id whose transaction is as new as one of age `age`, or newer:
        what that transaction did came before that row's changeset ended. None when it is
        newer than every row's."""
        index = self._first_as_new(age)
        return self.ids[index] if index < len(self.ids) else None

    def last_before(self, age: int) -> int | None:
        """The last history id whose transaction is older than one of age `age`."""
        index = self._first_as_new(age)
        return self.ids[index - 1] if index > 0 else None

    def _first_as_new(self, age: int) -> int:
        # The ages never grow along the rows: bisect on their negation.
        return bisect.bisect_left(self.ages, -age, key=lambda row_age: -row_age)


def read_xid_clock(conn: psycopg.Connection[Any],
                   columns: HistoryColumns = ALL_COLUMNS) -> XidClock:
    """The history's transaction ids, and whether they may be trusted (in the reader's
    transaction: the ages are taken in one snapshot)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_HISTORY_XIDS_SQL).fetchall()
    if not rows:
        return XidClock()
    ids = tuple(int(row[0]) for row in rows)
    ages = tuple(int(row[1]) for row in rows)
    for (_, age, started), (_, next_age, next_started) in zip(rows, rows[1:]):
        if next_age > age or (next_started != started and next_age == age):
            return XidClock(ids, ages, False, "the history rows' transaction ids do not grow "
                            "from one transaction to the next (loaded from a dump, or "
                            "written by hand): not used")
    if not (columns.has("history", "new_metadata") and columns.has("history", "change_type")):
        return XidClock(ids, ages, False, "pggit.history records no change types or metadata "
                        "to check the catalog against: not used")
    with conn.cursor(row_factory=tuple_row) as cur:
        anchors = cur.execute(_ANCHORS_SQL).fetchall()
    if not anchors:
        return XidClock(ids, ages, False, "no table a history row created exists live to "
                        "check the catalog against: not used")
    # A table's row type is written by the CREATE its row records: not after that row, and
    # after the transaction of the row before (a renamed table's is rewritten later).
    # The age of the transaction before each row's (None for the first transaction's).
    before: dict[int, int | None] = {}
    previous: int | None = None
    for index, (row_id, age) in enumerate(zip(ids, ages)):
        if index and ages[index - 1] > age:
            previous = ages[index - 1]
        before[row_id] = previous
    written = sum(1 for row_id, row_age, catalog_age in anchors
                  if row_age <= catalog_age
                  and (before[row_id] is None or catalog_age < before[row_id]))
    if 2 * written <= len(anchors):
        return XidClock(ids, ages, False, f"{len(anchors) - written} of {len(anchors)} tables "
                        "the history created are not in the catalog as their rows' "
                        "transactions wrote them (the catalog was rebuilt: pg_upgrade, dump "
                        "and restore?): not used")
    return XidClock(ids, ages, True, f"usable: the history rows' transaction ids grow with "
                    f"the history, and {written} of {len(anchors)} tables it created are in "
                    "the catalog as their rows' transactions wrote them")


@dataclass(frozen=True)
class LiveComment:
    """A live comment on a relation or column, with the age of the transaction that set
    its text."""

    schema: str
    relation: str
    column: str  # '' for the relation's own comment
    relkind: str  # pg_class.relkind of the live relation
    text: str
    age: int

    @property
    def target(self) -> str:
        """What the comment is on, as RecordedCreations names it."""
        return f"{self.relation}.{self.column}" if self.column else self.relation

    def describe(self) -> str:
        on = f"column {self.schema}.{self.target}" if self.column else (
            f"{_KIND_WORDS.get(self.relkind, 'TABLE').lower()} {self.schema}.{self.relation}")
        return f"comment on {on}"

    def statement(self, relkind: str) -> str:
        """The COMMENT setting it, on the shadow's relation of kind `relkind`."""
        name = qualified_name(self.schema, self.relation)
        on = (f"COLUMN {name}.{quote_identifier(self.column)}" if self.column
              else f"{_KIND_WORDS.get(relkind, 'TABLE')} {name}")
        return f"COMMENT ON {on} IS {quote_literal(self.text)}"


@dataclass(frozen=True)
class DatedComment(LiveComment):
    """A live comment no recorded text sets, dated by its transaction id: set before the
    changeset of history row `due_id` (None: after the last history row)."""

    due_id: int | None = None
    after_id: int | None = None  # the last row whose transaction is older

    def evidence(self) -> str:
        if self.due_id is None:
            when = "newer than every history row's"
        elif self.after_id is None:
            when = f"not older than history id {self.due_id}'s"
        else:
            when = (f"newer than history id {self.after_id}'s and not older than history id "
                    f"{self.due_id}'s")
        return (f"its transaction id is {when} (transaction id chronology), and v1 never "
                "records COMMENT")


# COMMENT ON's word for each relation kind.
_KIND_WORDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
               "S": "SEQUENCE", "f": "FOREIGN TABLE"}


@dataclass(frozen=True)
class CommentDates:
    """The live comments no recorded text sets, and what the clock makes of them."""

    unrecorded: int = 0
    clock: XidClock | None = None  # read only when there are such comments
    dated: list[DatedComment] = field(default_factory=list)


def read_comment_dates(conn: psycopg.Connection[Any], exclude_schemas: Collection[str],
                       recorded: RecordedCreations,
                       columns: HistoryColumns = ALL_COLUMNS) -> CommentDates:
    """The live comments on relations and columns (outside `exclude_schemas`) that no
    recorded text sets, and those a usable clock dates after the first history row: set
    inside the history (`due_id`), or after it (None). Older ones are the pre-history's."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_COMMENTS_SQL, {"exclude": list(exclude_schemas)}).fetchall()
    live = [LiveComment(schema, relation, column, relkind, text, int(age))
            for schema, relation, column, relkind, text, age in rows]
    unrecorded = [c for c in live if recorded.created("comment", c.target) is None]
    if not unrecorded:
        return CommentDates()
    clock = read_xid_clock(conn, columns)
    if not clock.usable or not clock.ids:
        return CommentDates(len(unrecorded), clock)
    return CommentDates(len(unrecorded), clock, [
        DatedComment(c.schema, c.relation, c.column, c.relkind, c.text, c.age,
                     clock.due(c.age), clock.last_before(c.age))
        for c in unrecorded if c.age <= clock.ages[0]])
