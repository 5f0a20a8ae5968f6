"""Stage 2: replay changesets in the shadow, a private scratch database.

History SQL runs only here, never in the source. Policy for each statement of a
changeset (see docs/ARCHITECTURE.md, "Replay policy"):

- DDL, DO blocks, SELECT and CALL are replayed: a SELECT or CALL may run a
  function that creates objects.
- INSERT/UPDATE/DELETE/MERGE/COPY/TRUNCATE and other data-only commands are
  skipped: the shadow holds no data.
- Transaction control (BEGIN, COMMIT, SAVEPOINT, ...) is skipped: the tool runs
  each changeset in one transaction of its own.
- Privileges and ownership (GRANT, REVOKE, OWNER TO, roles) are skipped: they
  are not part of a snapshot, and the shadow does not have the source's roles.
- Commands that could reach the host or the cluster (ALTER SYSTEM, databases,
  tablespaces, LOAD, COPY with a program or file) are refused and reported.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import psycopg
import sqlparse
from psycopg import sql
from psycopg.pq import TransactionStatus

from pggit_export.errors import PggitExportError
from pggit_export.identifiers import IDENTIFIER_PATTERN, quote_literal
from pggit_export.read.history import Changeset
from pggit_export.read.sqlsplit import split as split_sql
from pggit_export.read.sqlsplit import without_leading_comments
from pggit_export.render.rawparse import RawParser
from pggit_export.shadow.server import EmbeddedServer, connect_shadow, find_binaries


class ShadowError(PggitExportError, RuntimeError):
    """The shadow database could not be created or used."""


class Action(Enum):
    """What replay does with one statement."""

    REPLAY = "replay"
    SKIP_DATA = "skip: changes data only, the shadow holds none"
    SKIP_TRANSACTION = "skip: transaction control, each changeset is one transaction"
    SKIP_PRIVILEGES = "skip: privileges, owners and roles are not part of a snapshot"
    SKIP_MAINTENANCE = "skip: maintenance or session command with no effect on the schema"
    REFUSE = "refused: could reach the server's host or cluster"
    TOO_LARGE = "refused: SQL text over the size limit (--max-sql-bytes), not parsed"
    SKIP_REPAIRED = "skip: a repair found it has nothing to do (see Pggit-Repaired)"


REFUSALS = frozenset({Action.REFUSE, Action.TOO_LARGE})
DEFAULT_MAX_SQL_BYTES = 4 * 1024 * 1024
DEFAULT_STATEMENT_TIMEOUT = "10min"
# The shadow holds a schema, not data: a database this large means a history storing rows
# (a DO block or a function inserting them), which would fill a disk (--shadow-size-limit).
DEFAULT_SHADOW_SIZE_LIMIT = 1024 ** 3
# Statements that can store rows although replay skips every data command.
_MAY_STORE_DATA = frozenset({"DO", "SELECT", "CALL", "WITH"})


def may_store_data(statements: Sequence[Statement]) -> bool:
    """Whether replaying these statements can have stored rows in the shadow."""
    return any(s.action is Action.REPLAY
               and not _MAY_STORE_DATA.isdisjoint(_leading_words(s.text, 1)) for s in statements)


_SIZE = re.compile(r"\s*(\d+)\s*(B|kB|MB|GB|TB)?\s*")
_SIZE_UNITS = {None: 1, "B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def parse_size(text: str) -> int | None:
    """A size as PostgreSQL writes it (`512MB`, `2GB`, `1048576`; units of 1024) in bytes;
    None if it is not one."""
    match = _SIZE.fullmatch(text)
    return int(match[1]) * _SIZE_UNITS[match[2]] if match else None


@dataclass(frozen=True)
class Statement:
    """One statement of a changeset's SQL text, with what replay does with it."""

    text: str
    action: Action


