"""The `pggit-export` command line: a thin layer over the library functions.

Exit codes (also in the README and `pggit-export --help`):
  0  done, and every changeset replayed
  1  done, but some changesets failed to replay or statements were refused:
     the repository is complete and the report names each history id
  2  bad usage (unknown option, missing argument)
  3  could not run: source, repository or shadow server problem
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import psycopg
import typer
from dulwich.refs import check_ref_format

from pggit_export.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PggitExportError,
)
from pggit_export.export import ExportOptions, export_history
from pggit_export.git.authors import read_authors_file
from pggit_export.mirror.write import MirrorOptions, mirror_repository
from pggit_export.progress import ProgressEvent
from pggit_export.render.snapshot import DEFAULT_EXCLUDED_SCHEMAS
from pggit_export.restore import restore_snapshot
from pggit_export.shadow.replay import (
    DEFAULT_MAX_SQL_BYTES,
    DEFAULT_STATEMENT_TIMEOUT,
    parse_size,
)

from . import __version__


class ObjectFormat(str, Enum):
    """Hash algorithms git repositories can use."""

    sha1 = "sha1"
    sha256 = "sha256"


class CommitPer(str, Enum):
    """What one commit holds."""

    transaction = "transaction"
    statement = "statement"


def _exit_codes(ok: str, findings: str | None, could_not_run: str, *, resumable: bool = False) -> str:
    """A command's epilog: what each exit code means for that command, in its own words."""
    codes = [f"0 {ok}"]
    if findings:
        codes.append(f"1 {findings}")
    codes += ["2 bad usage", f"3 could not run: {could_not_run}; one line on stderr says why"]
    if resumable:
        codes.append("130 interrupted: run the same command again to continue")
    return "Exit codes: " + "; ".join(codes) + "."


APP_EPILOG = (
    "Exit codes: 0 done, nothing to report; 1 done, with something to look at (changesets "
    "that failed to replay, findings, drift, mismatches); 2 bad usage; 3 could not run; "
    "130 interrupted. Each command's --help says what they mean for it."
)
EXPORT_EPILOG = _exit_codes(
    "every changeset replayed",
    "done, but some changesets failed to replay or statements were refused: the repository "
    "is complete and the report names each history id (--strict: stopped at the first)",
    "the source, the repository or the shadow server had a problem",
    resumable=True,
)
DEMO_EPILOG = _exit_codes(
    "the demo exported, every changeset replayed",
    "exported, but some changesets failed to replay (named in the report)",
    "the directory or the private PostgreSQL had a problem",
)
MIRROR_EPILOG = _exit_codes(
    "mirrored (also when there was nothing new)",
    None,
    "the repository or TARGET had a problem, and nothing was written (one transaction)",
)
VERIFY_EPILOG = _exit_codes(
    "everything matched", "mismatches (each is listed)", "the repository or TARGET had a problem"
)
RESTORE_EPILOG = _exit_codes(
    "restored (or, with --output, the script written)",
    "restored, but the target renders some files differently (listed; another PostgreSQL "
    "major version, say)",
    "no such commit, a non-empty target, a statement that does not load (the target is left "
    "untouched)",
)
DRIFT_EPILOG = _exit_codes(
    "no drift", "drift: the differing files are listed", "SOURCE or the repository had a problem"
)
CHECK_EPILOG = _exit_codes(
    "the history is clean",
    "findings of severity warning or error (listed); with --replay, exactly when export "
    "would exit 1",
    "SOURCE or the shadow server had a problem",
)

