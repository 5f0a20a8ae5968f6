"""SQL names and literals written and read by the tool: the one place that quotes.

SQL that runs with values the tool does not control binds them as parameters, or quotes
names with ``psycopg.sql.Identifier``; the helpers here are for text the tool writes into
files or statements it keeps (repairs, restored snapshots) and for names it reads back out
of recorded SQL. The case rule is PostgreSQL's: an unquoted name folds to lower case, a
quoted one is taken as written.
"""

from __future__ import annotations

import re
from collections.abc import Collection

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")

# A name as written in SQL, for patterns that read names out of recorded statements: quoted
# (doubled quotes inside), or unquoted (a letter, including non-ASCII ones, or underscore,
# then letters, digits, `_` and `$`).
IDENTIFIER_PATTERN = r'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)'


def quote_identifier(name: str) -> str:
    """``name`` as a quoted identifier, always quoted: ``Users`` -> ``"Users"``."""
    return '"' + name.replace('"', '""') + '"'


def quote_identifier_if_needed(name: str, keywords: Collection[str] = ()) -> str:
    """``name`` unquoted when PostgreSQL would read it back unchanged, quoted otherwise;
    with `keywords` (a server's words that quote_ident quotes), quoted as that server's
    quote_ident writes it."""
    return name if _PLAIN_NAME.fullmatch(name) and name not in keywords else quote_identifier(name)


def qualified_name(schema: str, name: str) -> str:
    """``"schema"."name"``, both parts quoted."""
    return f"{quote_identifier(schema)}.{quote_identifier(name)}"


def quote_literal(text: str) -> str:
    """``text`` as a standard SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def catalog_name(identifier: str) -> str:
    """The name an identifier as written in SQL denotes in the catalog: a quoted one as
    written (``"Users"`` -> ``Users``), an unquoted one folded to lower case."""
    if identifier.startswith('"'):
        return strip_identifier_quotes(identifier)
    return identifier.lower()


def strip_identifier_quotes(identifier: str) -> str:
    """The name inside a quoted identifier; any other text unchanged (no case folding:
    for names that are already catalog spellings, such as v1's recorded type names)."""
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('""', '"')
    return identifier