_DATA = {"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "TRUNCATE", "REFRESH", "VALUES", "TABLE"}
_TRANSACTION = {
    "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE",
}
_PRIVILEGES = {"GRANT", "REVOKE", "REASSIGN"}
_MAINTENANCE = {
    "VACUUM", "ANALYZE", "ANALYSE", "CLUSTER", "REINDEX", "CHECKPOINT", "LOCK", "LISTEN",
    "NOTIFY", "UNLISTEN", "EXPLAIN", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "MOVE",
    "CLOSE", "DISCARD", "SHOW",
}
_ROLE_OBJECTS = {"ROLE", "USER", "GROUP"}
_HOST_OBJECTS = {"DATABASE", "TABLESPACE"}
_WORD = re.compile(r"[A-Za-z_]+")
_OWNER_TO = re.compile(r"\bOWNER\s+TO\s+\S+\s*;?\s*$", re.I)
_CONCURRENTLY = re.compile(r"^(\s*(?:CREATE\s+(?:UNIQUE\s+)?|DROP\s+)INDEX\s+)CONCURRENTLY\s+", re.I)
_TRIGGER_ALL = re.compile(r"(\b(?:DISABLE|ENABLE(?:\s+(?:REPLICA|ALWAYS))?)\s+TRIGGER\s+)ALL\b", re.I)
# Which triggers fire for data changes: a superuser's session setting, no schema state.
_REPLICATION_ROLE = re.compile(
    r"^(?:SET|RESET)\s+(?:(?:SESSION|LOCAL)\s+)?session_replication_role\b", re.I
)


def _leading_words(text: str, count: int = 4) -> list[str]:
    body = without_leading_comments(text)
    return [w.upper() for w in _WORD.findall(body[:200])[:count]]


# Anything that names these is refused whatever the statement: they read or
# write the server's files, reach the network, or run code outside PostgreSQL.
# (The replay role is no superuser either, so a hidden use fails; this makes it
# a reported refusal instead of a replay failure, and never even tries.)
_HOST_REACHING = re.compile(
    r"\b(pg_read_file|pg_read_binary_file|pg_ls_\w*dir|pg_stat_file|pg_file_\w+"
    r"|lo_import|lo_export|lo_from_bytea|lo_put|lo_get|lo_create|lo_unlink"
    r"|dblink\w*|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile"
    r"|set_config\s*\(\s*'(archive|log|ssl|data_directory|shared_preload))\b"
    r"|\bLANGUAGE\s+['\"]?(plpython\w*u|plperlu|pltclu|c|internal)\b"
    r"|\bCREATE\s+EXTENSION\s+(IF\s+NOT\s+EXISTS\s+)?['\"]?"
    r"(adminpack|dblink|file_fdw|postgres_fdw|plpython\w*u|plperlu|pltclu)\b"
    r"|\bCOPY\b[^;]*\b(PROGRAM|TO\s+'|FROM\s+')",
    re.I | re.S,
)


def classify(text: str) -> Action:
    """Decide what replay does with one statement (see the module docstring)."""
    if _HOST_REACHING.search(text):
        return Action.REFUSE
    words = _leading_words(text)
    if not words:
        return Action.SKIP_MAINTENANCE
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first == "COPY":
        # Only COPY from the client (STDIN) or to it (STDOUT) is plain data; anything
        # else names a file or program on the server, however it is spelled.
        if re.search(r"\b(FROM\s+STDIN|TO\s+STDOUT)\b", text, re.I):
            return Action.SKIP_DATA
        return Action.REFUSE
    if first == "WITH":
        kind = sqlparse.parse(text)[0].get_type()
        return Action.SKIP_DATA if kind in {"INSERT", "UPDATE", "DELETE", "MERGE"} else Action.REPLAY
    if first in _DATA:
        return Action.SKIP_DATA
    if first in _TRANSACTION or (first == "SET" and second == "TRANSACTION"):
        return Action.SKIP_TRANSACTION
    if (first == "ALTER" and second == "SYSTEM") or first == "LOAD":
        return Action.REFUSE
    if first in {"CREATE", "DROP", "ALTER"} and (second in _HOST_OBJECTS):
        return Action.REFUSE
    if first in _PRIVILEGES or (first in {"CREATE", "DROP", "ALTER"} and second in _ROLE_OBJECTS):
        return Action.SKIP_PRIVILEGES
    if first == "ALTER" and second == "DEFAULT":  # ALTER DEFAULT PRIVILEGES
        return Action.SKIP_PRIVILEGES
    if first == "ALTER" and _OWNER_TO.search(text):
        return Action.SKIP_PRIVILEGES
    if first in _MAINTENANCE or _REPLICATION_ROLE.match(without_leading_comments(text)):
        return Action.SKIP_MAINTENANCE
    return Action.REPLAY


def split_statements(text: str) -> list[Statement]:
    """Split a history text into statements (sqlparse) and classify each one.

    The pieces are ``sqlparse.split(text)``'s (see sqlsplit: a fast scanner for the common
    texts, sqlparse itself for the rest), except that a transaction BEGIN with modes is
    cut off the statements sqlparse leaves attached to it (see `_pieces`). Pieces made only
    of comments or whitespace are dropped.
    """
    statements = []
    for piece in _pieces(text):
        if not without_leading_comments(piece).strip(" \t\r\n;"):
            continue
        statements.append(Statement(piece, classify(piece)))
    return statements


# sqlparse opens a block at BEGIN and closes it at TRANSACTION/WORK or at the BEGIN's own
# ';', but not after transaction modes: "BEGIN ISOLATION LEVEL SERIALIZABLE; CREATE TABLE
# a ...; COMMIT;" comes back as one piece, which replay would skip whole as transaction
# control, losing the CREATE. A transaction BEGIN holds no ';' of its own, so such a piece
# is cut after its first one and the rest is split again.
_TRANSACTION_BEGIN = re.compile(r"BEGIN\s+(?:ISOLATION|READ|NOT|DEFERRABLE)\b[^;'\"$]*;", re.I)


def _pieces(text: str) -> Iterator[str]:
    for piece in split_sql(text):
        body = without_leading_comments(piece)
        begin = _TRANSACTION_BEGIN.match(body)
        if begin is not None and body[begin.end():].strip():
            yield piece[: len(piece) - len(body) + begin.end()]
            yield from _pieces(body[begin.end():])
        else:
            yield piece


def _session_settings(changeset: Changeset) -> list[str]:
    """Statements that put the changeset's transaction in the session environment its
    author had in the source (read.environment): for now, its search_path."""
    if changeset.search_path is None:
        return []
    value = quote_literal(changeset.search_path)
    return [f"SELECT pg_catalog.set_config('search_path', {value}, true)"]


def prepare_for_transaction(text: str) -> str:
    """Rewrite a statement so it may run inside the changeset's transaction, as the
    replay role, with the same effect on the schema.

    CREATE/DROP INDEX CONCURRENTLY refuse to run in a transaction block; without
    CONCURRENTLY they make the same schema. ``DISABLE/ENABLE TRIGGER ALL`` also switches
    the system triggers that enforce foreign keys, which only a superuser may do: migrations
    wrap bulk updates in it. The system triggers are no part of a schema dump; the user
    triggers are, and ``TRIGGER USER`` switches exactly those.
    """
    text = _CONCURRENTLY.sub(r"\1", text, count=1)
    return without_data(_TRIGGER_ALL.sub(r"\1USER", text))


# CREATE TABLE ... AS and CREATE MATERIALIZED VIEW ... AS run their query and store its rows:
# replayed as recorded, a history's `generate_series(1, 3000000)` wrote gigabytes into the
# shadow. The schema does not depend on the rows, and snapshots render every materialized
# view WITH NO DATA anyway.
_CREATES_FROM_QUERY = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?"
    r"(?:TABLE|MATERIALIZED\s+VIEW)\b[^;]*?\bAS\b",
    re.I | re.S,
)


