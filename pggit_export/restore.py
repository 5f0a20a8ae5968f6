"""Load a snapshot's SQL files into a database, whatever their dependency order.

A snapshot has one file per object and no dependency graph: a view's file may
come before its table's, two tables may reference each other. Rather than sort,
the loader retries: every statement runs in its own savepoint; one that fails
is rolled back and tried again in the next pass, after the statements it
depended on have had their chance. Passes repeat while one makes progress.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlparse

from pggit_export.errors import PggitExportError


@dataclass
class LoadFailure:
    """A statement that still failed in the last pass."""

    path: str
    statement: str
    error: str
    sqlstate: str | None = None
    message: str = ""  # PostgreSQL's primary message, without context


@dataclass
class LoadResult:
    """Outcome of load_files.

    ``statements`` counts every statement found in the files; those in
    ``failures`` are the ones that were never applied.
    """

    statements: int
    passes: int
    failures: list[LoadFailure]


def split_statements(text: str) -> list[str]:
    """The statements of one SQL file, without empty or comment-only ones."""
    statements = []
    for statement in sqlparse.split(text):
        if sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip():
            statements.append(statement.strip())
    return statements


Progress = Callable[[int, int], None]  # (statements applied, statements in all)


def load_files(
    conn: psycopg.Connection[Any],
    files: Mapping[str, str],
    progress: Progress | None = None,
) -> LoadResult:
    """Load SQL files (path -> text) into the connected database inside the caller's transaction.

    Files are attempted in sorted path order, statement by statement. Nothing is
    committed: the caller decides. On an autocommit connection the whole load
    runs in one transaction, committed at the end.
    """
    if conn.autocommit:
        with conn.transaction():
            return _load(conn, files, progress)
    return _load(conn, files, progress)


def _load(
    conn: psycopg.Connection[Any], files: Mapping[str, str], progress: Progress | None
) -> LoadResult:
    # As pg_dump does: a function body may name tables whose files come later.
    conn.execute("SET LOCAL check_function_bodies = off")
    # Snapshots are rendered with it on: '\' in a literal is a plain character.
    conn.execute("SET LOCAL standard_conforming_strings = on")
    pending = [(path, stmt) for path in sorted(files) for stmt in split_statements(files[path])]
    total = len(pending)
    passes = 0
    errors: dict[tuple[str, str], psycopg.Error] = {}
    applied = 0
    while pending:
        passes += 1
        failed = []
        for path, statement in pending:
            try:
                with conn.transaction():  # a savepoint: the caller's transaction is open
                    conn.execute(statement)  # type: ignore[arg-type]  # SQL text from a file
            except psycopg.Error as exc:
                failed.append((path, statement))
                errors[path, statement] = exc
            else:
                applied += 1
                if progress is not None:
                    progress(applied, total)
        if len(failed) == len(pending):
            break
        pending = failed
    failures = [
        LoadFailure(
            path, statement, str(errors[path, statement]).strip(),
            errors[path, statement].sqlstate, errors[path, statement].diag.message_primary or "",
        )
        for path, statement in pending
    ]
    return LoadResult(statements=total, passes=passes, failures=failures)


# ------------------------------------------------------------- restore command


class RestoreError(PggitExportError, RuntimeError):
    """The snapshot cannot be restored into the target (nothing was changed)."""


@dataclass
class RestoreReport:
    """What `restore_snapshot` loaded, from which commit."""

    commit: str
    commit_date: str
    files: int
    statements: int
    passes: int
    # Files the restored database renders differently (another PostgreSQL major, say).
    differing: list[str]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def resolve_commit(repo: Any, branch: str, at: str | None) -> Any:
    """The commit `at` names: a revision (id, branch, tag, HEAD~2, ...), or a date/time.

    A date or date-time means the last commit on `branch` at or before it; a bare
    date means the end of that day, in UTC.
    """
    import datetime as dt

    from dulwich.objectspec import parse_commit

    tip = repo.refs[f"refs/heads/{branch}".encode()]
    if at is None:
        return repo[tip]
    try:
        when = _parse_when(at)
    except ValueError as exc:  # shaped like a date, but no such day or time: 2024-13-45
        raise RestoreError(f"{at!r} is not a valid date: {exc}") from exc
    if when is None:
        # dulwich resolves names and ids; the ~N / ^N steps git users expect are walked here.
        base, steps = re.fullmatch(r"(.*?)((?:[~^]\d*)*)", at).groups()  # type: ignore[union-attr]
        try:
            commit = parse_commit(repo, base.encode())
            for op, count in re.findall(r"([~^])(\d*)", steps):
                n = int(count) if count else 1
                if op == "^" and n == 0:
                    continue  # ^0: the commit itself
                for _ in range(n if op == "~" else 1):
                    parent = commit.parents[n - 1 if op == "^" else 0]
                    commit = repo[parent]
            return commit
        except (KeyError, ValueError, IndexError) as exc:
            raise RestoreError(f"{at!r} is neither a revision of the repository nor a date") from exc
    limit = int(when.replace(tzinfo=when.tzinfo or dt.timezone.utc).timestamp())
    commit = repo[tip]
    while commit.commit_time > limit:
        if not commit.parents:
            raise RestoreError(f"the history starts after {at}: nothing to restore")
        commit = repo[commit.parents[0]]
    return commit


def _parse_when(text: str) -> Any:
    import datetime as dt
    import re

    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.date.fromisoformat(text)
        return dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+([+-]\d{2}:?\d{2}|Z)?", text):
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None


def restore_snapshot(
    repository: Any,
    target: str,
    *,
    at: str | None = None,
    branch: str = "main",
    progress: Progress | None = None,
) -> RestoreReport:
    """Recreate, in the empty database `target`, the schema of a commit of `repository`.

    `at` picks the commit (see `resolve_commit`; default: the branch's head).
    Everything happens in one transaction: the target ends with the whole
    snapshot, or untouched. A target that already holds objects is refused.
    """
    import datetime as dt
    from pathlib import Path

    from dulwich.repo import Repo

    from pggit_export.git.writer import tree_files
    from pggit_export.render.layout import snapshot_files
    from pggit_export.render.snapshot import ObjectKey, render_snapshot

    try:
        repo = Repo(str(Path(repository)))
    except Exception as exc:  # noqa: BLE001 - dulwich raises several kinds
        raise RestoreError(f"{repository} is not a git repository") from exc
    with repo:
        commit = resolve_commit(repo, branch, at)
        files = {path: data.decode("utf-8") for path, data in tree_files(repo, commit.tree).items()}
    try:
        conn = psycopg.connect(target)
    except psycopg.OperationalError as exc:
        raise RestoreError(f"cannot connect to the target database: {exc}".strip()) from exc
    with conn:
        present = set(render_snapshot(conn)) - {ObjectKey("schema", "public", "public")}
        if present:
            names = ", ".join(f"{k.kind} {k.schema}.{k.name}" for k in sorted(present)[:5])
            raise RestoreError(
                f"the target database is not empty ({len(present)} objects: {names}"
                f"{', ...' if len(present) > 5 else ''}): restore needs an empty database"
            )
        result = load_files(conn, files, progress)
        if result.failures:
            conn.rollback()
            first = result.failures[0]
            raise RestoreError(
                f"{len(result.failures)} statements could not be loaded (first: {first.path}: "
                f"{first.error}); the target was left untouched"
            )
        # Rendered back, the target should give the commit's files; a server of another
        # major version prints some definitions differently, so this is told, not fatal.
        loaded = snapshot_files(render_snapshot(conn))
        differing = sorted(p for p in set(loaded) | set(files) if loaded.get(p) != files.get(p))
    when = dt.datetime.fromtimestamp(commit.commit_time, dt.timezone.utc).isoformat()
    return RestoreReport(
        commit=commit.id.decode(), commit_date=when, files=len(files),
        statements=result.statements, passes=result.passes, differing=differing,
    )
