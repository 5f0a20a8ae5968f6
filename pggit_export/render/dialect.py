"""The source's dialect when the shadow runs another PostgreSQL major version.

A file must read as a server of the source's major prints it (issue 13): restore into
that server and `drift` against the source then see no difference. When the shadow is a
server of the source's major (the default choice when the machine has one) there is
nothing to do. When it is not (a machine with only the embedded server), the largest
difference between majors is which words are keywords: PostgreSQL quotes an identifier
that is a keyword of its own major (anything but an unreserved one). PostgreSQL 16 made
``json`` a keyword, so a PostgreSQL 18 shadow writes a PostgreSQL 15 table's column
``json`` as ``"json"``, in the tool's own queries (``quote_ident``) and in every text the
server deparses (views, indexes, constraints, defaults), which cannot be asked for
another major's quoting.

``Dialect.in_source_dialect`` therefore rewrites a rendered file token by token: a
quoted identifier whose name needs quotes only because the rendering server made it a
keyword is written bare, as the source's server writes it. It reads the file with
PostgreSQL's lexical rules (string constants, ``E''`` strings, dollar-quoted bodies and
comments are left as they are), so a function body or a comment text is never touched.
The words come from both servers' own ``pg_get_keywords()``, never from a list kept here.

The replay meets the same words from the other side: a statement the source ran may write
such a word bare as a name (a PostgreSQL 15 column ``system_user``, a keyword reserved from
16 on), which the newer shadow cannot parse. ``Dialect.names_quoted`` writes it as the
quoted name it was, which means the same thing to the source's major (where the word is no
keyword at all) and can be parsed by the shadow's; the healer does it for a statement that
failed with a syntax error at that word, and says so.

PostgreSQL 18 also names NOT NULL constraints, and keeps a name when the table or column is
renamed (``tags_name_not_null`` on a table renamed ``labels``); a source of an older major
has no such names, so its files never write one (``Dialect.names_not_null``, read by
``render_objects``).

What it does not do: a name that the source's major quotes and the rendering server does
not (a shadow older than the source, already warned about: newer syntax may not even
replay) stays bare; and the deparse of expressions and views is the rendering server's,
which another major may print differently (the export's report says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

KEYWORDS_SQL = "SELECT word, catcode::text FROM pg_catalog.pg_get_keywords()"

# pg_get_keywords' catcode of the keywords quote_ident leaves bare.
_UNRESERVED = "U"

# One lexical token of rendered SQL that the rewrite must see whole: a quoted identifier
# (group `quoted`; not a U&"..." one, whose escapes a bare name could not carry), a
# string constant (E'' with backslash escapes, or standard), a dollar-quoted string, a
# comment, or a word (which may hold `$` and end in `e`, so `E'` is only an opener at a
# word's start). Anything else is copied as it is between tokens.
_TOKEN = re.compile(
    r"""(?P<unicode>[Uu]&"(?:[^"]|"")*")"""
    r"""|"(?P<quoted>(?:[^"]|"")*)\""""
    r"""|[Ee]'(?:[^'\\]|\\.|'')*'"""
    r"""|'(?:[^']|'')*'"""
    r"""|(?P<dollar>\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$).*?(?P=dollar)"""
    r"""|--[^\n]*"""
    r"""|/\*.*?\*/"""
    r"""|(?P<word>[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)""",
    re.S,
)


def read_keywords(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The server's keywords and their category (U, C, T, R), as pg_get_keywords lists them."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return {word: category for word, category in cur.execute(KEYWORDS_SQL).fetchall()}


@dataclass(frozen=True)
class Dialect:
    """How files rendered by a server of `rendering_major` become `source_major`'s."""

    source_major: int
    rendering_major: int
    # Words the rendering server quotes as identifiers and the source's server leaves
    # bare: keywords (other than unreserved) of the rendering major that the source's
    # major does not reserve.
    unquoted: frozenset[str] = frozenset()
    # Of those, the ones that are no keyword at all of the source's major: written bare in
    # a statement the source ran, such a word can only be a name.
    new_keywords: frozenset[str] = frozenset()

    @classmethod
    def between(cls, source_major: int, source_keywords: Mapping[str, str],
                rendering_major: int, rendering_keywords: Mapping[str, str]) -> Dialect:
        unquoted = frozenset(
            word for word, category in rendering_keywords.items()
            if category != _UNRESERVED and source_keywords.get(word, _UNRESERVED) == _UNRESERVED
        )
        return cls(source_major, rendering_major, unquoted,
                   frozenset(word for word in unquoted if word not in source_keywords))

    @property
    def names_not_null(self) -> bool:
        """Whether the source's major names NOT NULL constraints (PostgreSQL 18 on)."""
        return self.source_major >= 18

    def names_quoted(self, statement: str, word: str) -> str | None:
        """A statement the source ran, with each bare `word` (any case) written as the
        quoted name it was there (``system_user`` -> ``"system_user"``): for a shadow of a
        newer major that reserves the word and cannot parse the statement. None when the
        word is a keyword of the source's major too (it may be syntax there) or the
        statement never writes it bare. Strings, bodies and comments are not touched."""
        name = word.lower()
        if name not in self.new_keywords:
            return None

        def token(match: re.Match[str]) -> str:
            bare = match.group("word")
            return f'"{name}"' if bare is not None and bare.lower() == name else match.group(0)

        quoted = _TOKEN.sub(token, statement)
        return quoted if quoted != statement else None

    def in_source_dialect(self, text: str) -> str:
        """`text` (rendered SQL) with each ``"word"`` of `unquoted` written ``word``."""
        if not self.unquoted or not any(f'"{word}"' in text for word in self.unquoted):
            return text
        return _TOKEN.sub(self._token, text)

    def _token(self, match: re.Match[str]) -> str:
        name = match.group("quoted")
        return name if name in self.unquoted else match.group(0)