# SELECT ... INTO t is CREATE TABLE t AS SELECT ... written the other way round.
_SELECTS_INTO = re.compile(r"(?:SELECT|WITH)\b[^;]*?\bINTO\b", re.I | re.S)
_INTO_TARGET = re.compile(
    rf"^(?:(?P<persistence>TEMPORARY|TEMP|UNLOGGED)\s+)?(?:TABLE\s+)?(?P<name>{IDENTIFIER_PATTERN}"
    rf"(?:\s*\.\s*{IDENTIFIER_PATTERN})?)$",
    re.I,
)


def without_data(text: str) -> str:
    """`CREATE TABLE t AS query` (or a materialized view) as `... WITH NO DATA`: the same
    table, its columns typed by the query, and no rows computed. Only a top-level AS counts
    (not `GENERATED ALWAYS AS` inside the column list); `SELECT ... INTO t ...` becomes the
    CREATE TABLE AS it means (select_into_as_create); any other text is returned as is."""
    body = without_leading_comments(text)
    if _SELECTS_INTO.match(body):
        return select_into_as_create(text)
    if not _CREATES_FROM_QUERY.match(body):
        return text
    statement = sqlparse.parse(text)[0]
    tokens = list(statement.flatten())
    if not any(t.is_keyword and t.normalized == "AS" for t in statement.tokens):
        return text  # AS only inside parentheses: a plain CREATE TABLE
    significant = [i for i, t in enumerate(tokens)
                   if not (t.is_whitespace or t.ttype in sqlparse.tokens.Comment
                           or t.value == ";")]
    if not significant:
        return text
    last = significant[-1]
    words = [tokens[i].normalized.upper() for i in significant[-3:]]
    end = sum(len(t.value) for t in tokens[: last + 1])
    if words == ["WITH", "NO", "DATA"]:
        return text
    if words[-2:] == ["WITH", "DATA"]:  # say NO before its DATA
        data = end - len(tokens[last].value)
        return f"{text[:data]}NO {text[data:]}"
    return f"{text[:end]} WITH NO DATA{text[end:]}"


def select_into_as_create(text: str) -> str:
    """`SELECT cols INTO [TEMP|UNLOGGED] [TABLE] t FROM ...` as `CREATE [TEMP|UNLOGGED]
    TABLE t AS SELECT cols FROM ... WITH NO DATA`: the same table, no rows. Only an INTO
    at the statement's top level counts (a PL/pgSQL body's is inside a string); a text
    whose target is not a plain table name is returned as is."""
    statement = sqlparse.parse(text)[0]
    tokens = statement.tokens
    into = next((i for i, t in enumerate(tokens) if t.is_keyword and t.normalized == "INTO"),
                None)
    if into is None:
        return text
    end = into + 1  # the target: every token up to the next keyword (FROM, WHERE, ...)
    while end < len(tokens) and not (tokens[end].is_keyword and tokens[end].normalized
                                     not in ("TEMP", "TEMPORARY", "UNLOGGED", "TABLE")):
        end += 1
    target = _INTO_TARGET.match(" ".join("".join(str(t) for t in tokens[into + 1:end]).split()))
    if target is None:
        return text
    query = ("".join(str(t) for t in tokens[:into]).rstrip() + " "
             + "".join(str(t) for t in tokens[end:]).lstrip()).rstrip().rstrip(";").rstrip()
    persistence = f"{target['persistence'].upper()} " if target["persistence"] else ""
    # On a line of its own: the query may end in a -- comment.
    return f"CREATE {persistence}TABLE {target['name']} AS {query}\nWITH NO DATA"


