"""Load a snapshot's SQL files into a database, whatever their dependency order.

A snapshot has one file per object and no dependency graph: a view's file may
come before its table's, two tables may reference each other. Rather than sort,
the loader retries: every statement runs in its own savepoint; one that fails
is rolled back and tried again in the next pass, after the statements it
depended on have had their chance. Passes repeat while one makes progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlparse


@dataclass
class LoadFailure:
    """A statement that still failed in the last pass."""

    path: str
    statement: str
    error: str


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


def load_files(conn: psycopg.Connection[Any], files: Mapping[str, str]) -> LoadResult:
    """Load SQL files (path -> text) into the connected database inside the caller's transaction.

    Files are attempted in sorted path order, statement by statement. Nothing is
    committed: the caller decides. On an autocommit connection the whole load
    runs in one transaction, committed at the end.
    """
    if conn.autocommit:
        with conn.transaction():
            return _load(conn, files)
    return _load(conn, files)


def _load(conn: psycopg.Connection[Any], files: Mapping[str, str]) -> LoadResult:
    # As pg_dump does: a function body may name tables whose files come later.
    conn.execute("SET LOCAL check_function_bodies = off")
    # Snapshots are rendered with it on: '\' in a literal is a plain character.
    conn.execute("SET LOCAL standard_conforming_strings = on")
    pending = [(path, stmt) for path in sorted(files) for stmt in split_statements(files[path])]
    total = len(pending)
    passes = 0
    errors: dict[tuple[str, str], str] = {}
    while pending:
        passes += 1
        failed = []
        for path, statement in pending:
            try:
                with conn.transaction():  # a savepoint: the caller's transaction is open
                    conn.execute(statement)  # type: ignore[arg-type]  # SQL text from a file
            except psycopg.Error as exc:
                failed.append((path, statement))
                errors[path, statement] = str(exc).strip()
        if len(failed) == len(pending):
            break
        pending = failed
    failures = [LoadFailure(path, statement, errors[path, statement]) for path, statement in pending]
    return LoadResult(statements=total, passes=passes, failures=failures)
