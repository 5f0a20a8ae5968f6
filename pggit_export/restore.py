"""Load a snapshot's SQL files into a database, whatever their dependency order.

A snapshot has one file per object and no dependency graph: a view's file may
come before its table's, two tables may reference each other. Rather than sort,
the loader retries: every statement runs in its own savepoint; one that fails
is rolled back and tried again in the next pass, after the statements it
depended on have had their chance. Passes repeat while one makes progress.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlparse

from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK, PggitExportError
from pggit_export.progress import Progress, ProgressEvent


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
    # (path, statement) in the order they succeeded: run in this order, with nothing to
    # retry, they recreate what the load made (restore --output writes them so).
    applied: list[tuple[str, str]] = field(default_factory=list)


def file_statements(text: str) -> list[str]:
    """The statements of one SQL file, without empty or comment-only ones."""
    statements = []
    for statement in sqlparse.split(text):
        if sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip():
            statements.append(statement.strip())
    return statements




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
    pending = [(path, stmt) for path in sorted(files) for stmt in file_statements(files[path])]
    total = len(pending)
    passes = 0
    errors: dict[tuple[str, str], psycopg.Error] = {}
    applied: list[tuple[str, str]] = []
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
                applied.append((path, statement))
                if progress is not None:
                    progress(ProgressEvent("restore", len(applied), total, "statements"))
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
    return LoadResult(statements=total, passes=passes, failures=failures, applied=applied)


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

    @property
    def exit_code(self) -> int:
        """EXIT_OK when the target renders every file as the commit has it, else
        EXIT_INCOMPLETE: restored, but `differing` lists what renders differently."""
        return EXIT_OK if not self.differing else EXIT_INCOMPLETE

    def format_text(self) -> str:
        """The summary the command line prints on stdout."""
        lines = [
            f"Restored commit {self.commit[:12]} ({self.commit_date}): {self.files} files, "
            f"{self.statements} statements in {self.passes} passes"
        ]
        lines += [f"  renders differently here: {path}" for path in self.differing]
        return "\n".join(lines)


# --------------------------------------------------------------- naming a commit

# git's approxidate units. Months and years are calendar steps (March 31 minus one month is
# February's last day); the others are fixed lengths, as in git.
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_UNIT = r"(second|minute|hour|day|week|month|year)s?"
_AGO = re.compile(rf"(?:\d+[ ._]*{_UNIT}[ ._]+)+ago", re.IGNORECASE)
_AGO_TERM = re.compile(rf"(\d+)[ ._]*{_UNIT}", re.IGNORECASE)
# <branch>@{<date>} (git's reflog syntax; the date is looked up in commit dates, see
# resolve_commit), optionally followed by ~N / ^N steps.
_AT_DATE = re.compile(r"(?P<name>[^@{}]*)@\{(?P<date>[^{}]*)\}(?P<steps>(?:[~^]\d*)*)")
_STEPS = re.compile(r"(.*?)((?:[~^]\d*)*)")

DATE_FORMS = ("an ISO date (2024-01-31: the end of that day, UTC) or time "
              "(2024-01-31T12:00:00+02:00), now, yesterday, or N {seconds,minutes,hours,days,"
              "weeks,months,years} ago")


def parse_date(text: str, now: dt.datetime) -> dt.datetime | None:
    """The moment `text` names, as git's approxidate reads the forms people use; None when
    `text` is not shaped like a date. Relative forms count back from `now` (timezone-aware).

    Raises ValueError for a date-shaped text that names no real moment (2024-13-45).
    """
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.date.fromisoformat(text)
        return dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+([+-]\d{2}:?\d{2}|Z)?", text):
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    lowered = text.lower()
    if lowered == "now":
        return now
    if lowered == "yesterday":  # git: the same time of day, one day back
        return now - dt.timedelta(days=1)
    if _AGO.fullmatch(lowered):
        when = now
        for count, unit in _AGO_TERM.findall(lowered):
            if unit in _SECONDS:
                when -= dt.timedelta(seconds=int(count) * _SECONDS[unit])
            else:
                when = _months_back(when, int(count) * (12 if unit == "year" else 1))
        return when
    return None


def _months_back(when: dt.datetime, months: int) -> dt.datetime:
    import calendar

    years, month0 = divmod(when.month - 1 - months, 12)
    year = when.year + years
    if year < dt.MINYEAR:
        raise ValueError(f"{months} months before {when:%Y-%m-%d} is before year 1")
    day = min(when.day, calendar.monthrange(year, month0 + 1)[1])
    return when.replace(year=year, month=month0 + 1, day=day)


def resolve_commit(
    repo: Any, branch: str, at: str | None, *, now: dt.datetime | None = None
) -> Any:
    """The commit `at` names, on `branch` where it names a date.

    - a revision: a commit id (or its prefix), a branch, a tag, HEAD, with ~N / ^N steps;
    - a date (`parse_date`: ISO, `now`, `yesterday`, `2 weeks ago`): the last commit of
      `branch` at or before it;
    - `<branch>@{<date>}`, or `@{<date>}` for `branch`: the last commit of that branch at or
      before the date, then any ~N / ^N steps.

    Relative dates count back from `now` (default: the clock, read once here, so every date
    in one call is computed from the same moment).
    """
    if now is None:
        now = dt.datetime.now(dt.timezone.utc)
    if at is None:
        return repo[_branch_tip(repo, branch)]
    braces = _AT_DATE.fullmatch(at.strip())
    if braces is not None:
        inside = braces["date"]
        when = _date_of(inside, at, now)
        if when is None:
            if re.fullmatch(r"-?\d+", inside.strip()):
                # git reads @{N} as the Nth reflog entry; an export's reflog says when the
                # export ran, not when the schema changed, so only dates are taken.
                raise RestoreError(
                    f"{at!r}: reflog entries (@{{N}}) are not supported; give a date, "
                    f"e.g. {braces['name'] or branch}@{{2024-01-01}}"
                )
            raise RestoreError(f"{at!r}: {inside!r} is not a date: use {DATE_FORMS}")
        name = braces["name"] or branch
        return _walk(repo, _last_at_or_before(repo, name, when, at), braces["steps"], at)
    when = _date_of(at, at, now)
    if when is not None:
        return _last_at_or_before(repo, branch, when, at)
    base, steps = _STEPS.fullmatch(at).groups()  # type: ignore[union-attr]  # matches all
    from dulwich.objectspec import parse_commit

    try:
        commit = parse_commit(repo, base.encode())
    except (KeyError, ValueError) as exc:
        raise RestoreError(
            f"{at!r} is neither a revision of the repository nor a date ({DATE_FORMS})"
        ) from exc
    return _walk(repo, commit, steps, at)


def _date_of(text: str, at: str, now: dt.datetime) -> dt.datetime | None:
    try:
        return parse_date(text, now)
    except (ValueError, OverflowError) as exc:  # shaped like a date, but no such day: 2024-13-45
        raise RestoreError(f"{at!r} is not a valid date: {exc}") from exc


def _branch_tip(repo: Any, name: str) -> bytes:
    ref = b"HEAD" if name == "HEAD" else f"refs/heads/{name}".encode()
    try:
        return bytes(repo.refs[ref])
    except KeyError:
        raise RestoreError(f"the repository has no branch {name!r}") from None


def _last_at_or_before(repo: Any, name: str, when: dt.datetime, at: str) -> Any:
    """The last commit of branch `name` at or before `when`, along first parents (the
    order the export committed in: commit dates never go back along them)."""
    limit = int(when.timestamp())
    commit = repo[_branch_tip(repo, name)]
    while commit.commit_time > limit:
        if not commit.parents:
            resolved = when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
            said = "" if at.strip() in (resolved, when.date().isoformat()) else f" ({resolved})"
            raise RestoreError(f"the history starts after {at}{said}: nothing to restore")
        commit = repo[commit.parents[0]]
    return commit


def _walk(repo: Any, commit: Any, steps: str, at: str) -> Any:
    """Apply git's ~N (N first parents back) and ^N (the Nth parent) to `commit`."""
    for op, count in re.findall(r"([~^])(\d*)", steps):
        n = int(count) if count else 1
        if op == "^" and n == 0:
            continue  # ^0: the commit itself
        for _ in range(n if op == "~" else 1):
            index = n - 1 if op == "^" else 0
            if index >= len(commit.parents):
                raise RestoreError(f"{at!r}: commit {commit.id.decode()[:12]} has no such parent")
            commit = repo[commit.parents[index]]
    return commit


