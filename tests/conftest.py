"""Test plumbing: a real PostgreSQL server for the whole session, a fresh database per test.

Set PGGIT_TEST_DSN to a libpq connection string (a superuser on an existing
server) to use that server instead of starting a private one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pggit_export.shadow.server import EmbeddedServer

# New repositories take git's init.defaultBranch: the tests expect "main" whatever the
# machine's git configuration says (environment entries outrank every config file). A test
# of the setting itself removes these from its own environment.
os.environ.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "init.defaultBranch",
                   "GIT_CONFIG_VALUE_0": "main"})

# libpq reads PGHOST, PGOPTIONS, PGTZ, ... from the environment for every connection,
# the tests' own included: a developer's shell (PGOPTIONS='-c search_path=x', PGDATABASE)
# would change what the tests see and set up. The suite runs without them; tests of the
# tool's own handling of them (test_hermetic, test_cli) pass them explicitly.
for _name in [n for n in os.environ if n.startswith("PG") and not n.startswith("PGGIT")]:
    del os.environ[_name]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """Connection string of a superuser on the test server."""
    dsn = os.environ.get("PGGIT_TEST_DSN")
    if dsn:
        yield dsn
        return
    with EmbeddedServer() as server:
        yield server.conninfo("postgres")


def dsn_for(admin_dsn: str, dbname: str) -> str:
    """The admin connection string, pointed at another database."""
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def make_database(pg_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty database and returns its connection string."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        created.append(name)
        return dsn_for(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_sql_file(dsn: str, path: Path) -> None:
    """Run a whole SQL file (many statements) in one transaction."""
    with psycopg.connect(dsn) as conn:
        conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]


def load_demo_database(admin_dsn: str, dbname: str) -> str:
    """(Re)create database `dbname` holding the bundled demo source; return its dsn."""
    from pggit_export.demo import demo_history_sql

    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    dsn = dsn_for(admin_dsn, dbname)
    with psycopg.connect(dsn) as conn:
        conn.execute(demo_history_sql())  # type: ignore[arg-type]
    return dsn


# Tests of more than ~3 s (measured with --durations) in modules about replay and healing,
# marked here so that those modules' own edits and this list do not meet. Tests elsewhere
# carry @pytest.mark.slow themselves. `pytest -m "not slow"` runs the rest.
SLOW_TESTS = {
    "test_adversarial.py": {"test_adversarial_history_exports_safely"},
    "test_fidelity.py": {"test_healed_and_reconciled_replays_meet_the_targets"},
    "test_hermetic.py": {"test_the_shadow_holds_a_migration_of_thousands_of_tables"},
    "test_recovery.py": {"test_killed_at_random_points_then_resumed_gives_the_clean_result"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = SLOW_TESTS.get(item.path.name, set())
        module = getattr(item, "module", None)
        # A renamed test would silently become "fast": name it instead.
        missing = sorted(n for n in names if module is not None and not hasattr(module, n))
        if missing:
            raise pytest.UsageError(
                f"conftest.SLOW_TESTS names tests {item.path.name} lacks: {', '.join(missing)}")
        if getattr(item, "originalname", item.name) in names:  # the name without [params]
            item.add_marker(pytest.mark.slow)
