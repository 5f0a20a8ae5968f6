"""Statement splitting that returns exactly what ``sqlparse.split()`` returns, faster.

``sqlparse.split()`` runs its whole lexer (some forty regexes tried per token, one
Token object each) and its statement splitter over every history text: about half a
millisecond per changeset. Almost all of that text is plain DDL whose split points are
simply the semicolons outside quotes, comments and parentheses. ``split()`` scans for
those with a handful of C-level searches and falls back to ``sqlparse.split()`` as soon
as the text holds anything whose treatment by sqlparse it does not reproduce with
certainty. Identical output is the contract (tests/test_split.py compares the two over
the fixtures, a generated corpus, hand-written edge cases and random joins), so replay
sees the same statements either way.

What sqlparse does, and therefore what the fast path imitates (sqlparse 0.6.1,
``engine/statement_splitter.py`` and ``keywords.SQL_REGEX``):

- A statement ends at a ``;`` token when its *level* is <= 0. The level starts at 0 for
  each statement; ``(`` adds one, ``)`` takes one away (even below zero), the keyword
  ``END`` takes one away; ``BEGIN``, ``DECLARE``, and inside a BEGIN block also
  ``IF``/``CASE``/``LOOP``/``FOR``/``WHILE``, open blocks in which ``;`` never splits.
  The fast path models parentheses, ``END`` (also ``END IF``/``END LOOP``/..., which
  change nothing outside a block) and a transaction ``BEGIN;``, ``BEGIN TRANSACTION ...``
  or ``BEGIN WORK ...`` (sqlparse opens a block and closes it again at the ``;`` or at
  TRANSACTION/WORK); any other ``BEGIN`` (``BEGIN ATOMIC``, ``BEGIN ISOLATION LEVEL``),
  any ``DECLARE`` and any upper-case ``GO`` (a batch separator to sqlparse) fall back.
- After the splitting ``;`` the statement keeps swallowing whitespace other than line
  breaks and ``--`` comments (each with its line break): a trailing comment on the same
  line belongs to the statement before it. A line break, a ``/* */`` comment or a
  ``--+`` hint starts the next statement.
- Every piece is ``str.strip()``-ed; a last piece made only of whitespace is dropped,
  one made only of comments is kept.

The lexer decides what is quoted: ``'...'`` with ``''`` and (in every string, not just
E'') ``\\'`` escapes, ``"..."``, ``$tag$...$tag$`` (closed by the first identical tag,
not nested), ``/* */`` (not nested) and ``--`` up to the line break. The fast path uses
sqlparse's own patterns for these, so even odd inputs (a backslash before a quote in a
standard string) come out the same. It falls back on what it does not model: ``#``
(a comment start to sqlparse), backslashes outside quotes (psql meta commands), back
ticks, ``%s``/``%(name)s`` placeholders, ``[...]`` names, ``AT TIME ZONE`` literals it
cannot vouch for, nested or unterminated comments and quotes, a comment opener glued to
an operator (sqlparse reads ``+--`` as one operator), and a ``BEGIN``/``END``/
``DECLARE`` word whose surroundings leave any doubt about where sqlparse's token starts.
"""

from __future__ import annotations

import re

import sqlparse
from sqlparse import keywords
from sqlparse import tokens as T
from sqlparse.lexer import Lexer

# The lexer compiles its patterns with these flags; ours must match the same way.
_FLAGS = re.IGNORECASE | re.UNICODE

# The next thing in code (outside quotes and comments) the scanner must look at. Anything
# between two hits is tokens that can neither end a statement nor change its level.
_NEXT = re.compile(
    r"[;()'\"$\[\\#`´]"  # split/level punctuation, quote openers, and refusals
    r"|--|/\*"  # comment openers
    r"|%[sS(]"  # `%s`, `%(name)s` placeholders (a lone `%` is the modulo operator)
    # Words that change sqlparse's split level. Not preceded by a letter or underscore:
    # there sqlparse's token cannot start (a digit may end a number token: `1e5end`).
    r"|(?i:(?<![^\W\d])(?:begin|end|declare)(?!\w))"
    # Upper-case GO ends a statement for sqlparse (T-SQL batches). Without a left bound,
    # since a hex number token (`0xAGO`) can end right before it.
    r"|GO(?!\w)"
)