def open_repository(repository: str | os.PathLike[str]) -> Any:
    """The dulwich Repo at `repository`, or a RestoreError saying it is none."""
    from dulwich.repo import Repo

    try:
        return Repo(str(repository))
    except Exception as exc:  # noqa: BLE001 - dulwich raises several kinds
        raise RestoreError(f"{repository} is not a git repository") from exc


def read_snapshot(
    repository: str | os.PathLike[str], *, at: str | None = None, branch: str = "main",
    now: dt.datetime | None = None,
) -> tuple[Any, dict[str, str]]:
    """The commit `at` names (see `resolve_commit`) and its files, path -> SQL text."""
    from pggit_export.git.writer import tree_files

    with open_repository(repository) as repo:
        commit = resolve_commit(repo, branch, at, now=now)
        files = {path: data.decode("utf-8") for path, data in tree_files(repo, commit.tree).items()}
    return commit, files


def _commit_date(commit: Any) -> str:
    return dt.datetime.fromtimestamp(commit.commit_time, dt.timezone.utc).isoformat()


# ------------------------------------------------------------------ restoring


def restore_snapshot(
    repository: str | os.PathLike[str],
    target: str,
    *,
    at: str | None = None,
    branch: str = "main",
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> RestoreReport:
    """Recreate, in the empty database `target`, the schema of a commit of `repository`.

    `at` picks the commit (see `resolve_commit`; default: the branch's head).
    Everything happens in one transaction: the target ends with the whole
    snapshot, or untouched. A target that already holds objects is refused.
    """
    from pggit_export.render.layout import snapshot_files
    from pggit_export.render.snapshot import ObjectKey, render_snapshot

    commit, files = read_snapshot(repository, at=at, branch=branch, now=now)
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
    return RestoreReport(
        commit=commit.id.decode(), commit_date=_commit_date(commit), files=len(files),
        statements=result.statements, passes=result.passes, differing=differing,
    )


# ------------------------------------------------------------ restore --output


@dataclass
class SnapshotScript:
    """A commit's snapshot as one SQL script that loads in order (`snapshot_script`)."""

    commit: str
    commit_date: str
    files: int
    statements: int
    sql: str

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "commit_date": self.commit_date, "files": self.files,
                "statements": self.statements}

    @property
    def exit_code(self) -> int:
        """Always EXIT_OK: a script that could not be ordered raised RestoreError instead."""
        return EXIT_OK

    def format_text(self, output: str) -> str:
        """The line the command line prints once the script is written to the file `output`."""
        return (f"Wrote commit {self.commit[:12]} ({self.commit_date}): {self.files} files, "
                f"{self.statements} statements to {output}")


