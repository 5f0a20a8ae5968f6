"""`drift` on any database: a restored copy compares with the history; `--diff` shows how."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from history import Change, at, cli, make_source


def test_drift_compares_any_database_with_the_history(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    create = "CREATE TABLE public.users (id int PRIMARY KEY, name text);"
    source = make_source(make_database(), [Change(create, at(1), objects=[
        ("CREATE", "TABLE", "public", "users")])], live_sql=create)
    repo = tmp_path / "repo"
    exported = cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn)
    assert exported.returncode == 0, exported.stderr

    copy = make_database()  # no pgGit tables in it: restore gives the head, nothing else
    restored = cli("restore", str(repo), copy)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with psycopg.connect(copy) as conn:
        assert conn.execute("SELECT to_regclass('pggit.history')").fetchone() == (None,)

    clean = cli("drift", copy, str(repo))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.rstrip().endswith("no drift")
    assert cli("drift", copy, str(repo), "--diff").stdout == ""  # as git diff: nothing

    with psycopg.connect(copy) as conn:
        conn.execute("ALTER TABLE public.users ADD COLUMN email text")
    drifted = cli("drift", copy, str(repo))
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert "differs between the live database and the history" in drifted.stdout
    assert "    public/users.sql" in drifted.stdout

    diff = cli("drift", copy, str(repo), "--diff")
    assert diff.returncode == 1 and diff.stderr == ""
    lines = diff.stdout.splitlines()
    assert lines[:3] == ["diff --git a/public/users.sql b/public/users.sql",
                         "--- a/public/users.sql", "+++ b/public/users.sql"]
    assert lines[3].startswith("@@ -")
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert added and all("email" in line for line in added), diff.stdout
    assert not [line for line in lines if line.startswith("-") and not line.startswith("---")
                and "email" not in line and "name text" not in line], diff.stdout


def test_drift_diff_shows_new_and_gone_files(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    create = "CREATE TABLE public.t (id int);"
    source = make_source(make_database(), [Change(create, at(1))], live_sql=create)
    repo = tmp_path / "repo"
    assert cli("export", source, str(repo), "--shadow-dsn", pg_admin_dsn).returncode == 0
    with psycopg.connect(source) as conn:
        conn.execute("DROP TABLE public.t; CREATE TABLE public.hotfix (id int)")
    diff = cli("drift", source, str(repo), "--diff")
    assert diff.returncode == 1, diff.stderr
    text = diff.stdout
    assert ("diff --git a/public/hotfix.sql b/public/hotfix.sql\nnew file mode 100644\n"
            "--- /dev/null\n+++ b/public/hotfix.sql\n") in text
    assert ("diff --git a/public/t.sql b/public/t.sql\ndeleted file mode 100644\n"
            "--- a/public/t.sql\n+++ /dev/null\n") in text
    assert cli("drift", source, str(repo), "--diff", "--json").returncode == 2
