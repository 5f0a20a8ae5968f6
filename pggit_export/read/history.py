"""Stage 1: read pgGit v1 history from the source database, read only, in order.

The source is never written to and never runs history SQL. Everything here
happens in one REPEATABLE READ, READ ONLY transaction, so the export sees one
consistent history even while the database keeps changing, and rows are streamed
through a server-side cursor rather than loaded whole.

Rows are grouped into replay units (Changeset): v1 writes one row per affected
object, all carrying the same sql_executed, created_at and created_by, and
created_at is the transaction's start, so *consecutive* rows sharing created_at
and created_by are one transaction: one unit, replayed once, one commit (or, per
statement, those also sharing sql_executed).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pggit_export.errors import PggitExportError
from pggit_export.read.environment import SessionEnvironment, read_environment


class SourceError(PggitExportError, RuntimeError):
    """The source database cannot be read as a pgGit v1 history."""


@dataclass(frozen=True)
class HistoryRow:
    """One row of pggit.history, joined with the object it names."""

    id: int
    change_type: str
    change_severity: str
    sql_executed: str | None
    created_at: dt.datetime | None  # as recorded; NULL in old or hand-edited histories
    created_by: str | None
    effective_time: dt.datetime  # created_at, or inferred from the rows before/after it
    change_description: str | None = None
    object_type: str | None = None  # None when the objects row is gone
    schema_name: str | None = None
    object_name: str | None = None
    new_metadata: str | None = None  # jsonb as text
    unusable_time: str | None = None  # created_at as recorded, when no commit can carry it
    object_id: int | None = None  # the pggit.objects row named, which may be gone
    row_json: str | None = None  # the whole pggit.history row as JSON text
    # Columns whose stored bytes were not valid UTF-8 (a SQL_ASCII source can hold any
    # bytes): their text here has U+FFFD in place of each invalid sequence.
    invalid_utf8: tuple[str, ...] = ()

    @property
    def object_label(self) -> str:
        """`schema.name` of the object this row names, as v1 recorded it."""
        if self.object_name is None:
            return f"(object {self.object_id}, missing from pggit.objects)"
        if self.schema_name:
            return f"{self.schema_name}.{self.object_name}"
        return self.object_name


@dataclass(frozen=True)
class Changeset:
    """A replay unit: consecutive history rows of one transaction (sharing created_at and
    created_by), or, with ``commit_per="statement"``, also sharing sql_executed.

    It is replayed once, in its own transaction, and becomes one commit.
    """

    rows: tuple[HistoryRow, ...]
    # The search_path its user's sessions had (read.environment); None: the default.
    search_path: str | None = None

    @property
    def texts(self) -> list[str | None]:
        """The texts the transaction's client sent, in order: each run of consecutive
        rows with the same sql_executed is one text (v1 writes a row per object touched)."""
        texts: list[str | None] = []
        for index, row in enumerate(self.rows):
            if index == 0 or row.sql_executed != self.rows[index - 1].sql_executed:
                texts.append(row.sql_executed)
        return texts

    @property
    def sql(self) -> str | None:
        """What replays: the one text, or the transaction's texts one after the other, each
        ended with a `;` on a line of its own when it does not end with one (a text can end
        in a `--` comment)."""
        texts = [text for text in self.texts if text is not None]
        if len(texts) <= 1:
            return texts[0] if texts else None
        return "\n".join(text if text.rstrip().endswith(";") else f"{text}\n;" for text in texts)

    @property
    def created_by(self) -> str | None:
        return self.rows[0].created_by

    @property
    def time(self) -> dt.datetime:
        """When it ran (UTC, naive as recorded); inferred when created_at is NULL."""
        return self.rows[0].effective_time

    @property
    def time_inferred(self) -> bool:
        return self.rows[0].created_at is None

    @property
    def history_ids(self) -> list[int]:
        return [row.id for row in self.rows]

    @property
    def last_id(self) -> int:
        return self.rows[-1].id


@dataclass(frozen=True)
class SourceInfo:
    """What the reader learned about the source server."""

    server_version: int  # libpq form: 150004 for 15.4
    history_rows: int


# created_at is NULL in old or hand-edited histories, and can be a time no git
# commit can carry ('infinity', BC, before 1970). Such a row takes the time of
# the nearest earlier usable row by id (or the nearest later one at the very
# start), so that commit dates never go backwards and the order stays
# deterministic; the commit says so.
_TIMED_HISTORY = """
WITH usable AS (
    -- narrow rows: the window sorts below never carry the SQL text
    SELECT h.id,
           CASE WHEN isfinite(h.created_at)
                     AND h.created_at >= timestamp '1970-01-01'
                     AND h.created_at < timestamp '10000-01-01'
                THEN h.created_at END AS usable_at
    FROM pggit.history AS h
),
timed AS (
    -- Both frames start at UNBOUNDED PRECEDING, so each is one running aggregate
    -- (a frame whose start moves would re-aggregate for every row: quadratic).
    SELECT u.id, u.usable_at,
           coalesce(
               u.usable_at,
               max(u.usable_at) OVER (ORDER BY u.id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
               min(u.usable_at) OVER (ORDER BY u.id DESC
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
               timestamp '1970-01-01'
           ) AS effective_time
    FROM usable AS u
)
"""

# The columns a history cannot be read without; pgGit versions differ in the others.
REQUIRED_COLUMNS = {
    "history": ("id", "object_id", "sql_executed", "created_at", "created_by"),
    "objects": ("id", "object_type", "schema_name", "object_name"),
}
# The optional ones the export uses, and what is lost without each (check says so).
OPTIONAL_COLUMNS = {
    ("history", "change_type"): "CREATE/ALTER/DROP of each row: v1's record of what was "
    "created, the OID clock, and the change types in commit trailers",
    ("history", "change_severity"): "the severity in commit trailers",
    ("history", "change_description"): "v1's description of each change",
    ("history", "new_metadata"): "v1's column lists after each change (post-conditions) "
    "and recorded OIDs (the OID clock)",
    ("objects", "is_active"): "which tracked objects are still active (check's "
    "untracked-object finding)",
}


@dataclass(frozen=True)
class HistoryColumns:
    """The columns the source's pggit.history and pggit.objects have."""

    history: frozenset[str]
    objects: frozenset[str]

    def has(self, table: str, column: str) -> bool:
        return column in (self.history if table == "history" else self.objects)

    def missing_required(self) -> list[str]:
        return [f"pggit.{table}.{column}" for table, columns in REQUIRED_COLUMNS.items()
                for column in columns if not self.has(table, column)]

    def unusable(self) -> list[str]:
        """One line per optional column the source lacks: what is not used."""
        return [f"pggit.{table} has no column {column}: not used: {lost}"
                for (table, column), lost in OPTIONAL_COLUMNS.items()
                if not self.has(table, column)]


# Every column: a newer pgGit with more columns than these reads as well.
ALL_COLUMNS = HistoryColumns(
    frozenset([*REQUIRED_COLUMNS["history"], *(c for t, c in OPTIONAL_COLUMNS if t == "history")]),
    frozenset([*REQUIRED_COLUMNS["objects"], *(c for t, c in OPTIONAL_COLUMNS if t == "objects")]),
)

_COLUMNS_SQL = """
SELECT c.relname AS table, a.attname AS column
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'pggit' AND c.relname IN ('history', 'objects')
  AND a.attnum > 0 AND NOT a.attisdropped
"""


def read_history_columns(conn: psycopg.Connection[Any]) -> HistoryColumns:
    """The columns of the source's v1 tables."""
    found: dict[str, set[str]] = {"history": set(), "objects": set()}
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        for table, column in cur.execute(_COLUMNS_SQL):
            # bytes from a SQL_ASCII source
            found[_decoded(table, "relname", [])].add(_decoded(column, "attname", []))
    return HistoryColumns(frozenset(found["history"]), frozenset(found["objects"]))


def history_query(columns: HistoryColumns) -> sql.Composed:
    """The query of every row after a (time, id) position; an optional column the source
    lacks reads as NULL."""

    def optional(column: str, cast: str = "::text") -> sql.Composable:
        if columns.has("history", column):
            return sql.SQL("h.{}" + cast + " AS {}").format(
                sql.Identifier(column), sql.Identifier(column))
        return sql.SQL("NULL::text AS {}").format(sql.Identifier(column))

    return sql.SQL(_TIMED_HISTORY + """
SELECT h.id,
       {change_type},
       {change_severity},
       h.sql_executed,
       t.usable_at AS created_at,
       CASE WHEN t.usable_at IS NULL THEN h.created_at::text END AS unusable_time,
       h.created_by,
       t.effective_time,
       {change_description},
       -- as text: parsing is left to whoever needs it (a hostile value can nest deeply)
       {new_metadata},
       h.object_id,
       -- the whole v1 row, for the commit's git note (every column, as recorded)
       to_jsonb(h)::text AS row_json,
       o.object_type::text AS object_type,
       o.schema_name,
       o.object_name
FROM timed AS t
JOIN pggit.history AS h ON h.id = t.id
LEFT JOIN pggit.objects AS o ON o.id = h.object_id
WHERE (t.effective_time, t.id) > (%(after_time)s, %(after_id)s)
ORDER BY t.effective_time, t.id
""").format(
        change_type=optional("change_type"),
        change_severity=optional("change_severity"),
        change_description=optional("change_description", ""),
        new_metadata=optional("new_metadata"),
    )


POSITION_QUERY = _TIMED_HISTORY + """
SELECT effective_time FROM timed WHERE id = %(id)s
"""

_BEGINNING = (dt.datetime(1, 1, 1), 0)


# Seconds to wait for the source to answer, where neither the connection string nor
# PGCONNECT_TIMEOUT says: a cron job must not hang forever on a port that accepts and then
# says nothing (another service there, a dead load balancer). libpq's own default waits forever.
DEFAULT_CONNECT_TIMEOUT = 10


def with_connect_timeout(conninfo: str) -> str:
    """`conninfo` with the default connect_timeout, unless it or the environment sets one."""
    if "connect_timeout" in psycopg.conninfo.conninfo_to_dict(conninfo):
        return conninfo
    if os.environ.get("PGCONNECT_TIMEOUT"):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=DEFAULT_CONNECT_TIMEOUT)


@dataclass
class HistoryReader:
    """An open, consistent, read-only view of a source's history.

    Use as a context manager; iterate `changesets()` once.
    """

    conninfo: str
    fetch_size: int = 500
    _conn: psycopg.Connection[Any] | None = field(default=None, init=False, repr=False)
    _columns: HistoryColumns | None = field(default=None, init=False, repr=False)
    _environment: SessionEnvironment | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> HistoryReader:
        try:
            conn = psycopg.connect(
                with_connect_timeout(self.conninfo), row_factory=dict_row  # type: ignore[arg-type]
            )
        except psycopg.OperationalError as exc:
            raise SourceError(f"cannot connect to the source database: {exc}".strip()) from exc
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        self._conn = conn
        try:
            self._check_tables()
        except BaseException:
            conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.rollback()  # read only: nothing to keep
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise RuntimeError("HistoryReader used outside its 'with' block")
        return self._conn

    def _check_tables(self) -> None:
        found = self.conn.execute(
            "SELECT to_regclass('pggit.history') IS NOT NULL AS history,"
            " to_regclass('pggit.objects') IS NOT NULL AS objects"
        ).fetchone()
        assert found is not None
        if not found["history"]:
            raise SourceError(
                "the source has no table pggit.history: is pgGit installed in this database?"
            )
        if not found["objects"]:
            raise SourceError("the source has pggit.history but no pggit.objects")
        columns = read_history_columns(self.conn)
        if missing := columns.missing_required():
            raise SourceError(
                f"the source's pgGit tables lack {', '.join(missing)}: without "
                f"{'it' if len(missing) == 1 else 'them'} the history cannot be read"
            )
        self._columns = columns

    @property
    def columns(self) -> HistoryColumns:
        """The columns the source's v1 tables have (other pgGit versions have others)."""
        if self._columns is None:
            raise RuntimeError("HistoryReader used outside its 'with' block")
        return self._columns

    def info(self) -> SourceInfo:
        """Server version and history size (counted in the export's snapshot)."""
        row = self.conn.execute("SELECT count(*) AS n FROM pggit.history").fetchone()
        assert row is not None
        return SourceInfo(server_version=self.conn.info.server_version, history_rows=row["n"])

    def position_of(self, history_id: int) -> tuple[dt.datetime, int]:
        """The (time, id) ordering key of a history row, to resume after it."""
        row = self.conn.execute(POSITION_QUERY, {"id": history_id}).fetchone()
        if row is None:
            raise SourceError(
                f"the repository was exported up to history id {history_id}, "
                "which the source no longer has: was the history rewritten?"
            )
        return (row["effective_time"], history_id)

    def rows(self, after: tuple[dt.datetime, int] | None = None) -> Iterator[HistoryRow]:
        """History rows in (time, id) order, after `after` if given, streamed."""
        after_time, after_id = after or _BEGINNING
        with self.conn.cursor(name="pggit_export_history") as cur:
            cur.itersize = self.fetch_size
            cur.execute(history_query(self.columns),
                        {"after_time": after_time, "after_id": after_id})
            for rec in cur:
                bad: list[str] = []
                text = {name: _decoded(rec[name], name, bad) for name in _TEXT_COLUMNS}
                yield HistoryRow(
                    id=rec["id"],
                    change_type=text["change_type"],
                    change_severity=text["change_severity"],
                    sql_executed=text["sql_executed"],
                    created_at=rec["created_at"],
                    created_by=text["created_by"],
                    effective_time=rec["effective_time"],
                    change_description=text["change_description"],
                    object_type=text["object_type"],
                    schema_name=text["schema_name"],
                    object_name=text["object_name"],
                    new_metadata=rec["new_metadata"],
                    unusable_time=rec["unusable_time"],
                    object_id=rec["object_id"],
                    row_json=_decoded(rec["row_json"], "row_json", []),
                    invalid_utf8=tuple(bad),
                )

    def environment(self) -> SessionEnvironment:
        """The session settings history ran under, as the source's catalog tells them."""
        if self._environment is None:
            self._environment = read_environment(self.conn)
        return self._environment

    def changesets(
        self, after: tuple[dt.datetime, int] | None = None, commit_per: str = "transaction"
    ) -> Iterator[Changeset]:
        """Replay units in order (group_changesets), each with the search_path its
        author's sessions had."""
        return group_changesets(self.rows(after), self.environment(), commit_per)


_TEXT_COLUMNS = (
    "change_type", "change_severity", "sql_executed", "created_by", "change_description",
    "object_type", "schema_name", "object_name",
)


def _decoded(value: Any, column: str, bad: list[str]) -> Any:
    """Text as str. psycopg returns bytes from a SQL_ASCII database, whose text may be any
    bytes at all: decode them as UTF-8, replacing (and noting) what is not."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        bad.append(column)
        return raw.decode("utf-8", "replace")


COMMIT_PER = ("transaction", "statement")


def group_changesets(
    rows: Iterator[HistoryRow], environment: SessionEnvironment | None = None,
    commit_per: str = "transaction",
) -> Iterator[Changeset]:
    """Group consecutive rows of one transaction: equal (created_at, created_by), since
    v1's created_at is the transaction's start. With `commit_per` "statement", also equal
    sql_executed: one changeset per text the client sent.

    Only *consecutive* rows: with `psql -f` the same text (`DROP VIEW x;`) can
    recur in later transactions and must be replayed again there. With an
    `environment`, each changeset carries the search_path of its user.
    """
    if commit_per not in COMMIT_PER:
        raise ValueError(f"commit_per must be one of {', '.join(COMMIT_PER)}: {commit_per!r}")
    per_statement = commit_per == "statement"

    def changeset(group: list[HistoryRow]) -> Changeset:
        path = environment.search_path_for(group[0].created_by) if environment else None
        return Changeset(tuple(group), search_path=path)

    current: list[HistoryRow] = []
    for row in rows:
        if current and _same_unit(current[-1], row, per_statement):
            current.append(row)
            continue
        if current:
            yield changeset(current)
        current = [row]
    if current:
        yield changeset(current)


def _same_unit(a: HistoryRow, b: HistoryRow, per_statement: bool) -> bool:
    # A NULL created_at never joins: without a time there is no evidence of one transaction.
    return (
        a.created_at is not None
        and a.created_at == b.created_at
        and (not per_statement or a.sql_executed == b.sql_executed)
        and a.created_by == b.created_by
    )