# 'now', 'today', 'tomorrow' and 'yesterday' are evaluated when a statement runs
# and stored as constants (in a default, a check, a view). Replayed years later
# they would store the replay's clock: a different schema on every run. They
# are rewritten to the time the history recorded for the changeset. Only where
# the literal is cast to a date/time type (`'now'::date`, `DATE 'today'`,
# `CAST('now' AS ...)`) or is a DEFAULT; never inside dollar-quoted bodies,
# which are evaluated when called.
_TIME_TYPE = (r"(?:date|timestamptz|timestamp|timetz|time)"
              r"(?:\s+with(?:out)?\s+time\s+zone)?")
_CLOCK_LITERAL = re.compile(
    rf"(?P<pre>\b{_TIME_TYPE}\s+|\bDEFAULT\s+|\bCAST\s*\(\s*)?"
    r"(?<!')'\s*(?P<word>now|today|tomorrow|yesterday)\s*'(?!')"
    rf"(?P<cast>\s*::\s*(?:pg_catalog\.)?{_TIME_TYPE}\b)?",
    re.I,
)
_CAST_TARGET = re.compile(rf"\s+AS\s+(?:pg_catalog\.)?{_TIME_TYPE}\b", re.I)
# The tag group always takes part (empty for $$): a backreference to a group
# that did not take part never matches in Python.
_DOLLAR_QUOTED = re.compile(r"(\$([A-Za-z_][A-Za-z_0-9]*|)\$.*?\$\2\$)", re.S)


def freeze_clock_literals(text: str, when: dt.datetime) -> str:
    """Replace clock literals with the recorded time `when` (see above)."""
    if "'" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        pre, cast = match.group("pre") or "", match.group("cast") or ""
        is_cast = pre.upper().startswith("CAST")
        if not (pre or cast) or (is_cast and not _CAST_TARGET.match(match.string, match.end())):
            return match.group(0)  # a plain string that happens to say 'now'
        word = match.group("word").lower()
        if word == "now":
            literal = f"'{when.isoformat(sep=' ')}'"
        else:
            literal = f"'{(when.date() + dt.timedelta(days=_CLOCK_WORDS[word])).isoformat()}'"
        return f"{pre}{literal}{cast}"

    pieces = _DOLLAR_QUOTED.split(text)
    # split() with two groups yields: text, whole quote, tag, text, whole quote, tag, ...
    out = []
    for i in range(0, len(pieces), 3):
        out.append(_CLOCK_LITERAL.sub(value, pieces[i]))
        if i + 1 < len(pieces):
            out.append(pieces[i + 1])
    return "".join(out)


_CLOCK_WORDS = {"now": 0, "today": 0, "tomorrow": 1, "yesterday": -1}


@dataclass(frozen=True)
class TouchedObjects:
    """What one changeset's DDL touched, as the shadow's event triggers saw it."""

    # (catalog, oid) of objects created or altered (still in the catalog)
    altered: list[tuple[int, int]] = field(default_factory=list)
    # (catalog, oid, object type, address names) of dropped objects (gone from the catalog)
    dropped: list[tuple[int, int, str, list[str]]] = field(default_factory=list)
    # What install_tracker's `resolve_sql` made of the altered objects (parsed json)
    resolved: Any = None


@dataclass(frozen=True)
class ReplayFailure:
    """Why a changeset could not be replayed."""

    statement_index: int  # 1-based position among the changeset's statements
    statement: str
    sqlstate: str | None
    message: str  # PostgreSQL's primary message
    detail: str | None = None
    hint: str | None = None

    def describe(self) -> str:
        code = f" ({self.sqlstate})" if self.sqlstate else ""
        detail = f" DETAIL: {self.detail}" if self.detail else ""
        return f"statement {self.statement_index}: {self.message}{detail}{code}"