app = typer.Typer(
    name="pggit-export",
    help=(
        "Turn a pgGit v1 schema history into a real Git repository: one commit per "
        "change, one file per database object (<schema>/<name>.sql).\n\n"
        "Start with:  pggit-export demo ./shop-history"
    ),
    epilog=APP_EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # as git and psql take both
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pggit-export {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass


class UsageMistake(PggitExportError):
    """An argument the user must fix before anything can run (exit code 2)."""


def check_conninfo(value: str | None, what: str) -> None:
    """A connection string libpq would reject: a usage mistake, named, before any work."""
    if value is None:
        return
    try:
        psycopg.conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise UsageMistake(f"{what} is not a valid connection string: {_first_line(exc)}") from None


def check_branch(name: str) -> None:
    """A branch name git would refuse (`git check-ref-format --branch`)."""
    if name.startswith("-") or not check_ref_format(f"refs/heads/{name}".encode()):
        raise UsageMistake(f"--branch {name!r} is not a valid branch name (see git check-ref-format)")


def branch_of(name: str | None, repo: str | os.PathLike[str]) -> str:
    """--branch, checked, or without it the repository's (`writer.default_branch`)."""
    from pggit_export.git.writer import default_branch

    if name is None:
        return default_branch(repo)
    check_branch(name)
    return name


_BRANCH_DEFAULT = (" Default: the repository's own (main, or else the branch it was first "
                   "exported to); for a new repository git's init.defaultBranch, else main.")


# What PostgreSQL takes for a time setting: a number with an optional unit.
_DURATION = re.compile(r"\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*")


def check_duration(value: str, option: str) -> None:
    if not _DURATION.fullmatch(value):
        raise UsageMistake(f"{option} {value!r} is not a duration: a number with a unit "
                           "(us, ms, s, min, h, d), e.g. 10min")


def ask_password(conninfo: str) -> str:
    """-W: the password for `conninfo`'s user, asked once before connecting (as psql -W).

    On a terminal the prompt goes to the terminal and nothing echoes; otherwise (a pipe, a
    script, `... -W < file`) the first line of stdin is the password. It goes into the
    connection string in memory only: never onto a command line, into a report or a log.
    """
    if sys.stdin.isatty():
        user = _server_and_user(conninfo)[2]
        return getpass.getpass(f"Password for user {user}: ")
    line = sys.stdin.readline()
    if not line:
        raise UsageMistake("-W/--password: stdin is not a terminal and holds no password line")
    return line.rstrip("\r\n")


def with_password(conninfo: str, password: str | None) -> str:
    """`conninfo` with the prompted password set (libpq's `password` keyword)."""
    if password is None:
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, password=password)


def _server_and_user(conninfo: str) -> tuple[str, str, str]:
    """(host, port, user) libpq will use for `conninfo`, with the PG* variables' defaults."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    env = os.environ
    host = params.get("host") or params.get("hostaddr") or env.get("PGHOST") or env.get(
        "PGHOSTADDR") or ""
    port = params.get("port") or env.get("PGPORT") or "5432"
    user = params.get("user") or env.get("PGUSER") or getpass.getuser()
    return str(host), str(port), str(user)


def with_password_if_same_server(conninfo: str | None, main: str, password: str | None) -> str | None:
    """The second connection of a command (--shadow-dsn) gets -W's password only when it
    logs in as the same user on the same server as the first: the password is that role's,
    and handing it to another server would give it away."""
    if conninfo is None or password is None:
        return conninfo
    if _server_and_user(conninfo) != _server_and_user(main):
        return conninfo
    return with_password(conninfo, password)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _errors_exit() -> Iterator[None]:
    """Expected failures become one clear line on stderr and exit code 3 (2 for a usage
    mistake), never a traceback: what a failed run leaves behind is safe to rerun."""
    try:
        yield
    except UsageMistake as exc:
        typer.echo(f"pggit-export: error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except PggitExportError as exc:
        typer.echo(f"pggit-export: error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except psycopg.OperationalError as exc:
        typer.echo(
            f"pggit-export: error: lost a database connection ({_first_line(exc)}); the repository "
            "holds every commit written so far: run the same command again to continue",
            err=True,
        )
        raise typer.Exit(EXIT_ERROR) from None
    except psycopg.Error as exc:
        # A server refused something (no right to read the history, a pgGit whose tables
        # differ): the server's own words, with its SQLSTATE.
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        typer.echo(f"pggit-export: error: the database refused: {_first_line(exc)}{state}",
                   err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        # A path that is a file, a read-only or full disk.
        typer.echo(f"pggit-export: error: {exc.strerror or _first_line(exc)}"
                   + (f": {exc.filename}" if exc.filename else ""), err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        typer.echo(
            "pggit-export: interrupted; the repository holds every commit written so far, "
            "run the same command again to continue",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _progress(
    enabled: bool, label: str, unit: str = "rows  {task.fields[changesets]} changesets"
) -> Iterator[Callable[..., None] | None]:
    """A progress bar with rate and ETA on a terminal; nothing in scripts."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(unit), TimeRemainingColumn(),
        transient=True, console=None,
    ) as bar:
        task = bar.add_task(label, total=None, changesets=0)

        def update(event: ProgressEvent) -> None:
            bar.update(task, completed=event.done, total=event.total,
                       changesets=event.changesets if event.changesets is not None else "")

        yield update


