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

PostgreSQL 16 stopped qualifying the columns of a view reading one relation (``SELECT id
FROM public.tickets t``; 15 wrote ``SELECT t.id``). Which words are column references only a
parser knows: ``Dialect.view_query_in_source_dialect`` asks the shadow server's own
(render/rawparse.py) and qualifies them as 15 does.

What it does not do: a name that the source's major quotes and the rendering server does
not (a shadow older than the source, already warned about: newer syntax may not even
replay) stays bare; and other deparsed expressions are the rendering server's, which
another major may print differently (none did on what was measured; the report says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import IDENTIFIER_PATTERN, catalog_name, quote_identifier_if_needed
from pggit_export.render.rawparse import Node, RawParser, string_value

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


# The statement a view's query is parsed in (never run): a utility statement, whose parse
# analysis reads no catalog (render/rawparse.py).
_PARSED_VIEW = "CREATE VIEW pggit_export_parsed AS "
_IDENTIFIER_AT = re.compile(IDENTIFIER_PATTERN)
# A relation in FROM as pg_get_viewdef writes it: its (qualified) name, then its alias.
_RELATION_AT = re.compile(rf"{IDENTIFIER_PATTERN}(?:\.{IDENTIFIER_PATTERN})*")
_ALIASED_RELATION_AT = re.compile(_RELATION_AT.pattern + rf"\s+(?P<alias>{IDENTIFIER_PATTERN})")
# FROM items that are one relation of the range table (a join is several).
_ONE_RELATION_ITEMS = ("RANGEVAR", "RANGESUBSELECT", "RANGEFUNCTION", "RANGETABLEFUNC", "JSONTABLE")
# PostgreSQL 15's names for a view's OLD and NEW range table entries.
_PSEUDO_RELATIONS = ("old", "new")
_NUMBERED_PSEUDO = re.compile(r"(?:old|new)_[0-9]+")


@dataclass(frozen=True)
class _SingleRelation:
    """What PostgreSQL 15 qualifies in a view reading one relation."""

    refname: str  # the relation's alias, else its name
    columns: list[tuple[int, str]]  # (location, name) of each unqualified column


def _view_query(tree: Node) -> Node | None:
    """The SELECT of the raw tree of ``CREATE VIEW ... AS <query>``."""
    view = tree.get("utilityStmt")
    if not isinstance(view, dict) or view.get("node") != "VIEWSTMT":
        return None
    select = view.get("query")
    return select if isinstance(select, dict) and select.get("node") == "SELECTSTMT" else None


def _single_relation(select: Node) -> _SingleRelation | None:
    """For a view's ``SELECT ... FROM <one item>``: the name PostgreSQL 15 qualifies that
    item's columns with and the unqualified column references of the query's own level.
    None when the query is no simple SELECT of exactly one FROM item: a set operation, a
    join or several items are qualified by every major, and a query without a FROM has
    no column to qualify."""
    items = select.get("fromClause")
    if select.get("op") != "0" or not isinstance(items, list) or len(items) != 1:
        return None
    item: Any = items[0]
    if isinstance(item, dict) and item.get("node") == "RANGETABLESAMPLE":
        item = item.get("relation")  # the relation sampled is the item
    if not isinstance(item, dict) or item.get("node") not in _ONE_RELATION_ITEMS:
        return None  # a join: its columns are qualified, or merged ones unqualified, by all
    refname = _refname(item)
    if refname is None:
        return None
    columns: list[tuple[int, str]] = []
    for name, value in select.items():
        if name != "fromClause":  # a function in FROM can only refer to outer levels
            _column_references(value, columns)
    return _SingleRelation(refname, columns)


def _refname(item: Node) -> str | None:
    """The name a FROM item's columns are qualified with: its alias, else a relation's
    own name."""
    alias = item.get("alias")
    if isinstance(alias, dict) and isinstance(alias.get("aliasname"), str):
        return str(alias["aliasname"])
    relname = item.get("relname") if item.get("node") == "RANGEVAR" else None
    return relname if isinstance(relname, str) else None


def _pseudo_relation_renames(select: Node, text: str,
                             position: Callable[[Any], int]) -> list[tuple[int, int, str]] | None:
    """The edits that give each relation named ``old`` or ``new`` (at any level of the
    query) PostgreSQL 15's name for it, ``old_1``, in FROM and in every column reference
    qualified with it. None when they cannot be made exactly: such a name on an item
    that is no relation (its alias has no location), a name PostgreSQL 15 would number
    otherwise (``old_1`` used already), or text that does not match the tree."""
    nodes = list(_nodes(select))
    names = {_refname(node) for node in nodes if "alias" in node}
    if any(name is not None and _NUMBERED_PSEUDO.fullmatch(name) for name in names):
        return None
    edits: list[tuple[int, int, str]] = []
    for node in nodes:
        if node.get("node") == "COLUMNREF":
            fields = node.get("fields")
            first = string_value(fields[0]) if isinstance(fields, list) and len(fields) > 1 else None
            if first in _PSEUDO_RELATIONS:
                written = _match_at(_IDENTIFIER_AT, text, position(node["location"]))
                if written is None or catalog_name(written.group(0)) != first:
                    return None
                edits.append((written.start(), written.end(), f"{first}_1"))
            continue
        if "alias" not in node or _refname(node) not in _PSEUDO_RELATIONS:
            continue
        if node.get("node") != "RANGEVAR":
            return None
        refname = _refname(node)
        at = position(node["location"])
        if node.get("alias") is not None:
            written = _match_at(_ALIASED_RELATION_AT, text, at)
            if written is None or catalog_name(written.group("alias")) != refname:
                return None
            edits.append((written.start("alias"), written.end("alias"), f"{refname}_1"))
        else:
            written = _match_at(_RELATION_AT, text, at)
            if written is None:
                return None
            edits.append((written.end(), written.end(), f" {refname}_1"))
    return edits


def _nodes(value: Any) -> Iterator[Node]:
    """Every node in `value`, depth first."""
    if isinstance(value, list):
        for item in value:
            yield from _nodes(item)
    elif isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _nodes(item)


def _match_at(pattern: re.Pattern[str], text: str, at: int) -> re.Match[str] | None:
    return pattern.match(text, at) if 0 <= at <= len(text) else None


def _character_offsets(text: str) -> Callable[[Any], int]:
    """Where a location of the server's tree (a byte offset in `text`, as a dump token) is
    in `text`: its character offset, or -1 when it is not a character's start."""
    encoded = text.encode()

    def position(location: Any) -> int:
        at = int(location)
        try:
            return len(encoded[:at].decode()) if 0 <= at <= len(encoded) else -1
        except UnicodeDecodeError:
            return -1

    return position


def _column_references(value: Any, found: list[tuple[int, str]]) -> None:
    """The one-name column references in `value`, not descending into a nested SELECT
    (a sub-query, a CTE), whose columns every major qualifies."""
    if isinstance(value, list):
        for item in value:
            _column_references(item, found)
    elif isinstance(value, dict):
        if value.get("node") == "SELECTSTMT":
            return
        if value.get("node") == "COLUMNREF":
            fields = value.get("fields")
            name = string_value(fields[0]) if isinstance(fields, list) and len(fields) == 1 else None
            if name is not None:
                found.append((int(value["location"]), name))
            return
        for item in value.values():
            _column_references(item, found)


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
    # The source's keywords that its quote_ident quotes (all but the unreserved ones).
    source_quoted: frozenset[str] = frozenset()
    # The shadow server's parser (render/rawparse.py), for what only a parser can tell;
    # None: not available, and files keep the rendering server's view columns.
    parser: RawParser | None = field(default=None, compare=False, repr=False)

    @classmethod
    def between(cls, source_major: int, source_keywords: Mapping[str, str],
                rendering_major: int, rendering_keywords: Mapping[str, str]) -> Dialect:
        unquoted = frozenset(
            word for word, category in rendering_keywords.items()
            if category != _UNRESERVED and source_keywords.get(word, _UNRESERVED) == _UNRESERVED
        )
        return cls(source_major, rendering_major, unquoted,
                   frozenset(word for word in unquoted if word not in source_keywords),
                   frozenset(word for word, category in source_keywords.items()
                             if category != _UNRESERVED))

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

    @property
    def rewrites(self) -> list[str]:
        """What the files are rewritten in, for the report."""
        rewrites = ["names"]
        if self.source_major < 18 <= self.rendering_major:
            rewrites.append("NOT NULL constraints")
        if self.qualifies_view_columns and self.parser is not None:
            rewrites.append("view columns")
        return rewrites

    @property
    def qualifies_view_columns(self) -> bool:
        """Whether the source's major qualifies the columns of a view reading one relation
        and the rendering server's does not (PostgreSQL 16 stopped)."""
        return self.source_major < 16 <= self.rendering_major

    def view_query_in_source_dialect(self, query: str) -> str:
        """A view's query as pg_get_viewdef of the rendering server prints it, with the
        columns qualified as the source's major qualifies them: ``SELECT id FROM
        public.tickets t`` -> ``SELECT t.id FROM public.tickets t``. Unchanged when there
        is no parser or nothing to qualify (the query reads several relations, or none).

        PostgreSQL 15 kept a view's OLD and NEW pseudo-relations in its range table, and
        named the others so as not to collide with them: a relation (or alias) ``old``
        is ``old_1`` there, given as an alias in the FROM clause too."""
        if self.parser is None or not self.qualifies_view_columns:
            return query
        statement = _PARSED_VIEW + query
        tree = self.parser.parse(statement)
        select = _view_query(tree) if tree is not None else None
        if select is None:
            return query
        # The edits are made on the statement; the query is what follows its prefix.
        position = _character_offsets(statement)
        edits = _pseudo_relation_renames(select, statement, position)
        if edits is None:
            return query  # the tree and the text disagree, or names PostgreSQL 15 numbers
        single = _single_relation(select)
        if single is not None:
            refname = single.refname
            refname += "_1" if refname in _PSEUDO_RELATIONS else ""
            prefix = quote_identifier_if_needed(refname, self.source_quoted) + "."
            for location, name in single.columns:
                written = _match_at(_IDENTIFIER_AT, statement, position(location))
                if written is None or catalog_name(written.group(0)) != name:
                    return query
                edits.append((written.start(), written.start(), prefix))
        pieces, start = [], len(_PARSED_VIEW)
        for begin, end, new in sorted(edits):
            pieces += [statement[start:begin], new]
            start = end
        pieces.append(statement[start:])
        return "".join(pieces)

    def in_source_dialect(self, text: str) -> str:
        """`text` (rendered SQL) with each ``"word"`` of `unquoted` written ``word``."""
        if not self.unquoted or not any(f'"{word}"' in text for word in self.unquoted):
            return text
        return _TOKEN.sub(self._token, text)

    def _token(self, match: re.Match[str]) -> str:
        name = match.group("quoted")
        return name if name in self.unquoted else match.group(0)