# sqlparse's own literal patterns (keywords.SQL_REGEX), for the rare inputs where the
# quick forms below do not apply; matched from the opening quote they give sqlparse's
# token exactly, backtracking included.
_SQ_SQLPARSE = re.compile(r"'(''|\\'|[^'])*'", _FLAGS)
_DQ_SQLPARSE = re.compile(r'"(""|\\"|[^"])*"', _FLAGS)
_DQ_SQLPARSE_2 = re.compile(r'(""|".*?[^\\]")', _FLAGS)
# The same literals without backslashes: then sqlparse's pattern has a single way to
# match (doubled quotes, other characters, a closing quote not followed by another), and
# these find it much faster. A backslash or an unterminated literal stops them; the
# sqlparse pattern decides then.
_SQ_PLAIN = re.compile(r"'[^'\\]*(?:''[^'\\]*)*'(?!')")
_DQ_PLAIN = re.compile(r'"[^"\\]*(?:""[^"\\]*)*"(?!")')

# A dollar-quote opener (keywords._DOLLAR_QUOTE_DELIM) and where one may open: not after
# a word character, a double quote or another dollar (keywords._DOLLAR_QUOTE_OPENER_OK).
_DOLLAR_TAG = re.compile(r"\$(?:[_A-ZÀ-Ü]\w*)?\$", _FLAGS)
_DOLLAR_OPENER_OK = re.compile(r'(?<![\w"$])', _FLAGS)
# `$1`, `$name`: a placeholder token to sqlparse, nothing more.
_PLACEHOLDER = re.compile(r"\$\w+", _FLAGS)

# A `--` comment: sqlparse's `(--|# ).*?(\r\n|\r|\n|$)` (`.` stops only at `\n`, but the
# lazy match ends at the first `\r` already).
_LINE_COMMENT = re.compile(r"--[^\r\n]*(?:\r\n|\r|\n)?")
# What a statement swallows after its `;`: whitespace tokens (`\s` other than a line break,
# which is a Newline token) and `--` comments, not `--+` hints (another token type).
_AFTER_SEMICOLON = re.compile(r"(?:[^\S\r\n]|--(?!\+)[^\r\n]*(?:\r\n|\r|\n)?)*")
# sqlparse's operator token `[+/@#%^&|^-]+` swallows a `--` or `/*` glued to it.
_GLUING_OPERATOR = frozenset("+-/@#%^&|")

# `[a]` is a name token to sqlparse (SQLite style) unless it follows a word, `]` or `)`;
# it can swallow quotes and semicolons.
_BRACKET_NAME = re.compile(r"(?<![\w\])])(\[[^\]\[]+\])", _FLAGS)

# `AT TIME ZONE '...'` (or `WITH' TIME ZONE '...'`) is one token to sqlparse whose
# literal ends at the first quote. Safe when that literal has no backslash and is not
# followed by another quote: then it ends where the string would.
_TZ_CAST = re.compile(r"(AT|WITH')\s+TIME\s+ZONE\s+'", _FLAGS)
_TZ_LITERAL_SAFE = re.compile(r"'[^'\\]+'(?!')")

# Characters after which a token surely starts, so a BEGIN/END/DECLARE word right after
# one is a token of its own: whitespace (none of sqlparse's multi-word keywords ends in
# one of those words), punctuation, the end of a literal or comment, and operators that
# never take letters. Anything else (`.end` is a name, `:end` a placeholder, ...) falls back.
_TOKEN_BOUNDARY = frozenset("(),;'\"/=<>")

# What makes a BEGIN a transaction start rather than a block to sqlparse: right after it,
# only whitespace and `;` (the `;` closes the block BEGIN opened), or whitespace and the
# keyword TRANSACTION or WORK (which closes it at once, whatever follows:
# `BEGIN TRANSACTION ISOLATION LEVEL ...`). A name token does not close it.
_BEGIN_TAIL = re.compile(r"\s*;|\s+(?=\w)", _FLAGS)
_BEGIN_CLOSERS = frozenset({"TRANSACTION", "WORK"})
_END_BLOCK = re.compile(r"END\s+(?:IF|LOOP|WHILE|FOR|CASE)")


# Whitespace and comments before a statement's first word: a split statement keeps the
# comments before it (a migration file's licence header, say).
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)+", re.S)


def without_leading_comments(statement: str) -> str:
    """`statement` from its first word on: whitespace and comments before it removed."""
    return _LEADING_COMMENTS.sub("", statement, count=1)


def split(text: str) -> list[str]:
    """The statements of `text`, exactly as ``sqlparse.split(text)`` returns them."""
    try:
        pieces = fast_split(text)
    except (AttributeError, TypeError, ValueError):
        # The scanner reads a private pattern list of sqlparse's lexer; a version of
        # sqlparse without it costs speed, never the split (pyproject pins 0.6.x).
        pieces = None
    if pieces is None:
        return sqlparse.split(text)
    return pieces