def _echo(text: str, err: bool = False) -> None:
    """Print a report's text: nothing at all for an empty one (quiet), not an empty line."""
    if text:
        typer.echo(text, err=err)


def _echo_json(summary: dict[str, Any]) -> None:
    """A report's `to_dict()`, the --json output, on stdout."""
    typer.echo(json.dumps(summary, indent=2, default=str))


PasswordOption = Annotated[
    bool,
    typer.Option(
        "--password", "-W",
        help="Ask for the password before connecting, as psql -W does (without -W, libpq's "
        "PGPASSWORD and ~/.pgpass still work). On a terminal it is prompted without echo; "
        "otherwise the first line of stdin is read: pass it from a file with "
        "'-W < secret-file', never on the command line.",
    ),
]
SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE",
        help="Source database: a libpq connection string or URI, e.g. "
        "'host=db dbname=app user=me' or postgresql://me@db/app. PG* environment "
        "variables fill in what it leaves out; '' uses them alone, as psql does.",
        show_default=False,
    ),
]
RepoArg = Annotated[
    Path,
    typer.Argument(
        metavar="REPO",
        help="Git repository to write: created if missing; an existing export is continued.",
        show_default=False,
    ),
]


@app.command(epilog=EXPORT_EPILOG)
def export(
    source: SourceArg,
    repo: RepoArg,
    branch: Annotated[Optional[str], typer.Option(help="Branch to write." + _BRANCH_DEFAULT)] = None,
    bare: Annotated[bool, typer.Option("--bare", help="Create a bare repository.")] = False,
    shadow_dsn: Annotated[
        Optional[str],
        typer.Option(
            "--shadow-dsn",
            help="Replay on this existing server (in a scratch database created and "
            "dropped there) instead of a private PostgreSQL started for the export.",
        ),
    ] = None,
    default_author: Annotated[
        str, typer.Option(help="Author for history rows that recorded no user.")
    ] = "unknown",
    authors: Annotated[
        Optional[Path],
        typer.Option(
            help="Authors file, as git-svn's: one 'dbuser = Full Name <email>' per line. "
            "Users it does not name become 'dbuser <dbuser@pggit.invalid>'.",
        ),
    ] = None,
    object_format: Annotated[
        ObjectFormat,
        typer.Option(
            help="Hash of a new repository: sha256 ids look like pgGit's own 64-hex ids. "
            "An existing repository keeps its own.",
        ),
    ] = ObjectFormat.sha1,
    commit_per: Annotated[
        CommitPer,
        typer.Option(
            help="One commit per transaction (a migration run with psql -1, or by a tool "
            "that wraps each migration in one: its rows share created_at and created_by), "
            "or one per statement text the client sent.",
        ),
    ] = CommitPer.transaction,
    schema: Annotated[
        Optional[list[str]],
        typer.Option(
            "--schema", "-n",
            help="Export only the objects of this schema (repeat for several), as pg_dump "
            "-n does. The whole history still replays: exported objects may need others.",
        ),
    ] = None,
    exclude_schema: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude-schema", "-N",
            help="Do not export the objects of this schema (repeat for several), as pg_dump "
            "-N does; pgGit's own schemas are always left out.",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Commits written per pack. The branch moves after each batch: an "
            "interrupted export keeps every finished batch, and a rerun continues.",
        ),
    ] = 200,
    statement_timeout: Annotated[
        str,
        typer.Option(help="Cancel a replayed statement after this long (PostgreSQL interval)."),
    ] = DEFAULT_STATEMENT_TIMEOUT,
    shadow_size_limit: Annotated[
        str,
        typer.Option(
            help="Stop, and say so, when the shadow database grows past this size (512MB, "
            "2GB: units of 1024). It holds a schema: a history storing rows (a DO block "
            "inserting them) would otherwise fill the disk.",
        ),
    ] = "1GB",
    max_sql_bytes: Annotated[
        int,
        typer.Option(min=1, help="Refuse (and report) history texts larger than this."),
    ] = DEFAULT_MAX_SQL_BYTES,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Replay everything and print the report; write nothing."),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at the first changeset that fails to replay (exit 1); the commits "
            "before it are kept, and a rerun without --strict continues.",
        ),
    ] = False,
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            exists=True, dir_okay=False,
            help="A schema dump from before the history (pg_dump --schema-only when pgGit "
            "was installed): loaded first, it becomes the root commit.",
        ),
    ] = None,
    shadow_replay_as_owner: Annotated[
        bool,
        typer.Option(
            "--shadow-replay-as-owner",
            help="With --shadow-dsn, when no throwaway role can replay there: replay as "
            "the DSN's own role. A risk: hostile history then acts as that role (alter "
            "it, end its sessions). Without it, such an export refuses.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite uncommitted changes in REPO's working tree. Without it, an "
            "export that would overwrite them refuses and names the files.",
        ),
    ] = False,
    no_repair: Annotated[
        bool,
        typer.Option(
            "--no-repair",
            help="Replay only what v1 recorded: no healing of failed changes from the live "
            "database. The session environment (each user's search_path, and the schemas "
            "it names) is still reproduced.",
        ),
    ] = False,
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="End with a commit 'Reconcile with live database' that makes the head equal "
            "the live schema.",
        ),
    ] = False,
    mirror: Annotated[
        bool,
        typer.Option("--mirror", help="Then mirror the repository into SOURCE's pgGit v2 tables."),
    ] = False,
    v2_schema: Annotated[
        str, typer.Option(help="The pgGit v2 schema to mirror into (newer installs: pggit_v0).")
    ] = "pggit_v2",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings.")] = False,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
) -> None:
    """Export the schema history of SOURCE into the git repository REPO.

    Every pggit.history change is replayed in a private shadow database (never
    in SOURCE, which is only read) and becomes one commit whose tree is the
    whole schema at that point, one file per object.

    Example:

        pggit-export export "postgresql://me@db.example.com/app" ./app-schema

        pggit-export export "postgresql://me@db.example.com/app" ./billing -n billing
    """
    with _errors_exit():
        check_conninfo(source, "SOURCE")
        check_conninfo(shadow_dsn, "--shadow-dsn")
        branch = branch_of(branch, repo)
        check_duration(statement_timeout, "--statement-timeout")
        size_limit = parse_size(shadow_size_limit)
        if size_limit is None:
            raise UsageMistake(f"--shadow-size-limit {shadow_size_limit!r} is not a size: a "
                               "number with a unit (B, kB, MB, GB, TB), e.g. 2GB")
        author_map = read_authors_file(authors) if authors else {}
        # Asked before the progress bar starts, which would draw over the prompt.
        secret = ask_password(source) if password else None
        shadow_dsn = with_password_if_same_server(shadow_dsn, source, secret)
        source = with_password(source, secret)
    with _errors_exit(), _progress(not quiet and not as_json, "Exporting") as progress:
        report = export_history(
            source,
            repo,
            ExportOptions(
                branch=branch,
                bare=bare,
                shadow_dsn=shadow_dsn,
                default_author=default_author,
                authors=author_map,
                object_format=object_format.value,
                commit_per=commit_per.value,
                schemas=tuple(schema or ()),
                exclude_schemas=(*DEFAULT_EXCLUDED_SCHEMAS, *(exclude_schema or ())),
                batch_commits=batch_size,
                statement_timeout=statement_timeout,
                shadow_size_limit=size_limit,
                max_sql_bytes=max_sql_bytes,
                dry_run=dry_run,
                strict=strict,
                repair=not no_repair,
                force=force,
                shadow_replay_as_owner=shadow_replay_as_owner,
                baseline=baseline,
                reconcile=reconcile,
                progress=progress,
            ),
        )
    mirrored = None
    if mirror and not dry_run:
        with _errors_exit(), _progress(not quiet and not as_json, "Mirroring", "commits") as (
            mirror_progress
        ):
            mirrored = mirror_repository(
                repo, source,
                MirrorOptions(v2_schema=v2_schema, branch=branch, progress=mirror_progress),
            )
    if as_json:
        summary = report.to_dict()
        if mirrored is not None:
            summary["mirror"] = mirrored.to_dict()
        _echo_json(summary)
    else:
        _echo(report.format_stderr(quiet), err=True)
        _echo(report.format_text(quiet))
        if mirrored is not None:
            _echo(mirrored.format_stderr(), err=True)
            _echo(mirrored.format_text(quiet))
    raise typer.Exit(report.exit_code)  # the mirror's is always 0: it raises, or is done


