"""-W/--password: the prompted password reaches libpq, on a server that demands one.

The session's test server trusts every local login, so a password could never be shown to
matter there. This module starts its own PostgreSQL and switches it to scram-sha-256 for a
role with a password, as a production server would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from history import Change, at, git, make_source
from psycopg import sql

from pggit_export.shadow.server import EmbeddedServer

pytestmark = pytest.mark.slow  # a server of its own: some seconds before the first test

ROLE = "app_owner"
SECRET = "s3cret pass'word"  # a space and a quote: it must travel as a value, not as text


def _wait_for_password_auth(conninfo: str) -> None:
    """pg_reload_conf() only signals the postmaster: wait until a login without the password
    is refused, or the tests below would prove nothing."""
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(conninfo, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
            raise
        if time.monotonic() > deadline:
            raise AssertionError("the server still lets the role in without a password")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer() as server:
        admin = server.conninfo("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(SECRET)))
            conn.execute(f"CREATE DATABASE app OWNER {ROLE}")  # type: ignore[arg-type]
            conn.execute(f"CREATE DATABASE restored OWNER {ROLE}")  # type: ignore[arg-type]
            hba = conn.execute("SHOW hba_file").fetchone()
        assert hba is not None
        make_source(
            psycopg.conninfo.make_conninfo(admin, dbname="app", user=ROLE),
            [Change("CREATE TABLE t (id int PRIMARY KEY, name text);", at(1)),
             Change("ALTER TABLE t ADD COLUMN email text;", at(2),
                    objects=[("ALTER", "TABLE", "public", "t")])],
            live_sql="CREATE TABLE t (id int PRIMARY KEY, name text, email text);",
        )
        # postgres (the fixture's own connections) stays trusted; the role needs its password.
        Path(hba[0]).write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        _wait_for_password_auth(psycopg.conninfo.make_conninfo(admin, dbname="app", user=ROLE))
        yield server


def role_dsn(server: EmbeddedServer, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(server.conninfo(dbname), user=ROLE)


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real CLI with `stdin` as its (non-terminal) standard input, and no other way to
    find a password: no PGPASSWORD, and a password file that does not exist."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    env["PGPASSFILE"] = "/nonexistent/pgpass"  # libpq skips a missing file silently
    return subprocess.run(
        [sys.executable, "-m", "pggit_export", *args], input=stdin,
        capture_output=True, text=True, timeout=300, env=env,
    )


def test_without_W_the_login_fails_in_one_line(server: EmbeddedServer) -> None:
    result = run("check", role_dsn(server, "app"))
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no password supplied" in lines[0], lines


def test_W_reads_the_password_from_stdin_for_every_database_command(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    source = role_dsn(server, "app")
    repo = tmp_path / "repo"
    # The shadow is a scratch database on the same server, as the same role: -W's password
    # is that role's, so it serves both connections.
    shadow = role_dsn(server, "postgres")
    steps: list[tuple[list[str], int]] = [
        (["check", source, "-W", "--shadow-dsn", shadow], 0),
        (["export", source, str(repo), "--password", "--shadow-dsn", shadow, "--json"], 0),
        (["drift", source, str(repo), "-W"], 0),
        (["mirror", str(repo), source, "-W", "--json"], 0),
        (["verify", str(repo), source, "-W"], 0),
        (["restore", str(repo), role_dsn(server, "restored"), "-W"], 0),
    ]
    for args, code in steps:
        result = run(*args, stdin=SECRET + "\n")
        assert result.returncode == code, (args, result.stderr)
        assert SECRET not in result.stdout + result.stderr, args  # not in reports, not in logs
    assert git(repo, "rev-list", "--count", "main").strip() == "2"
    with psycopg.connect(role_dsn(server, "restored"), password=SECRET) as conn:
        columns = conn.execute(
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'public.t'::regclass AND attnum > 0"
        ).fetchone()
    assert columns == ("id,name,email",)


def test_a_wrong_or_missing_password_is_one_line_and_exit_3_or_2(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    wrong = run("check", role_dsn(server, "app"), "-W", "--json", stdin="guess\n")
    assert wrong.returncode == 3 and "Traceback" not in wrong.stderr
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and f'password authentication failed for user "{ROLE}"' in lines[0]
    empty = run("check", role_dsn(server, "app"), "-W", stdin="")
    assert empty.returncode == 2
    assert empty.stderr.strip() == (
        "pggit-export: error: -W/--password: stdin is not a terminal and holds no password line")


def test_the_password_is_not_handed_to_a_shadow_on_another_server(
    server: EmbeddedServer, make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    # The source: the session's server, which trusts the role. The shadow: this module's
    # server, as a role of the same name that needs its password there. Were -W's password
    # handed to the shadow, the export would succeed; it must fail for want of one.
    source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN")  # type: ignore[arg-type]
    try:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(f"GRANT USAGE ON SCHEMA pggit TO {ROLE}; "  # type: ignore[arg-type]
                         f"GRANT SELECT ON ALL TABLES IN SCHEMA pggit TO {ROLE}")
        as_role = psycopg.conninfo.make_conninfo(source, user=ROLE)
        result = run("export", as_role, str(tmp_path / "r"), "-W",
                     "--shadow-dsn", role_dsn(server, "postgres"), stdin=SECRET + "\n")
        assert result.returncode == 3
        assert "cannot connect to the shadow server" in result.stderr
        assert "no password supplied" in result.stderr, result.stderr
    finally:
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {ROLE}")  # type: ignore[arg-type]
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {ROLE}")  # type: ignore[arg-type]