@dataclass(frozen=True)
class ReplayResult:
    """What happened when one changeset was replayed."""

    statements: list[Statement]
    replayed: int = 0
    failure: ReplayFailure | None = None
    refused: list[Statement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class ReplayPlan:
    """A changeset's statements as replay sends them: what `Shadow.plan` made of its text."""

    changeset: Changeset
    statements: list[Statement]
    # The statements that run, (1-based index among `statements`, statement), and their
    # texts as sent (prepared for a transaction, clock literals frozen).
    to_run: list[tuple[int, Statement]]
    texts: list[str]
    # What puts the transaction in its author's session environment (search_path).
    session: list[str]

    def outcome(self, replayed: int = 0, failure: ReplayFailure | None = None) -> ReplayResult:
        return ReplayResult(
            statements=self.statements, replayed=replayed, failure=failure,
            refused=[s for s in self.statements if s.action in REFUSALS],
        )


class Shadow:
    """A connection to the private scratch database where history SQL runs."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        description: str,
        *,
        admin: psycopg.Connection[Any] | None = None,
        private: bool = False,
        extension_directory: Path | None = None,
        parser_conninfo: str | None = None,
    ) -> None:
        self.conn = conn  # replays history: a non-superuser in the private shadow
        self.admin = admin  # a superuser on the same database, for the tool's own work
        self.private = private  # a server of our own: creating roles there harms nobody
        # Where extension stand-ins are written (server.EmbeddedServer); None: not possible.
        self.extension_directory = extension_directory
        self.description = description
        self.tracking = False  # True once the change tracker is installed and intact
        self._take_sql: sql.Composed = sql.Composed([])  # install_tracker's
        self.warnings: list[str] = []  # what the export should tell the user about the shadow
        self._watchdog: _Watchdog | None = None
        # Where a connection that only parses may be opened (the admin's database).
        self._parser_conninfo = parser_conninfo
        self._parser: RawParser | None = None

    def raw_parser(self) -> RawParser | None:
        """The server's parser on a connection of its own (render/rawparse.py), opened
        on first use; None when the role may not use it without filling the log."""
        if self._parser is None and self._parser_conninfo is not None:
            self._parser = RawParser.connect(self._parser_conninfo)
            self._parser_conninfo = None  # asked once, whatever the answer
        return self._parser

    def watch_statements(self, seconds: float) -> None:
        """Cancel any replayed statement running longer than `seconds` (plus a grace)."""
        self._watchdog = _Watchdog(self.conn, seconds + 2.0)
        self._watchdog.start()

    def statement_timeout_seconds(self) -> float:
        """The scratch database's statement timeout, read before any history ran."""
        row = self.conn.execute(
            "SELECT setting::float8 / 1000 FROM pg_catalog.pg_settings "
            "WHERE name = 'statement_timeout'"
        ).fetchone()
        seconds = float(row[0]) if row else 0.0
        return seconds if seconds > 0 else 24 * 3600.0

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._parser is not None:
            self._parser.close()

    def install_tracker(self, resolve_sql: str, setup: Callable[[], None] | None = None) -> bool:
        """Install the event triggers that record what each changeset touches.

        Needs a superuser; without one (a --shadow-dsn of a plain user) every
        changeset is rendered in full instead, which is slower but the same.
        `resolve_sql`, a scalar sub-select (snapshot.touched_render_sql), runs in
        the statement that takes the record, reading the altered objects'
        (classid, objid) from `altered`; its value comes back as
        TouchedObjects.resolved (round trips fewer per changeset). `setup` runs
        after the tracker is installed, in the same transaction.
        """
        # `resolve_sql` is the tool's own fragment (render/snapshot.py), never history text.
        self._take_sql = sql.SQL(_TAKE_TOUCHED_SQL).format(resolve_sql=sql.SQL(resolve_sql))
        conn = self.admin or self.conn
        try:
            with conn.transaction():
                conn.execute(_TRACKER_SQL, prepare=False)  # several statements
                if setup is not None:
                    setup()
                    conn.execute("DELETE FROM _pggit_export.touched")  # the setup is no change
        except psycopg.errors.InsufficientPrivilege:
            self.tracking = False
        else:
            self.tracking = True
            # For the changeset pipeline, which sends it by name beside a replay.
            self.prepare_take()
        return self.tracking

    @contextmanager
    def tracker_paused(self) -> Iterator[None]:
        """Replay without recording what is touched: for a rebuild that renders nothing
        (a resumed export replaying up to its head). The tracker's event triggers are
        disabled meanwhile; if the history removed them, tracking is off from then on,
        as the next take would have found."""
        admin = self.admin
        if not self.tracking or admin is None:
            yield
            return
        self._switch_tracker(admin, _DISABLE_EVENT_TRIGGER)
        try:
            yield
        finally:
            try:
                self._switch_tracker(admin, _ENABLE_EVENT_TRIGGER)
            except psycopg.Error:
                self.tracking = False

    @staticmethod
    def _switch_tracker(admin: psycopg.Connection[Any], statement: sql.SQL) -> None:
        with admin.transaction():
            for name in _TRACKER_TRIGGERS:
                admin.execute(statement.format(sql.Identifier(name)), prepare=False)

    def take_touched(self) -> TouchedObjects | None:
        """What was touched since the last call; None when tracking is unavailable."""
        if not self.tracking:
            return None
        try:
            row = (self.admin or self.conn).execute(self._take_sql).fetchone()
        except psycopg.Error:
            self.tracking = False  # the history dropped our schema: render in full from now on
            return None
        assert row is not None
        return self.touched_from(row[0], row[1], row[2])

    def touched_from(self, triggers: int, taken: Any, resolved: Any) -> TouchedObjects | None:
        """A take's row as TouchedObjects (None, and tracking off, if the history disabled
        a trigger)."""
        if triggers != 2:
            self.tracking = False
            return None
        touched = TouchedObjects(resolved=resolved)
        for classid, objid, dropped, object_type, names in taken:
            if dropped:
                touched.dropped.append((classid, objid, object_type, names or []))
            else:
                touched.altered.append((classid, objid))
        return touched

    def prepare_take(self) -> None:
        """Prepare the take as TAKE_STATEMENT on the tool's connection, for the changeset
        pipeline, which sends it by name beside a replay."""
        (self.admin or self.conn).execute(
            sql.SQL("PREPARE {} AS {}").format(sql.Identifier(TAKE_STATEMENT), self._take_sql),
            prepare=False,
        )

    @property
    def server_version(self) -> int:
        return self.conn.info.server_version

    def size_bytes(self) -> int:
        """The scratch database's size on disk (pg_database_size)."""
        row = (self.admin or self.conn).execute(
            "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"
        ).fetchone()
        return int(row[0]) if row else 0

    def plan(
        self,
        changeset: Changeset,
        *,
        max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
        overrides: Mapping[int, str | None] | None = None,
    ) -> ReplayPlan:
        """What replaying `changeset` sends: its statements, classified, and the texts to run.

        A text over `max_sql_bytes` is not even parsed (sqlparse needs seconds per
        megabyte): it is refused whole, and reported. `overrides` replaces statements
        (1-based index -> new text, or None to skip it): repairs.
        """
        text = changeset.sql or ""
        if len(text.encode("utf-8", "surrogatepass")) > max_sql_bytes:
            statements = [Statement(text, Action.TOO_LARGE)]
        else:
            statements = split_statements(text)
        for index, new_text in (overrides or {}).items():
            if 1 <= index <= len(statements):
                statements[index - 1] = (
                    Statement(new_text, Action.REPLAY) if new_text is not None
                    else Statement(statements[index - 1].text, Action.SKIP_REPAIRED)
                )
        to_run = [(i, s) for i, s in enumerate(statements, 1) if s.action is Action.REPLAY]
        texts = [prepare_for_transaction(freeze_clock_literals(s.text, changeset.time))
                 for _, s in to_run]
        return ReplayPlan(changeset, statements, to_run, texts, _session_settings(changeset))

    def script(self, plan: ReplayPlan, *, commit: bool = True) -> bytes:
        """A changeset's statements, and the session reset, as one simple-query message.

        BEGIN, the session settings, the statements, the reset, COMMIT (unless `commit` is
        false: the changeset pipeline holds it back while work runs beside). The server
        parses the whole message before running any of it, so a statement cannot swallow
        the next (a trailing `--` comment is ended by the newline each separator starts
        with, and an unterminated quote or comment is a syntax error of the message). Four
        round trips and more per changeset saved; the reset skips DISCARD PLANS, which
        would make the tracker's triggers re-plan every changeset. If anything fails, the
        whole message is rolled back and replay_statement_by_statement names the statement.
        """
        texts = [*plan.session, *plan.texts]
        script = (
            "BEGIN;\n" + "".join(f"{text}\n;\n" for text in texts) + _RESET_IN_TRANSACTION
            + (";\nCOMMIT" if commit else "")
        )
        return script.encode(self.conn.info.encoding)

    @contextmanager
    def watched(self) -> Iterator[None]:
        """Let the watchdog cancel what runs on the replay connection meanwhile."""
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.started = time.monotonic()
        try:
            yield
        finally:
            if watchdog is not None:
                watchdog.started = None

    def roll_back(self) -> None:
        """Roll back what a failed or abandoned script left open on the replay connection."""
        if self._watchdog is not None:
            self._watchdog.cancelled = False
        try:
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
        except psycopg.Error as exc:
            raise ShadowError(f"the shadow connection is unusable: {exc}") from exc

    def replay_statement_by_statement(self, plan: ReplayPlan) -> ReplayResult:
        """Replay a planned changeset one statement at a time, in one transaction, rolled
        back on failure: slower than its script, but it names the failing statement."""
        replayed, failure = 0, None
        try:
            with self.conn.transaction():
                for setting in plan.session:
                    self.conn.execute(setting)
                for (index, statement), text in zip(plan.to_run, plan.texts):
                    watchdog = self._watchdog
                    try:
                        with self.watched():
                            self.conn.execute(text)
                    except psycopg.Error as exc:
                        failure = ReplayFailure(
                            statement_index=index,
                            statement=statement.text,
                            sqlstate=exc.sqlstate,
                            message=_message(exc, watchdog),
                            detail=exc.diag.message_detail,
                            hint=exc.diag.message_hint,
                        )
                        raise _Rollback() from exc
                    replayed += 1
        except _Rollback:
            pass
        finally:
            # SET search_path, SET ROLE and the like must not leak into the next changeset.
            self._reset_session()
        return plan.outcome(replayed, failure)

    def _reset_session(self) -> None:
        try:
            self.conn.execute("DISCARD ALL")
        except psycopg.Error as exc:
            raise ShadowError(f"the shadow connection is unusable: {exc}") from exc


# What DISCARD ALL does, except DISCARD PLANS (plans are invalidated by the DDL
# they depend on anyway), in the changeset's transaction: SET, SET ROLE and the
# like must not leak into the next changeset. (DISCARD ALL itself cannot run in a
# transaction block.)
_RESET_IN_TRANSACTION = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *;\n"
    "SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
)