ExportedRepoArg = Annotated[
    Path,
    typer.Argument(metavar="REPO", help="A repository written by pggit-export export.",
                   show_default=False),
]
OptionalTargetArg = Annotated[
    Optional[str],
    typer.Argument(
        metavar="TARGET",
        help="An empty database to restore into: a libpq connection string or URI "
        "(not with --output).",
        show_default=False,
    ),
]
TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="Database holding (or to hold) the pgGit v2 and audit tables, usually the export's "
        "source: a libpq connection string or URI; '' uses the PG* environment variables.",
        show_default=False,
    ),
]
V2SchemaOption = Annotated[
    str, typer.Option(help="The pgGit v2 schema (newer pgGit installs call it pggit_v0).")
]


@app.command(name="mirror", epilog=MIRROR_EPILOG)
def mirror_command(
    repo: ExportedRepoArg,
    target: TargetArg,
    v2_schema: V2SchemaOption = "pggit_v2",
    branch: Annotated[Optional[str], typer.Option(help="Branch to mirror." + _BRANCH_DEFAULT)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings.")] = False,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
) -> None:
    """Mirror an exported repository into pgGit's v2 and audit tables in TARGET.

    Every git object, tree entry and commit goes into the v2 tables (creating
    them if missing), the branch into refs, and one audit change per object a
    commit created, altered or dropped into pggit_audit. Existing rows are never
    changed; a rerun adds only what is new. One transaction; an advisory lock
    keeps two mirrors of one target apart.

    Example:

        pggit-export mirror ./app-schema "postgresql://me@db.example.com/app"
    """
    with _errors_exit():
        check_conninfo(target, "TARGET")
        branch = branch_of(branch, repo)
        target = with_password(target, ask_password(target) if password else None)
    with _errors_exit(), _progress(not quiet and not as_json, "Mirroring", "commits") as progress:
        report = mirror_repository(
            repo, target, MirrorOptions(v2_schema=v2_schema, branch=branch, progress=progress)
        )
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_stderr(), err=True)
        _echo(report.format_text(quiet))
    raise typer.Exit(report.exit_code)


