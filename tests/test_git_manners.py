"""The export behaves like a git tool: it moves only its own branch, and the working tree is
the user's (updated only when it shows that branch and holds no uncommitted change)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
from history import Change, append_changes, at, cli, git, make_source


def _user(repo: Path, *args: str) -> None:
    """What a user does in the repository, with an identity of their own."""
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=U", "-c", "user.email=u@x", *args],
                   check=True, capture_output=True)


def _two_step_source(make_database: Callable[[], str]) -> str:
    return make_source(make_database(), [Change("CREATE TABLE t (id int);", at(1))])


def _record_more(source: str) -> None:
    with psycopg.connect(source) as conn:
        append_changes(conn, [Change("ALTER TABLE t ADD COLUMN note text;", at(2),
                                     objects=[("ALTER", "TABLE", "public", "t")])])


def test_uncommitted_edits_stop_the_export_unless_forced(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source, repo = _two_step_source(make_database), tmp_path / "repo"
    assert cli("export", source, str(repo)).returncode == 0
    (repo / "public" / "t.sql").write_text("-- my local edit\n")
    _record_more(source)
    head = git(repo, "rev-parse", "main")

    refused = cli("export", source, str(repo))

    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines() == [
        f"pggit-export: error: {repo} has uncommitted changes that the export would overwrite: "
        "public/t.sql; commit or stash them, or pass --force"]
    assert (repo / "public" / "t.sql").read_text() == "-- my local edit\n"
    assert git(repo, "rev-parse", "main") == head

    forced = cli("export", source, str(repo), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "note text" in (repo / "public" / "t.sql").read_text()


def test_another_checked_out_branch_and_its_tree_are_left_alone(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    source, repo = _two_step_source(make_database), tmp_path / "repo"
    assert cli("export", source, str(repo)).returncode == 0
    _user(repo, "checkout", "-q", "-b", "review")
    (repo / "NOTES.md").write_text("review notes\n")
    _user(repo, "add", "NOTES.md")
    _user(repo, "commit", "-q", "-m", "My review notes")
    review = git(repo, "rev-parse", "review")
    _record_more(source)

    result = cli("export", source, str(repo))

    assert result.returncode == 0, result.stderr
    assert ("warning: updated branch main only: the working tree shows review, which is left "
            "as it was") in result.stderr
    assert git(repo, "rev-parse", "review") == review  # the user's branch did not move
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/review"
    assert (repo / "NOTES.md").exists() and git(repo, "status", "--porcelain") == ""
    assert "note text" in git(repo, "show", "main:public/t.sql")


def test_an_export_branch_in_an_ordinary_repository_leaves_its_work_alone(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    repo = tmp_path / "app"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("my app\n")
    _user(repo, "add", "README.md")
    _user(repo, "commit", "-q", "-m", "Start")
    main = git(repo, "rev-parse", "main")
    (repo / "README.md").write_text("my app, edited\n")  # uncommitted

    result = cli("export", _two_step_source(make_database), str(repo), "--branch", "pggit")

    assert result.returncode == 0, result.stderr
    assert git(repo, "rev-parse", "main") == main
    assert (repo / "README.md").read_text() == "my app, edited\n"
    assert git(repo, "ls-tree", "-r", "--name-only", "pggit").split() == [
        "public/_schema.sql", "public/t.sql"]