# Installed in the shadow so the snapshot can re-render only what a changeset
# touched. Its schema is excluded from snapshots. The functions pin their
# search_path: replayed history may set any.
TRACKER_SCHEMA = "_pggit_export"
_TRACKER_SQL = """
CREATE SCHEMA _pggit_export;
CREATE TABLE _pggit_export.touched (
    classid oid NOT NULL,
    objid oid NOT NULL,
    dropped boolean NOT NULL,
    object_type text,
    address_names text[]
);
GRANT USAGE ON SCHEMA _pggit_export TO PUBLIC;
GRANT INSERT ON _pggit_export.touched TO PUBLIC;
CREATE FUNCTION _pggit_export.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO _pggit_export.touched (classid, objid, dropped)
    SELECT classid, objid, false FROM pg_event_trigger_ddl_commands() WHERE objid <> 0;
END $$;
CREATE FUNCTION _pggit_export.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO _pggit_export.touched (classid, objid, dropped, object_type, address_names)
    SELECT classid, objid, true, object_type, address_names
    FROM pg_event_trigger_dropped_objects();
END $$;
CREATE EVENT TRIGGER _pggit_export_ddl_command_end ON ddl_command_end
    EXECUTE FUNCTION _pggit_export.on_ddl_command_end();
CREATE EVENT TRIGGER _pggit_export_sql_drop ON sql_drop
    EXECUTE FUNCTION _pggit_export.on_sql_drop();
"""