def snapshot_script(
    repository: str | os.PathLike[str],
    *,
    at: str | None = None,
    branch: str = "main",
    shadow_dsn: str | None = None,
    now: dt.datetime | None = None,
) -> SnapshotScript:
    """The schema of a commit of `repository` as one SQL script, in an order that loads:
    `psql -v ON_ERROR_STOP=1 -f FILE` into an empty database recreates it, in one
    transaction.

    A snapshot's files carry no dependency order, and SQL text alone cannot tell what a
    view or a default needs. So the order is found the way `restore` finds it: the files
    are loaded into a scratch database (a private PostgreSQL, or one created on the server
    `shadow_dsn` names, then dropped), retrying what fails; the script is the statements in
    the order they succeeded there. A statement that never loads there (an extension that
    server lacks, say) is a RestoreError: the script would fail on it too.
    """
    from pggit_export import __version__
    from pggit_export.shadow.replay import open_shadow

    commit, files = read_snapshot(repository, at=at, branch=branch, now=now)
    with open_shadow(shadow_dsn) as shadow:
        result = load_files(shadow.conn, files)
        where = shadow.description
    if result.failures:
        first = result.failures[0]
        raise RestoreError(
            f"{len(result.failures)} statements do not load in a {where} (first: {first.path}: "
            f"{first.error}); --shadow-dsn can name a server that has what they need"
        )
    date = _commit_date(commit)
    lines = [
        f"-- The schema of commit {commit.id.decode()} ({date}),",
        f"-- {len(files)} files, {result.statements} statements, written by pggit-export "
        f"{__version__} in an order that loads.",
        "-- Load it into an empty database (one transaction: all or nothing):",
        "--   psql -v ON_ERROR_STOP=1 -f FILE",
        "",
        # What restore sets: function bodies may name objects created further down (as in
        # pg_dump), and the files were rendered with standard strings.
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "SET check_function_bodies = false;",
        "",
        "BEGIN;",
    ]
    previous = None
    for path, statement in result.applied:
        if path != previous:
            lines += ["", f"-- {path}"]
            previous = path
        # A file's last statement may lack its ';', and psql runs a statement only at one.
        lines.append(statement if statement.rstrip().endswith(";") else f"{statement}\n;")
    lines += ["", "COMMIT;", ""]
    return SnapshotScript(
        commit=commit.id.decode(), commit_date=date, files=len(files),
        statements=result.statements, sql="\n".join(lines),
    )


def snapshot_sql(
    repository: str | os.PathLike[str],
    *,
    at: str | None = None,
    branch: str = "main",
    shadow_dsn: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The SQL text of `snapshot_script` (what `restore --output FILE` writes)."""
    return snapshot_script(repository, at=at, branch=branch, shadow_dsn=shadow_dsn, now=now).sql
