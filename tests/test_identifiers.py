"""Names the tool writes into SQL mean, to PostgreSQL, exactly the names it meant."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from pggit_export.identifiers import (
    catalog_name,
    qualified_name,
    quote_identifier,
    quote_identifier_if_needed,
    quote_literal,
    strip_identifier_quotes,
)

AWKWARD = ["users", "Users", 'say "hi"', "with space", "order", "ünïcode", "a.b"]


def test_written_names_reach_the_catalog_unchanged(make_database: Callable[[], str]) -> None:
    with psycopg.connect(make_database(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {quote_identifier('My Schema')}")
        for name in AWKWARD:
            conn.execute(f"CREATE TABLE {qualified_name('My Schema', name)} (note text "
                         f"DEFAULT {quote_literal(name + chr(39))})")
        rows = conn.execute(
            "SELECT c.relname, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attrdef d ON d.adrelid = c.oid "
            "WHERE n.nspname = 'My Schema'"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(AWKWARD)
    assert all(expr == f"{quote_literal(name + chr(39))}::text" for name, expr in rows)


@pytest.mark.parametrize("name", AWKWARD)
def test_quoted_names_read_back_as_written(name: str) -> None:
    assert catalog_name(quote_identifier(name)) == name
    assert strip_identifier_quotes(quote_identifier(name)) == name


def test_unquoted_names_fold_to_lower_case_like_postgresql() -> None:
    assert catalog_name("Users") == "users"
    assert strip_identifier_quotes("Users") == "Users"  # already a catalog spelling
    assert quote_identifier_if_needed("users") == "users"
    assert quote_identifier_if_needed("Users") == '"Users"'