# Read and clear the record; say whether the triggers are still there (history
# could drop or disable them); and run the caller's `{resolve_sql}` over the
# objects altered, in the same statement. The altered objects go through
# arrays: unnest() tells the planner "about 10 rows", the right order of size,
# where the table's statistics (empty, or whatever autovacuum last saw) would
# have it scan pg_depend whole.
_TRACKER_TRIGGERS = ("_pggit_export_ddl_command_end", "_pggit_export_sql_drop")
_DISABLE_EVENT_TRIGGER = sql.SQL("ALTER EVENT TRIGGER {} DISABLE")
_ENABLE_EVENT_TRIGGER = sql.SQL("ALTER EVENT TRIGGER {} ENABLE")
# The take's name as a prepared statement of the tool's connection (pipeline.py).
TAKE_STATEMENT = "_pggit_export_take"
_TAKE_TOUCHED_SQL = """
WITH taken AS (DELETE FROM _pggit_export.touched RETURNING *),
altered AS (
    SELECT * FROM unnest(
        ARRAY(SELECT classid FROM taken WHERE NOT dropped ORDER BY classid, objid),
        ARRAY(SELECT objid FROM taken WHERE NOT dropped ORDER BY classid, objid)
    ) AS a(classid, objid)
)
SELECT (SELECT count(*) FROM pg_catalog.pg_event_trigger
        WHERE evtname IN ('_pggit_export_ddl_command_end', '_pggit_export_sql_drop')
          AND evtenabled <> 'D') AS triggers,
       (SELECT coalesce(json_agg(json_build_array(classid::bigint, objid::bigint, dropped, object_type,
                                                  address_names)), '[]')
        FROM taken) AS touched,
       {resolve_sql} AS resolved
"""


