"""The command line: help that teaches, exit codes scripts can trust, libpq conventions."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, cli, git, make_source
from typer.testing import CliRunner

from pggit_export import __version__
from pggit_export.cli import app

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_and_is_documented(command: str) -> None:
    text = help_text(command, "--help")
    assert "Example:" in text and f"pggit-export {command}" in text
    assert "Exit codes" in text
    assert f"pggit-export {command}" in (ROOT / "README.md").read_text()


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [], prog_name="pggit-export")
    assert "pggit-export demo" in result.output
    assert result.exit_code in (0, 2)


def test_bad_usage_exits_2() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["export"], prog_name="pggit-export").exit_code == 2
    assert runner.invoke(app, ["export", "x", "y", "--no-such-option"]).exit_code == 2
    # The real command line too: the entry point maps usage errors to 2 as well.
    assert cli("export").returncode == 2


def test_unreachable_source_exits_3_with_one_line(tmp_path: Path) -> None:
    result = cli("export", "host=/nonexistent-dir dbname=x connect_timeout=2", str(tmp_path / "r"))
    assert result.returncode == 3
    assert result.stderr.startswith("pggit-export: error: cannot connect to the source database")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_source_without_pggit_exits_3(make_database: Callable[[], str], tmp_path: Path) -> None:
    result = cli("export", make_database(), str(tmp_path / "r"))
    assert result.returncode == 3
    assert "is pgGit installed in this database?" in result.stderr


def test_target_that_is_not_a_repository_exits_3(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    result = cli("export", source, str(tmp_path / "r"))
    assert result.returncode == 3 and "is not a git repository" in result.stderr
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"


def test_pg_environment_variables_and_json_summary(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
    params = psycopg.conninfo.conninfo_to_dict(source)
    env = {**os.environ, "PGHOST": str(params["host"]), "PGPORT": str(params["port"]),
           "PGUSER": str(params["user"]), "PGDATABASE": str(params["dbname"])}
    result = cli("export", "", str(tmp_path / "r"), "--json", "--shadow-dsn", pg_admin_dsn, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["commits_written"] == 1 and summary["clean"] is True
    assert summary["head"] == git(tmp_path / "r", "rev-parse", "main").strip()
    assert summary["version"] == __version__
    # Deterministic: the same export elsewhere says the same but for where it went.
    again = cli("export", "", str(tmp_path / "r2"), "--json", "--shadow-dsn", pg_admin_dsn, env=env)
    assert {**json.loads(again.stdout), "repository": None} == {**summary, "repository": None}


def help_text(*args: str) -> str:
    """`pggit-export ARGS` run in process (help needs no subprocess), its output unwrapped."""
    result = CliRunner().invoke(app, list(args), prog_name="pggit-export")
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_dash_h_is_help_everywhere() -> None:
    for args in (["-h"], *([command, "-h"] for command in COMMANDS)):
        assert help_text(*args).startswith("Usage: pggit-export"), args


# What 1 (or, with no 1, what 0) means for each command, in its --help.
OWN_EXIT_CODES = {
    "check": "0 the history is clean; 1 findings of severity warning or error",
    "demo": "1 exported, but some changesets failed to replay",
    "drift": "0 no drift; 1 drift: the differing files are listed",
    "export": "1 done, but some changesets failed to replay or statements were refused",
    "mirror": "0 mirrored (also when there was nothing new); 2 bad usage",
    "restore": "1 restored, but the target renders some files differently",
    "verify": "0 everything matched; 1 mismatches",
}


def test_each_commands_help_states_its_own_exit_codes() -> None:
    epilogs = {}
    for command in COMMANDS:
        text = " ".join(help_text(command, "--help").split())
        epilogs[command] = text[text.index("Exit codes:"):]
        assert OWN_EXIT_CODES[command] in epilogs[command], epilogs[command]
        assert "2 bad usage; 3 could not run" in epilogs[command]
    assert "replay" not in epilogs["mirror"] and "replay" not in epilogs["restore"]
    assert len(set(epilogs.values())) == len(COMMANDS)  # no command borrows another's text
    assert "Each command's --help says what they mean for it." in " ".join(help_text("-h").split())


def test_failed_changesets_give_exit_1_and_are_listed(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("ALTER TABLE nope ADD x int;", at(1), objects=[("ALTER", "TABLE", "public", "nope")]),
    ])
    result = cli("export", source, str(tmp_path / "r"), "--shadow-dsn", pg_admin_dsn)
    assert result.returncode == 1
    assert "1 changeset failed to replay" in result.stdout
    assert 'history ids 1 (commit' in result.stdout and 'relation "nope" does not exist' in result.stdout


def test_check_exit_codes_and_json(make_database: Callable[[], str], pg_admin_dsn: str) -> None:
    clean = make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])
    result = cli("check", clean, "--shadow-dsn", pg_admin_dsn)
    assert result.returncode == 0 and "Summary: clean" in result.stdout
    messy = make_source(make_database(), [
        Change("ALTER TABLE old_t ADD x int;", at(1), objects=[("ALTER", "TABLE", "public", "old_t")]),
        Change(None, at(2), objects=[("CREATE", "TABLE", "public", "u")]),
    ])
    result = cli("check", messy, "--json", "--shadow-dsn", pg_admin_dsn)
    assert result.returncode == 1
    codes = {f["code"]: f["history_ids"] for f in json.loads(result.stdout)["findings"]}
    assert codes["missing-create"] == [1] and codes["missing-sql"] == [2]


def test_export_with_mirror_then_verify(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [
        Change("CREATE TABLE t (id int, name text);", at(1)),
        Change("ALTER TABLE t ADD COLUMN email text;", at(2), objects=[("ALTER", "TABLE", "public", "t")]),
    ])
    repo = str(tmp_path / "r")
    result = cli("export", source, repo, "--mirror", "--json", "--shadow-dsn", pg_admin_dsn)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mirror"]["commits_added"] == 2
    result = cli("verify", repo, source)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("OK"), result.stdout
    with psycopg.connect(source) as conn:  # tamper with a mirrored blob
        conn.execute("UPDATE pggit_v2.objects SET content = content || ' ' WHERE type = 'blob'")
    result = cli("verify", repo, source)
    assert result.returncode == 1


@pytest.fixture
def small_source(make_database: Callable[[], str]) -> str:
    return make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])


def _mistakes(source: str, tmp: Path) -> list[tuple[list[str], int, str]]:
    """(arguments, exit code, what the one line must say) for each user mistake."""
    a_file = tmp / "a-file"
    a_file.write_text("not a repository")
    typo = "prot=5432 " + source  # the classic: a misspelt keyword
    return [
        (["export", typo, str(tmp / "r")], 2, 'SOURCE is not a valid connection string: invalid connection option "prot"'),
        (["export", source, str(tmp / "r"), "--shadow-dsn", "prot=1"], 2, "--shadow-dsn is not a valid connection string"),
        (["export", source, str(a_file)], 3, f"Not a directory: {a_file}"),
        (["export", source, str(tmp / "r"), "--statement-timeout", "abc"], 2, "--statement-timeout 'abc' is not a duration"),
        (["export", source, str(tmp / "r"), "--branch", "bad..name"], 2, "--branch 'bad..name' is not a valid branch name"),
        (["check", typo], 2, "SOURCE is not a valid connection string"),
        (["drift", typo, str(tmp / "r")], 2, "SOURCE is not a valid connection string"),
        (["mirror", str(tmp / "r"), typo], 2, "TARGET is not a valid connection string"),
        (["verify", str(tmp / "r"), typo], 2, "TARGET is not a valid connection string"),
        (["restore", str(tmp / "r"), typo], 2, "TARGET is not a valid connection string"),
    ]


@pytest.mark.slow  # one process per mistake
def test_each_user_mistake_is_one_line_and_a_documented_exit_code(
    small_source: str, tmp_path: Path
) -> None:
    for args, code, line in _mistakes(small_source, tmp_path):
        result = cli(*args)
        assert "Traceback" not in result.stderr, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pggit-export: error: {line}"), (
            args, result.stderr)
        assert result.returncode == code, (args, result.returncode, result.stderr)


def test_database_refusals_are_one_line_with_the_servers_words(
    small_source: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    role = f"reader_{tmp_path.name[-8:].lower()}".replace("-", "_")
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        no_rights = psycopg.conninfo.make_conninfo(small_source, user=role)
        for command in (["export", no_rights, str(tmp_path / "r")], ["check", no_rights]):
            result = cli(*command)
            assert result.returncode == 3 and "Traceback" not in result.stderr
            assert result.stderr.strip().splitlines() == [
                "pggit-export: error: the database refused: permission denied for schema "
                "pggit (SQLSTATE 42501)"]
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP ROLE "{role}"')
    exported = cli("export", small_source, str(tmp_path / "ok"))
    assert exported.returncode == 0
    bad_date = cli("restore", str(tmp_path / "ok"), pg_admin_dsn, "--at", "2024-13-45")
    assert bad_date.returncode == 3 and "Traceback" not in bad_date.stderr
    assert bad_date.stderr.strip() == (
        "pggit-export: error: '2024-13-45' is not a valid date: month must be in 1..12")


@pytest.mark.slow  # waits out the 10-second connect timeout
def test_a_source_port_that_never_answers_ends_in_one_line(tmp_path: Path) -> None:
    # Something that accepts the connection and then says nothing: a cron run must end.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
        result = cli("check", f"host=127.0.0.1 port={port} dbname=app user=me", env=env)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "pggit-export: error: cannot connect to the source database:")
    assert "timeout" in lines[0]


def test_default_branch_follows_init_default_branch_for_new_repositories_only(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    from history import append_changes

    create = "CREATE TABLE t (id int);"
    source = make_source(make_database(), [Change(create, at(1))], live_sql=create)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = trunk\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")},
           "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "GIT_CONFIG_NOSYSTEM": "1"}  # conftest pins the setting to main: not here
    before = cli("export", source, str(tmp_path / "old"), "--shadow-dsn", pg_admin_dsn)
    assert before.returncode == 0, before.stderr  # made without the setting: main

    result = cli("export", source, str(tmp_path / "r"), "--shadow-dsn", pg_admin_dsn, env=env)
    assert result.returncode == 0, result.stderr
    assert "branch trunk" in result.stdout
    assert git(tmp_path / "r", "branch", "--format=%(refname:short)").split() == ["trunk"]
    assert git(tmp_path / "r", "symbolic-ref", "HEAD").strip() == "refs/heads/trunk"
    assert cli("drift", source, str(tmp_path / "r"), env=env).returncode == 0

    # The setting changes, or is gone: existing repositories keep their branch.
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = develop\n")
    with psycopg.connect(source) as conn:
        append_changes(conn, [Change("ALTER TABLE t ADD COLUMN a int;", at(2))])
        conn.execute("ALTER TABLE t ADD COLUMN a int")
    for repo, branch in ((tmp_path / "r", "trunk"), (tmp_path / "old", "main")):
        again = cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn, env=env)
        assert again.returncode == 0, again.stderr
        assert f"branch {branch}" in again.stdout
        assert git(repo, "branch", "--format=%(refname:short)").split() == [branch]
        assert git(repo, "rev-list", "--count", branch).strip() == "2"
        assert cli("drift", source, str(repo), env=env).returncode == 0