def fast_split(text: str) -> list[str] | None:
    """``sqlparse.split(text)`` for the texts the scanner handles, None for the others."""
    for tz in _TZ_CAST.finditer(text):
        if tz.group(1).upper() != "AT" or not _TZ_LITERAL_SAFE.match(text, tz.end() - 1):
            return None

    pieces: list[str] = []
    start = 0  # where the current statement starts
    level = 0  # sqlparse's split level within the current statement
    pos = 0
    search = _NEXT.search
    while True:
        m = search(text, pos)
        if m is None:
            break
        p = m.start()
        c = text[p]
        if c == ";":
            if level > 0:
                pos = p + 1
                continue
            end = _AFTER_SEMICOLON.match(text, p + 1).end()  # type: ignore[union-attr]
            pieces.append(text[start:end].strip())
            start = pos = end
            level = 0
        elif c == "(":
            level += 1
            pos = p + 1
        elif c == ")":
            level -= 1
            pos = p + 1
        elif c == "'":
            lit = _SQ_PLAIN.match(text, p) or _SQ_SQLPARSE.match(text, p)
            if lit is None:
                return None  # unterminated: sqlparse goes on with an error token
            pos = lit.end()
        elif c == '"':
            lit = (_DQ_PLAIN.match(text, p) or _DQ_SQLPARSE.match(text, p)
                   or _DQ_SQLPARSE_2.match(text, p))
            if lit is None:
                return None
            pos = lit.end()
        elif c == "$":
            if _DOLLAR_OPENER_OK.match(text, p) is None:
                return None  # `x$`, `"$`, `$$$`: words and error tokens we do not model
            tag = _DOLLAR_TAG.match(text, p)
            if tag is not None:
                close = text.find(tag.group(), tag.end())
                if close < 0:
                    return None
                pos = close + len(tag.group())
            else:
                param = _PLACEHOLDER.match(text, p)
                if param is None:
                    return None
                pos = param.end()
        elif c == "-":  # `--`
            if p and text[p - 1] in _GLUING_OPERATOR:
                return None
            pos = _LINE_COMMENT.match(text, p).end()  # type: ignore[union-attr]
        elif c == "/" and m.group() == "/*":
            if p and text[p - 1] in _GLUING_OPERATOR:
                return None
            close = text.find("*/", p + 2)
            # Unterminated, or nested: PostgreSQL nests comments, sqlparse does not.
            if close < 0 or text.find("/*", p + 2, close) >= 0:
                return None
            pos = close + 2
        elif c == "[":
            if _BRACKET_NAME.match(text, p):
                return None
            pos = p + 1
        elif c in "\\#`´%":
            # A psql meta command, a `# ` comment (or `#` operator), quoted names of other
            # dialects, or a `%s`-style placeholder, whose token may end inside a word.
            return None
        else:
            step = _level_word(text, p, m.group())
            if step is None:
                return None
            level += step[0]
            pos = step[1]

    rest = text[start:]
    if rest.strip():  # a last statement without `;` (dropped if only whitespace)
        pieces.append(rest.strip())
    return pieces


def _level_word(text: str, p: int, word: str) -> tuple[int, int] | None:
    """(level change, position after the token) for BEGIN/END/DECLARE/GO at `p`, or None."""
    if word == "GO":
        return None
    if p and not (text[p - 1] in _TOKEN_BOUNDARY or text[p - 1].isspace()):
        return None
    ttype, value = _sqlparse_token_at(text, p)
    after = p + len(value)
    if ttype not in T.Keyword:  # `end(`, `begin.x`: a name, no effect
        return 0, after
    unified = value.upper()
    if unified == "END":  # takes one level away, open block or not
        return -1, after
    if _END_BLOCK.fullmatch(unified):  # END IF, END LOOP, ...: no effect without a block
        return 0, after
    if unified == "BEGIN" and ttype is T.Keyword:
        tail = _BEGIN_TAIL.match(text, after)
        if tail is None:
            return None
        if text[tail.end() - 1] == ";":
            # Opens a block and closes it again at the `;`: no change.
            return 0, after
        ttype, value = _sqlparse_token_at(text, tail.end())
        if ttype is T.Keyword and value.upper() in _BEGIN_CLOSERS:
            # Opens a block that the keyword closes again: no change.
            return 0, tail.end() + len(value)
    return None  # BEGIN of a block, DECLARE


def _sqlparse_token_at(text: str, pos: int) -> tuple[T._TokenType, str]:
    """The token sqlparse's lexer makes at `pos` (which must be a token start).

    The lexer's own pattern list, tried in its order, so the answer is its answer,
    including any keywords a caller added to the default lexer.
    """
    lexer = Lexer.get_default_instance()
    for rexmatch, action in lexer._SQL_REGEX:
        m = rexmatch(text, pos)
        if m is None:
            continue
        if action is keywords.PROCESS_AS_KEYWORD:
            ttype, value = lexer.is_keyword(m.group())
            return ttype, value
        return action, m.group()
    return T.Error, text[pos]
