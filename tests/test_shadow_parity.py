"""The replay runs what the source ran, in the environment it ran in.

The shadow is not the source's server: its replay role has no superuser rights, and its
sessions do not have the settings the source's roles had. What ran in the source must still
replay to the same schema, through the command line, checked with git.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from history import Change, at, cli, git, make_source
from psycopg import sql


@pytest.fixture
def role_with_search_path(pg_admin_dsn: str) -> Iterator[str]:
    """A role whose search_path is set on the role, as migration roles often are."""
    role = f"auth_svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("ALTER ROLE {} SET search_path = auth").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


AUTH_HISTORY = [
    ("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);",
     [("CREATE", "TABLE", "auth", "users"), ("CREATE", "INDEX", "auth", "users_pkey")]),
    ("CREATE INDEX users_email_idx ON users (email);", [("CREATE", "INDEX", "auth", "users_email_idx")]),
    ("DROP INDEX IF EXISTS users_email_idx;", [("DROP", "INDEX", "auth", "users_email_idx")]),
]


def test_unqualified_names_go_where_the_roles_search_path_put_them(
    make_database: Callable[[], str], role_with_search_path: str, tmp_path: Path
) -> None:
    role = role_with_search_path
    source = make_source(make_database(), [
        Change(text, at(day), user=role, objects=objects)
        for day, (text, objects) in enumerate(AUTH_HISTORY, 1)
    ], live_sql="CREATE SCHEMA auth; CREATE TABLE auth.users (id int PRIMARY KEY, email text NOT NULL);")
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"role {role} search_path = auth" in result.stdout
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert "auth/users.sql" in files and "public/users.sql" not in files
    assert "users_email_idx" in git(repo, "show", "main~1:auth/users.sql")
    assert "users_email_idx" not in git(repo, "show", "main:auth/users.sql")  # really dropped
    root = git(repo, "rev-list", "--max-parents=0", "main").strip()
    first = git(repo, "show", "-s", "--format=%B", root)
    assert "Pggit-Repaired: created schema auth before the change" in first
    assert "pg_db_role_setting" in first
    checked = cli("check", source)
    assert (f"changesets replay under the source's role {role} search_path = auth "
            "(pg_db_role_setting)") in checked.stdout


def test_runtime_only_privileges_replay_as_their_schema_equivalent(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    bulk_update = (
        "ALTER TABLE orders DISABLE TRIGGER ALL;\n"
        "UPDATE orders SET customer_id = customer_id;\n"
        "ALTER TABLE orders ENABLE TRIGGER ALL;\n"
        "ALTER TABLE orders ADD COLUMN note text;"
    )
    replica = (
        "SET session_replication_role = replica;\n"
        "ALTER TABLE orders ADD COLUMN shipped boolean;\n"
        "SET session_replication_role = DEFAULT;"
    )
    source = make_source(make_database(), [
        Change("CREATE TABLE customers (id int PRIMARY KEY);\n"
               "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers);",
               at(1), objects=[("CREATE", "TABLE", "public", "customers"),
                               ("CREATE", "TABLE", "public", "orders")]),
        Change(bulk_update, at(2), objects=[("ALTER", "TABLE", "public", "orders")]),
        Change(replica, at(3), objects=[("ALTER", "TABLE", "public", "orders")]),
    ])
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    orders = git(repo, "show", "main:public/orders.sql")
    assert "note text" in orders and "shipped boolean" in orders
    assert "DISABLE TRIGGER" not in orders  # enabled again, as in the source


def test_tables_and_views_made_from_a_query_replay_without_computing_its_rows(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    # Each query fails if it is run (1/0 for every row): replayed WITH NO DATA, none is, as a
    # 3-million-row generate_series in a real history is not, and the schema is the same.
    text = (
        "CREATE TABLE numbers AS SELECT g AS n, 1/0 AS boom FROM generate_series(1, 3) g;\n"
        "CREATE MATERIALIZED VIEW big AS SELECT 1/0 AS boom WITH DATA;\n"
        "SELECT g AS n, 1/0 AS boom INTO UNLOGGED selected FROM generate_series(1, 3) g"
        " -- the old spelling of CREATE TABLE AS\n;\n"
        "CREATE TABLE plain (id int GENERATED ALWAYS AS IDENTITY, n int);"
    )
    source = make_source(make_database(), [
        Change(text, at(1), objects=[("CREATE", "TABLE", "public", "plain")]),
    ])
    repo = tmp_path / "repo"

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stdout + result.stderr
    files = git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert {"public/numbers.sql", "public/big.sql", "public/plain.sql",
            "public/selected.sql"} <= set(files)
    numbers = git(repo, "show", "main:public/numbers.sql")
    assert "n integer" in numbers and "boom integer" in numbers
    selected = git(repo, "show", "main:public/selected.sql")
    assert "CREATE UNLOGGED TABLE public.selected" in selected and "boom integer" in selected