@app.command(epilog=VERIFY_EPILOG)
def verify(
    repo: ExportedRepoArg,
    target: TargetArg,
    v2_schema: V2SchemaOption = "pggit_v2",
    branch: Annotated[Optional[str], typer.Option(help="Branch that was mirrored." + _BRANCH_DEFAULT)] = None,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Check the mirror in TARGET against the repository, and against what v1 recorded.

    Re-hashes every mirrored object the git way, compares every commit's parents
    and tree, refs and HEAD, tree entries and audit rows with git; then compares
    each table change's columns in the commit with the columns pggit.history
    recorded for it (new_metadata), listing mismatches by history id.

    Example:

        pggit-export verify ./app-schema "postgresql://me@db.example.com/app"
    """
    from pggit_export.mirror.verify import verify_mirror

    with _errors_exit():
        check_conninfo(target, "TARGET")
        branch = branch_of(branch, repo)
        target = with_password(target, ask_password(target) if password else None)
        report = verify_mirror(repo, target, MirrorOptions(v2_schema=v2_schema, branch=branch))
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_text())
    raise typer.Exit(report.exit_code)


@app.command(epilog=RESTORE_EPILOG)
def restore(
    repo: ExportedRepoArg,
    target: OptionalTargetArg = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o", metavar="FILE",
            help="Write the snapshot as one SQL script to FILE ('-': stdout) instead of "
            "restoring it; no TARGET then. Statements come in an order that loads (found by "
            "loading them into a private PostgreSQL first): psql -v ON_ERROR_STOP=1 -f FILE "
            "recreates the schema in an empty database, in one transaction.",
        ),
    ] = None,
    shadow_dsn: Annotated[
        Optional[str],
        typer.Option(
            "--shadow-dsn",
            help="With --output: find the load order on this server (in a scratch database "
            "created and dropped there) instead of a private PostgreSQL; for extensions the "
            "bundled server lacks.",
        ),
    ] = None,
    at: Annotated[
        Optional[str],
        typer.Option(
            help="The commit to restore: a revision (id, branch, tag, HEAD~3) or a date, "
            "meaning the last commit of --branch at or before it: 2024-01-31 (the end of that "
            "day, UTC), 2024-01-31T12:00:00+02:00, now, yesterday, '2 weeks ago' (also "
            "seconds, minutes, hours, days, months, years), or BRANCH@{DATE} and @{DATE} "
            "for another branch or --branch. Default: the branch's head.",
        ),
    ] = None,
    branch: Annotated[Optional[str], typer.Option(help="Branch to read." + _BRANCH_DEFAULT)] = None,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Recreate the schema of a commit in TARGET, an empty database, or write it as SQL.

    All in one transaction, in an order that satisfies dependencies: the target
    ends with the whole snapshot, or untouched. A target that already holds
    objects is refused. With --output, nothing is restored: the snapshot becomes
    one SQL script to read, review or load with psql.

    Example:

        createdb schema_then && pggit-export restore ./app-schema "dbname=schema_then" --at 2024-01-01

        pggit-export restore ./app-schema --at 'main@{2 weeks ago}' --output then.sql
    """
    from pggit_export.restore import snapshot_script

    with _errors_exit():
        if output is not None and target is not None:
            raise UsageMistake("give TARGET (a database to restore into) or --output FILE, not both")
        if output is None and target is None:
            raise UsageMistake("restore needs TARGET (an empty database) or --output FILE")
        if shadow_dsn is not None and output is None:
            raise UsageMistake("--shadow-dsn only orders an --output script; TARGET is "
                               "restored into directly")
        if as_json and output == "-":
            raise UsageMistake("--json and --output - would both write to stdout")
        check_conninfo(target, "TARGET")
        check_conninfo(shadow_dsn, "--shadow-dsn")
        branch = branch_of(branch, repo)
        connects_to = target if target is not None else shadow_dsn
        if password and connects_to is not None:  # without either, nothing connects
            secret = ask_password(connects_to)
            target = target and with_password(target, secret)
            shadow_dsn = shadow_dsn and with_password(shadow_dsn, secret)
    if output is not None:
        with _errors_exit():
            script = snapshot_script(repo, at=at, branch=branch, shadow_dsn=shadow_dsn)
            if output == "-":
                sys.stdout.write(script.sql)
                sys.stdout.flush()
                return
            _write_atomically(Path(output), script.sql)
        if as_json:
            _echo_json({**script.to_dict(), "output": output})
        else:
            _echo(script.format_text(output))
        raise typer.Exit(script.exit_code)
    assert target is not None  # checked above: TARGET or --output
    with _errors_exit(), _progress(not as_json, "Restoring", "statements") as progress:
        report = restore_snapshot(repo, target, at=at, branch=branch, progress=progress)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_text())
    raise typer.Exit(report.exit_code)


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a full disk or an interrupt leaves no
    half script that psql would load up to its cut."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command(epilog=DRIFT_EPILOG)