class _Watchdog(threading.Thread):
    """Cancels a replayed statement that runs past the timeout.

    The server's statement_timeout does the same, but replayed history can
    switch that off (`SET statement_timeout = 0`); this cannot be.
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        super().__init__(name="pggit-export-statement-watchdog", daemon=True)
        self.conn = conn
        self.seconds = seconds
        self.started: float | None = None
        self.cancelled = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.25):
            started = self.started
            if started is not None and time.monotonic() - started > self.seconds:
                self.cancelled = True
                self.started = None
                try:
                    self.conn.cancel_safe()
                except (psycopg.Error, AttributeError):
                    self.conn.cancel()

    def stop(self) -> None:
        self._stop_event.set()


class _Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def _message(exc: psycopg.Error, watchdog: _Watchdog | None) -> str:
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    if watchdog is not None and watchdog.cancelled and exc.sqlstate == "57014":
        watchdog.cancelled = False
        return f"{message}: it ran past the statement timeout"
    return message


# The role history replays as in the private shadow.
REPLAY_ROLE = "pggit_replay"

# Settings that change how the catalog renders, pinned so every server renders the same.
_DATABASE_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "lc_messages": "C",
}


def _connect_shadow(conninfo: str) -> psycopg.Connection[Any]:
    conn = connect_shadow(conninfo, autocommit=True)
    # DISCARD ALL after each changeset drops prepared statements: never prepare.
    conn.prepare_threshold = None
    return conn


def _pin_settings(admin: psycopg.Connection[Any], dbname: str, statement_timeout: str) -> None:
    settings = {**_DATABASE_SETTINGS, "statement_timeout": statement_timeout}
    for name, value in settings.items():
        try:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)
                )
            )
        except psycopg.errors.InsufficientPrivilege:
            pass  # lc_messages needs a superuser; English errors are a nicety


@contextmanager
def open_shadow(
    shadow_dsn: str | None = None,
    *,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
    major: int | None = None,
    replay_as_owner: bool = False,
) -> Iterator[Shadow]:
    """Open a scratch database for replay, and remove it afterwards.

    Every statement replayed there is cancelled after `statement_timeout`
    (a PostgreSQL interval such as "10min").

    Without `shadow_dsn`, a private PostgreSQL is started for the duration
    (see server.EmbeddedServer), of major version `major` when the machine has one.
    With it, history replays as a throwaway role, or (`replay_as_owner`) as the DSN's own.
    With it, a database with a unique name is created on that server and dropped at
    the end.
    """
    if shadow_dsn is None:
        with EmbeddedServer(find_binaries(major)) as server:
            with connect_shadow(server.conninfo("postgres"), autocommit=True) as admin:
                # History replays as a plain role owning the scratch database: what
                # could reach the host (COPY PROGRAM, server files, untrusted
                # languages, ALTER SYSTEM) is then refused by PostgreSQL itself.
                admin.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    ).format(sql.Identifier(REPLAY_ROLE))
                )
                admin.execute(
                    sql.SQL(
                        "CREATE DATABASE shadow OWNER {} TEMPLATE template0 ENCODING 'UTF8'"
                    ).format(sql.Identifier(REPLAY_ROLE))
                )
                _pin_settings(admin, "shadow", statement_timeout)
            replay_conninfo = psycopg.conninfo.make_conninfo(
                server.conninfo("shadow"), user=REPLAY_ROLE
            )
            with connect_shadow(server.conninfo("shadow"), autocommit=True) as admin_conn, (
                _connect_shadow(replay_conninfo)
            ) as conn:
                _harden(admin_conn)
                binaries = server.binaries
                shadow = Shadow(
                    conn, f"private PostgreSQL {binaries.version} ({binaries.origin})",
                    admin=admin_conn, private=True,
                    extension_directory=server.extension_directory,
                    parser_conninfo=server.conninfo("shadow"),
                )
                try:
                    yield shadow
                finally:
                    shadow.close()
        return

    name = f"pggit_export_shadow_{uuid.uuid4().hex[:12]}"
    try:
        admin = connect_shadow(shadow_dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ShadowError(f"cannot connect to the shadow server: {exc}".strip()) from exc
    params = psycopg.conninfo.conninfo_to_dict(shadow_dsn)
    params["dbname"] = name
    scratch = psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
    role = None
    with admin:
        try:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name)
                )
            )
        except psycopg.Error as exc:
            raise ShadowError(f"cannot create the scratch database {name}: {exc}") from exc
        try:
            _pin_settings(admin, name, statement_timeout)
            warnings: list[str] = []
            replay_conninfo = scratch
            # History never replays as a superuser, nor as the role the tool works as (it
            # could alter that role or end the tool's own sessions): a throwaway login role
            # owns the scratch database and replays. Only --shadow-replay-as-owner, which
            # the user chooses knowing the risk, lets the given role replay.
            superuser = admin.info.parameter_status("is_superuser") == "on"
            if superuser:
                role, replay_conninfo = _replay_role_on(admin, name, params)
            if role is None and not replay_as_owner:
                why = ("the server refused a login as a throwaway role" if superuser
                       else "its role is no superuser, so no throwaway role can replay")
                raise ShadowError(
                    f"--shadow-dsn: history would replay as the role the tool connects as "
                    f"({why}); hostile history could then reach that server or the tool's own "
                    "sessions. Use the default private shadow, a superuser DSN, or "
                    "--shadow-replay-as-owner to accept the risk"
                )
            if role is None:
                warnings.append(
                    f"the shadow replays as {admin.info.user}, the role the tool connects as "
                    "(--shadow-replay-as-owner): hostile history can act as that role"
                )
            with connect_shadow(scratch, autocommit=True) as admin_conn, _connect_shadow(
                replay_conninfo
            ) as conn:
                _harden(admin_conn)
                version = conn.info.parameter_status("server_version") or "?"
                shadow = Shadow(
                    # No scratch name here: it is random, and reports must be deterministic.
                    conn, f"scratch database on PostgreSQL {version}",
                    admin=admin_conn, parser_conninfo=scratch,
                )
                shadow.warnings += warnings
                try:
                    yield shadow
                finally:
                    shadow.close()
        finally:
            try:
                force = (
                    sql.SQL(" WITH (FORCE)") if admin.info.server_version >= 130000 else sql.SQL("")
                )
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force)
                )
                if role is not None:
                    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            except psycopg.Error:
                pass  # the export's own error, if any, is the one worth reporting


# Functions every role may call that reach beyond the scratch database: signalling
# other sessions (the export's own reader among them). Revoked in the scratch
# database, so a use hidden where no pattern can see it fails, and is reported.
_HARDEN_SQL = """
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.proname IN ('pg_terminate_backend', 'pg_cancel_backend',
                                 'pg_log_backend_memory_contexts')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$
"""


def _harden(admin_conn: psycopg.Connection[Any]) -> None:
    try:
        admin_conn.execute(_HARDEN_SQL)
    except psycopg.errors.InsufficientPrivilege:
        pass  # not ours to change: a non-superuser shadow cannot signal others anyway


def _replay_role_on(
    admin: psycopg.Connection[Any], dbname: str, params: dict[str, Any]
) -> tuple[str | None, str]:
    """Create a login role owning the scratch database; return it and how to connect as it."""
    role = f"pggit_export_replay_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(24)
    admin.execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        ).format(sql.Identifier(role), sql.Literal(password))
    )
    admin.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(role))
    )
    conninfo = psycopg.conninfo.make_conninfo(
        **{**params, "user": role, "password": password}  # type: ignore[arg-type]
    )
    try:
        connect_shadow(conninfo, connect_timeout=10).close()
    except psycopg.OperationalError:
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(dbname))
        )
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        return None, psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
    return role, conninfo
