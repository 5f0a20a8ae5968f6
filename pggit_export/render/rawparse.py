"""The raw parse tree of a statement, from the shadow server's own parser.

Rendering a file in the dialect of an older source major (render/dialect.py) sometimes
needs to know what a name in a deparsed text *is*: PostgreSQL 16 stopped qualifying the
columns of a view that reads one relation (``SELECT id FROM public.tickets t``), where
PostgreSQL 15 wrote ``SELECT t.id FROM public.tickets t``, and only a parser can tell
which words of the text are column references. The shadow's server has PostgreSQL's
parser; this module asks it, without a new dependency and without running anything:

* the statement (``CREATE VIEW ... AS <query>``) is sent as a protocol-level Parse on a
  connection of its own, never executed. Parse analysis of a utility statement is only
  wrapping it, so no catalog is read and no lock taken: the answer is the same whatever
  the replay is doing beside it, and depends on the text alone (commit ids must not
  depend on timing);
* with ``debug_print_parse`` on and ``client_min_messages = log``, the server sends the
  tree as a LOG message, whose detail is ``nodeToString``'s text with the location (a
  byte offset in the statement) of each column reference. ``log_min_messages`` keeps
  it out of the server's own log when the role may set it (a superuser, as on the
  private shadow); where it may not, no parser is used at all (a --shadow-dsn of a
  plain role), rather than fill someone's server log.

The dump is read as the server's own reader (``pg_strtok``) reads it: tokens are
separated by white space and by unescaped ``(){}``; a backslash escapes the next
character. ``format_node_dump`` wraps it into lines of at most 78 characters at a space
(which our reading of white space undoes), and splits a token only when a line has no
space at all: such a dump is refused (None) rather than guessed at.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import psycopg

from pggit_export.shadow.server import connect_shadow

# A node: {"node": "COLUMNREF", "fields": [...], "location": "24"}; a list: a Python
# list; NULL (``<>``): None; any other token: its text, backslash escapes removed.
Node = dict[str, Any]

_SESSION = (
    "SET debug_print_parse = on",
    "SET debug_pretty_print = off",
    "SET client_min_messages = log",
)
_LINE_LENGTH = 78
_PUNCTUATION = frozenset("{}()")  # format_node_dump's LINELEN

_TOKEN = re.compile(r"[(){}]|(?:\\[\s\S]|[^\s(){}\\])+")
_ESCAPE = re.compile(r"\\([\s\S])")


class RawParser:
    """A connection to the shadow's server that only ever parses."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._dumps: list[str] = []
        conn.add_notice_handler(self._notice)
        self._trees: dict[str, Node | None] = {}
        self._lock = threading.Lock()  # one parse at a time: the dumps arrive as notices

    @classmethod
    def connect(cls, conninfo: str) -> RawParser | None:
        """A parser on the server at `conninfo`, or None where the role may not keep the
        trees out of the server's log."""
        conn = connect_shadow(conninfo, autocommit=True)
        try:
            conn.execute("SET log_min_messages = panic")
            for statement in _SESSION:
                conn.execute(statement)
        except psycopg.Error:
            conn.close()
            return None
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def _notice(self, diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.message_primary == "parse tree:" and diagnostic.message_detail:
            self._dumps.append(diagnostic.message_detail)

    def parse(self, statement: str) -> Node | None:
        """The raw parse tree of `statement` (one statement, not run), or None when the
        server cannot parse it or its dump cannot be read back exactly."""
        with self._lock:
            if statement not in self._trees:
                self._dumps.clear()
                result = self.conn.pgconn.prepare(b"", statement.encode())
                ok = result.status == psycopg.pq.ExecStatus.COMMAND_OK and len(self._dumps) == 1
                self._trees[statement] = read_node_dump(self._dumps[0]) if ok else None
            return self._trees[statement]


def read_node_dump(dump: str) -> Node | None:
    """The tree a ``format_node_dump`` text holds, or None when it is not one.

    A line of the full width without a space is ambiguous: either a token was split
    there (no space to break at) or the line ended just before a space. The first
    reading that is a whole tree wins, the split first."""
    lines = dump.splitlines()
    ambiguous = any(len(line) >= _LINE_LENGTH and " " not in line[1:] for line in lines[:-1])
    readings = [_joined(lines, split=True), _joined(lines, split=False)] if ambiguous else [dump]
    for reading in readings:
        tokens = _TOKEN.findall(reading)
        try:
            node, end = _read(tokens, 0)
        except (IndexError, ValueError):
            continue
        if end == len(tokens) and isinstance(node, dict):
            return node
    return None


def _joined(lines: list[str], *, split: bool) -> str:
    """The dump's lines joined back: with a space where format_node_dump broke at one,
    and (`split`) with nothing after a full line without a space."""
    text = ""
    for line in lines:
        text += line
        full = len(line) >= _LINE_LENGTH and " " not in line[1:]
        text += "" if full and split else " "
    return text


def _read(tokens: list[str], at: int) -> tuple[Any, int]:
    token = tokens[at]
    if token == "{":
        node: Node = {"node": tokens[at + 1]}
        at += 2
        # A few nodes write a word of their own before their fields: A_Expr its kind
        # (``{A_EXPR NULLIF :name ...}``).
        while tokens[at] not in _PUNCTUATION and not tokens[at].startswith(":"):
            node.setdefault("words", []).append(tokens[at])
            at += 1
        while tokens[at] != "}":
            field = tokens[at]
            if not field.startswith(":"):
                raise ValueError(f"expected a field name, got {field!r}")
            node[field[1:]], at = _read(tokens, at + 1)  # exactly one value per field
        return node, at + 1
    if token == "(":
        items: list[Any] = []
        at += 1
        while tokens[at] != ")":
            item, at = _read(tokens, at)
            items.append(item)
        return items, at + 1
    if token in ("}", ")"):
        raise ValueError(f"unexpected {token!r}")
    if token == "<>":
        return None, at + 1
    return _ESCAPE.sub(r"\1", token), at + 1


def string_value(token: Any) -> str | None:
    """The text of a String node as the dump writes it (``"id"``), else None."""
    if isinstance(token, str) and len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return None