def drift(
    source: SourceArg,
    repo: ExportedRepoArg,
    branch: Annotated[Optional[str], typer.Option(help="Branch to compare." + _BRANCH_DEFAULT)] = None,
    at: Annotated[
        Optional[str],
        typer.Option(
            help="Compare with this commit instead of the branch's head: a revision or a "
            "date, as restore --at takes them.",
        ),
    ] = None,
    diff: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Print a unified diff per differing file, the history (a/) against the "
            "live schema (b/), as git diff does.",
        ),
    ] = False,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Compare SOURCE's live schema with the head of the exported history in REPO.

    Lists what exists live that the history never recorded (untracked commands,
    manual hotfixes), and what the history says exists but is gone. SOURCE is any
    database (the one exported, a restored copy, a staging database): pgGit need
    not be installed there. Reads SOURCE only. `export --reconcile` turns the
    drift into a commit.

    Example:

        pggit-export drift "postgresql://me@db.example.com/app" ./app-schema --diff
    """
    from pggit_export.drift import drift_report

    with _errors_exit():
        if diff and as_json:
            raise UsageMistake("give --diff or --json, not both")
        check_conninfo(source, "SOURCE")
        branch = branch_of(branch, repo)
        source = with_password(source, ask_password(source) if password else None)
        report = drift_report(source, repo, branch=branch, at=at)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_diff() if diff else report.format_text())  # no drift: no diff
    raise typer.Exit(report.exit_code)


@app.command(epilog=CHECK_EPILOG)
def check(
    source: SourceArg,
    shadow_dsn: Annotated[
        Optional[str],
        typer.Option(
            "--shadow-dsn",
            help="The server the export would replay on, to check extensions and roles "
            "against (default: the private PostgreSQL the export would start).",
        ),
    ] = None,
    max_sql_bytes: Annotated[
        int, typer.Option(min=1, help="The export's limit on history text size.")
    ] = DEFAULT_MAX_SQL_BYTES,
    authors: Annotated[
        Optional[Path],
        typer.Option(help="The authors file the export will use: list users it does not name."),
    ] = None,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Also replay the whole history as export would (same shadow, same "
            "repairs), writing nothing: the exit code is then export's. Takes as long "
            "as an export's replay.",
        ),
    ] = False,
    password: PasswordOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON on stdout.")
    ] = False,
) -> None:
    """Check SOURCE's history before exporting it; writes nothing anywhere.

    Reports rows with no time, user or SQL; objects history alters or drops but
    never creates (older than pgGit, or made by a command v1 does not record);
    names created again after a drop; times that go backwards against ids;
    statements the shadow cannot run (missing extensions or roles, refused
    statements) and object kinds the snapshot does not render. Texts alone cannot
    tell what a replay does: with --replay, the history is replayed as export
    would, and check exits 1 exactly when export would.

    Example:

        pggit-export check "postgresql://me@db.example.com/app" --json

        pggit-export check "postgresql://me@db.example.com/app" --replay
    """
    from pggit_export.check import check_history

    with _errors_exit():
        check_conninfo(source, "SOURCE")
        check_conninfo(shadow_dsn, "--shadow-dsn")
        author_map = read_authors_file(authors) if authors else None
        secret = ask_password(source) if password else None
        shadow_dsn = with_password_if_same_server(shadow_dsn, source, secret)
        source = with_password(source, secret)
        report = check_history(
            source, shadow_dsn=shadow_dsn, max_sql_bytes=max_sql_bytes, authors=author_map,
            replay=replay,
        )
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_text())
    raise typer.Exit(report.exit_code)


@app.command(epilog=DEMO_EPILOG)
def demo(
    directory: Annotated[
        Path, typer.Argument(
            metavar="DIRECTORY", help="Where to write the demo repository.", show_default=False
        )
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")
    ] = False,
) -> None:
    """Export a bundled, realistic pgGit history (a small shop's database) to DIRECTORY.

    Needs no PostgreSQL of your own: the tool starts a private one, loads the
    demo history into it and exports it. Then try the git commands it prints.

    Example:

        pggit-export demo ./shop-history && cd shop-history && git log --stat
    """
    from pggit_export.demo import run_demo

    with _errors_exit(), _progress(not quiet and not as_json, "Exporting demo") as progress:
        report = run_demo(directory, progress=progress)
    if as_json:
        _echo_json(report.to_dict())
    else:
        _echo(report.format_stderr(quiet), err=True)
        _echo(report.format_text(quiet))
    if not (quiet or as_json):
        typer.echo(
            "\nTry:\n"
            f"  cd {directory}\n"
            "  git log --stat\n"
            "  git log -p --follow public/customers.sql\n"
            "  git log -S email --oneline\n"
            "  git diff $(git rev-list -1 --before=2024-01-01 main) main -- public/\n"
            "  git blame public/orders.sql"
        )
    raise typer.Exit(report.exit_code)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: shadow stopped, its directory removed


def main() -> None:
    """Console entry point. SIGTERM (a service manager, `timeout`, cron's kill) ends the run
    the way SIGINT does, cleaning up, instead of leaving the shadow server's directory."""
    signal.signal(signal.SIGTERM, _terminate)
    # psycopg logs what it ignores while a connection closes mid-query (an interrupted run):
    # the command's own one line says what happened.
    psycopg_log = logging.getLogger("psycopg")
    psycopg_log.addHandler(logging.NullHandler())
    psycopg_log.propagate = False
    app(prog_name="pggit-export")  # also under `python -m pggit_export`
