"""Fidelity harness: how close is each exported snapshot to the real schema at that point?

    python bench/fidelity.py [--config NAME ...] [--json] [--no-repeat]

The fixture (``fixtures/fidelity/``, built by ``fixtures/fidelity/build.py``) is a pgGit v1
history with unrecorded changes, plus the truth after every transaction: ``pg_dump
--schema-only`` of the database the history was captured from. For every configuration
(``CONFIGS``: a set of ExportOptions), the harness loads ``history.sql`` into a private
server, exports it, and for every commit:

1. restores the commit's files into an empty database with ``restore.load_files``;
2. dumps that database with the truth's pg_dump flags (``build.dump_schema``);
3. normalises both dumps (``normalise_dump``) and counts the lines that differ
   (``lines_different``) from the truth of the commit's history point.

A *point* is a commit, named by its history ids. Its truth is the dump taken after the
transaction that wrote those rows (``steps.json`` maps history ids to steps). A commit that
names no history id (a reconciliation commit, say) is compared with the final truth, taken
after the last migration whether recorded or not.

Normalisation, applied to the truth and the restored dump alike: the text is split into
statements (sqlparse, which respects dollar quoting); in every statement, lines that are
empty or start with ``--`` (pg_dump's headers; also comment lines inside function bodies, on
both sides) are dropped and trailing blanks stripped; ``SET ...`` and ``SELECT
pg_catalog.set_config(...)`` statements are dropped; the statements are sorted by their
text. What remains is compared line by line (difflib, no junk heuristic): ``lines
different`` is the number of truth lines missing from the export plus the number of export
lines missing from the truth. Sorting statements makes pg_dump's ordering (which can depend
on OIDs, i.e. on creation order) irrelevant; the order of lines inside a statement (columns,
enum labels) is kept because it is part of the schema.

Functions are importable (tests/test_fidelity.py uses them); ``main`` is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import json
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import sqlparse
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
FIDELITY = ROOT / "fixtures" / "fidelity"
sys.path.insert(0, str(ROOT))

from pggit_export.export import ExportOptions, ExportReport, export_history
from pggit_export.git.message import parse_id_ranges, read_trailer
from pggit_export.restore import load_files
from pggit_export.shadow.server import EmbeddedServer, PostgresBinaries


def _load_build_module() -> ModuleType:
    """fixtures/fidelity/build.py (fixtures/ is not a package)."""
    name = "_fixtures_fidelity_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIDELITY / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


build = _load_build_module()


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class Config:
    """One way of running the export: ExportOptions fields to set, by name.

    A field ExportOptions does not have (yet) is ignored when its value is False, the
    feature's "off" (so "pure" runs before ``repair`` exists), and makes the configuration
    unavailable otherwise.
    """

    name: str
    options: Mapping[str, Any]
    description: str


CONFIGS: list[Config] = [
    Config("pure", {"repair": False}, "pure replay (--no-repair)"),
    Config("healed", {"repair": True}, "replay with repair"),
    Config("reconcile", {"repair": True, "reconcile": True}, "repair and --reconcile"),
]


def _option_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(ExportOptions)}


def config_available(config: Config) -> bool:
    """True when this pggit-export supports every option the configuration turns on."""
    fields = _option_fields()
    return all(name in fields or value is False for name, value in config.options.items())


def export_options(config: Config, shadow_dsn: str | None) -> ExportOptions:
    """The ExportOptions of a configuration, replaying in ``shadow_dsn``'s server.

    ``None``: in the export's own private server, as a user's export does by default.
    """
    if not config_available(config):
        raise ValueError(f"configuration {config.name!r} needs options this export lacks")
    fields = _option_fields()
    chosen = {name: value for name, value in config.options.items() if name in fields}
    return ExportOptions(shadow_dsn=shadow_dsn, **chosen)


def config_by_name(name: str) -> Config:
    """The configuration called ``name``."""
    for config in CONFIGS:
        if config.name == name:
            return config
    raise KeyError(name)


# --------------------------------------------------------------------------- comparison

_SESSION_STATEMENT = re.compile(r"^(SET\s|SELECT\s+pg_catalog\.set_config\s*\()", re.IGNORECASE)


def normalise_dump(text: str) -> list[str]:
    """A pg_dump text as comparable lines: see the module docstring, "Normalisation"."""
    statements = []
    for piece in sqlparse.split(text):
        lines = [
            line.rstrip()
            for line in piece.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ]
        if not lines or _SESSION_STATEMENT.match(lines[0]):
            continue
        statements.append("\n".join(lines))
    return [line for statement in sorted(statements) for line in statement.split("\n")]


def lines_different(truth: Sequence[str], got: Sequence[str]) -> int:
    """Lines of ``truth`` missing from ``got`` plus lines of ``got`` missing from ``truth``."""
    matcher = difflib.SequenceMatcher(a=truth, b=got, autojunk=False)
    return sum(
        (i2 - i1) + (j2 - j1)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    )


def diff_text(truth: Sequence[str], got: Sequence[str], context: int = 1) -> str:
    """A unified diff of two normalised dumps, for humans chasing a difference."""
    return "\n".join(
        difflib.unified_diff(list(truth), list(got), "truth", "export", n=context, lineterm="")
    )


# --------------------------------------------------------------------------- fixture


@dataclass(frozen=True)
class Step:
    """One transaction of the captured history (see fixtures/fidelity/build.py)."""

    step: int
    migration: str
    migration_index: int | None
    transaction: int
    first_id: int | None
    last_id: int | None


@dataclass
class Fixture:
    """The fidelity fixture: the source's SQL, its steps and the truth after each."""

    history_sql: str
    steps: list[Step]
    truths: list[str]  # pg_dump text per step
    postgresql: str

    @property
    def final_truth(self) -> str:
        return self.truths[-1]

    def step_of(self, history_id: int) -> Step:
        """The step (transaction) that wrote history row ``history_id``."""
        for step in self.steps:
            if step.first_id is not None and step.first_id <= history_id <= (step.last_id or 0):
                return step
        raise KeyError(history_id)


def load_fixture(directory: Path = FIDELITY) -> Fixture:
    """Read a built fidelity fixture (history.sql and steps.json)."""
    manifest = build.load_manifest(directory)
    keys = {f.name for f in dataclasses.fields(Step)}
    steps = [Step(**{k: v for k, v in entry.items() if k in keys}) for entry in manifest["steps"]]
    return Fixture(
        history_sql=(directory / "history.sql").read_text(encoding="utf-8"),
        steps=steps,
        truths=build.truth_texts(manifest),
        postgresql=manifest["postgresql"],
    )


# --------------------------------------------------------------------------- results


@dataclass
class PointResult:
    """One commit of one configuration, compared with its truth."""

    history_ids: list[int]
    step: int  # index into Fixture.steps; -1: compared with the final truth
    commit: str
    tree: str
    replay: str  # "ok", or the commit's Pggit-Replay trailer ("failed", "skipped")
    exact: bool  # False: the truth is the state after a later commit of the same step
    lines_different: int
    load_failures: int  # statements of the snapshot that did not load into the empty database

    @property
    def equal(self) -> bool:
        return self.lines_different == 0


@dataclass
class ConfigResult:
    """Every point of one configuration, plus its last commit against the final truth."""

    config: str
    description: str
    points: list[PointResult]
    final_lines_different: int
    report: dict[str, Any] = field(default_factory=dict)
    # Exported a second time a moment later: None if not checked, 0 if every commit id was the
    # same, else the 1-based number of the first point whose commit id changed.
    repeat_first_difference: int | None = None

    @property
    def equal_points(self) -> int:
        return sum(point.equal for point in self.points)

    @property
    def share_equal(self) -> float:
        return self.equal_points / len(self.points) if self.points else 0.0

    @property
    def failed_points(self) -> int:
        return sum(point.replay == "failed" for point in self.points)


@dataclass
class FidelityResult:
    """The harness's answer for every configuration run."""

    fixture: Fixture
    configs: list[ConfigResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "postgresql": self.fixture.postgresql,
            "configs": [
                {
                    "config": c.config,
                    "description": c.description,
                    "points": [
                        {
                            **dataclasses.asdict(p),
                            "equal": p.equal,
                            "migration": self.step_label(p.step),
                        }
                        for p in c.points
                    ],
                    "equal_points": c.equal_points,
                    "total_points": len(c.points),
                    "share_equal": round(c.share_equal, 4),
                    "failed_replays": c.failed_points,
                    "final_lines_different": c.final_lines_different,
                    "repeat_first_difference": c.repeat_first_difference,
                    "export_report": c.report,
                }
                for c in self.configs
            ],
        }

    def config(self, name: str) -> ConfigResult | None:
        """The result of the configuration called ``name``, if it was run."""
        return next((c for c in self.configs if c.config == name), None)

    def step_label(self, index: int) -> str:
        if index < 0:
            return "(final truth)"
        step = self.fixture.steps[index]
        return f"{step.migration}#{step.transaction}" if step.migration_index else step.migration


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Commit:
    id: str
    tree: str
    history_ids: list[int]
    replay: str


def _repository_commits(path: Path, branch: str = "main") -> tuple[Repo, list[_Commit]]:
    repo = Repo(str(path))
    commits = []
    sha: bytes | None = repo.refs[f"refs/heads/{branch}".encode()]  # type: ignore[index]
    while sha is not None:
        commit = repo[sha]
        assert isinstance(commit, Commit)
        message = commit.message.decode("utf-8", "replace")
        ids = read_trailer(message, "Pggit-History-Ids")
        if read_trailer(message, "Pggit-Baseline") is not None:
            # The schema before the history: no history point to compare it with (the
            # first changeset's commit shows it at the first point).
            sha = commit.parents[0] if commit.parents else None
            continue
        commits.append(
            _Commit(
                id=sha.decode(),
                tree=commit.tree.decode(),
                history_ids=parse_id_ranges(ids) if ids else [],
                replay=read_trailer(message, "Pggit-Replay") or "ok",
            )
        )
        sha = commit.parents[0] if commit.parents else None
    commits.reverse()
    return repo, commits


def _tree_files(repo: Repo, tree_id: str) -> dict[str, str]:
    """Every file of a snapshot tree (schema directories of SQL files)."""
    files = {}
    root = repo[tree_id.encode()]
    assert isinstance(root, Tree)
    for entry in root.items():
        sub = repo[entry.sha]
        assert isinstance(sub, Tree)
        for item in sub.items():
            blob = repo[item.sha]
            assert isinstance(blob, Blob)
            files[f"{entry.path.decode()}/{item.path.decode()}"] = blob.data.decode("utf-8")
    return files


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def restore_and_dump(
    admin_dsn: str, binaries: PostgresBinaries, files: Mapping[str, str]
) -> tuple[str, int]:
    """Load a snapshot into a new empty database and pg_dump it; (dump, load failures)."""
    name = f"fidelity_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    with _dropped(admin_dsn, name):
        dsn = _dsn_for(admin_dsn, name)
        with psycopg.connect(dsn) as conn:
            result = load_files(conn, files)
        return build.dump_schema(binaries, dsn), len(result.failures)


@contextmanager
def _dropped(admin_dsn: str, dbname: str) -> Iterator[None]:
    """Drop a database when the block ends."""
    try:
        yield
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


def load_source(admin_dsn: str, fixture: Fixture, dbname: str) -> str:
    """Create the source database from the fixture's history.sql; its connection string."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname)))
    dsn = _dsn_for(admin_dsn, dbname)
    with psycopg.connect(dsn) as conn:
        conn.execute(fixture.history_sql.encode())
    return dsn


def run_fidelity(
    admin_dsn: str,
    binaries: PostgresBinaries,
    configs: Iterable[Config],
    fixture: Fixture | None = None,
    workdir: Path | None = None,
    jobs: int = 4,
    repeat: bool = False,
    private_shadow: bool = False,
    make_source: Callable[[str, Fixture, str], str] | None = None,
) -> FidelityResult:
    """Export the fixture once per configuration and compare every commit with its truth.

    ``admin_dsn`` is a superuser on a server whose pg_dump is ``binaries``; the source,
    shadows and restore databases are all created there. Repositories go to ``workdir``
    (a temporary directory when None). With ``repeat``, every configuration is exported a
    second time and the commit ids compared: a clock literal replayed as the replay's own
    'now' changes them (a 'today' only does across midnight). With ``private_shadow`` the
    export replays in its own private server (what a user gets by default; its PostgreSQL
    version may differ from the source's) instead of ``admin_dsn``'s. ``make_source``
    (admin dsn, fixture, database name -> the source's dsn) replaces ``load_source``.
    """
    shadow_dsn = None if private_shadow else admin_dsn
    fixture = fixture or load_fixture()
    source_db = f"fidelity_source_{uuid.uuid4().hex[:12]}"
    source = (make_source or load_source)(admin_dsn, fixture, source_db)
    truth_lines = [normalise_dump(text) for text in fixture.truths]
    with tempfile.TemporaryDirectory(prefix="pggit-fidelity-") as tmp, _dropped(
        admin_dsn, source_db
    ):
        base = workdir or Path(tmp)
        results = []
        restored: dict[str, tuple[list[str], int]] = {}  # tree id -> (normalised dump, failures)
        for config in configs:
            repo_path = base / config.name
            report: ExportReport = export_history(
                source, repo_path, export_options(config, shadow_dsn)
            )
            repo, commits = _repository_commits(repo_path)
            todo = {c.tree for c in commits if c.tree not in restored}
            trees = sorted(todo)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                dumps = pool.map(
                    restore_and_dump,
                    [admin_dsn] * len(trees),
                    [binaries] * len(trees),
                    [_tree_files(repo, tree) for tree in trees],
                )
                for tree, (dump, failures) in zip(trees, dumps):
                    restored[tree] = (normalise_dump(dump), failures)
            points = []
            for commit in commits:
                got, failures = restored[commit.tree]
                if commit.history_ids:
                    step = fixture.step_of(commit.history_ids[-1])
                    index, exact = step.step, commit.history_ids[-1] == step.last_id
                    truth = truth_lines[index]
                else:
                    index, exact, truth = -1, True, truth_lines[-1]
                points.append(
                    PointResult(
                        history_ids=commit.history_ids,
                        step=index,
                        commit=commit.id,
                        tree=commit.tree,
                        replay=commit.replay,
                        exact=exact,
                        lines_different=lines_different(truth, got),
                        load_failures=failures,
                    )
                )
            final = restored[commits[-1].tree][0] if commits else []
            results.append(
                ConfigResult(
                    config=config.name,
                    description=config.description,
                    points=points,
                    final_lines_different=lines_different(truth_lines[-1], final),
                    report=report.to_dict(),
                    repeat_first_difference=(
                        _first_difference(source, shadow_dsn, config, base, commits)
                        if repeat
                        else None
                    ),
                )
            )
            repo.close()
    return FidelityResult(fixture=fixture, configs=results)


def _first_difference(
    source: str, shadow_dsn: str | None, config: Config, base: Path, commits: list[_Commit]
) -> int:
    """Export again; 0 if the commit ids are the same, else the first differing point."""
    again = base / f"{config.name}-again"
    export_history(source, again, export_options(config, shadow_dsn))
    repo, second = _repository_commits(again)
    repo.close()
    for number, (a, b) in enumerate(zip(commits, second), 1):
        if a.id != b.id:
            return number
    return 0 if len(commits) == len(second) else min(len(commits), len(second)) + 1


def target_violations(
    result: FidelityResult, pure: str = "pure", healed: str = "healed", final: str = "reconcile"
) -> list[str]:
    """The issue's targets that the run misses (empty: all met, or nothing to compare).

    1. The healed replay is never farther from the truth than pure replay, at any point.
    2. From the first repair on (the first point whose healed tree differs from the pure
       one), it is strictly closer wherever the pure replay failed.
    3. With reconciliation, the last commit equals the final truth.
    """
    problems = []
    base, other = result.config(pure), result.config(healed)
    if base is not None and other is not None:
        theirs = {tuple(p.history_ids): p for p in other.points}
        repaired = False
        for point in base.points:
            mate = theirs.get(tuple(point.history_ids))
            if mate is None:
                problems.append(f"{healed} has no commit for history ids {_ids(point.history_ids)}")
                continue
            repaired = repaired or mate.tree != point.tree
            where = f"history ids {_ids(point.history_ids)} ({result.step_label(point.step)})"
            if mate.lines_different > point.lines_different:
                problems.append(
                    f"{where}: {healed} is {mate.lines_different} lines off, "
                    f"{pure} {point.lines_different}"
                )
            elif (
                repaired
                and point.replay == "failed"
                and mate.lines_different >= point.lines_different
            ):
                problems.append(f"{where}: {pure} failed and {healed} is no closer")
    last = result.config(final)
    if last is not None and last.final_lines_different:
        problems.append(
            f"{final}: the last commit is {last.final_lines_different} lines off the final truth"
        )
    return problems


# --------------------------------------------------------------------------- output


def _ids(ids: list[int]) -> str:
    if not ids:
        return "-"
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"


def _cell(point: PointResult | None) -> str:
    if point is None:
        return ""
    text = "equal" if point.equal else str(point.lines_different)
    if point.replay == "failed":
        text += " F"
    if not point.exact:
        text += " ~"
    return text


def format_table(result: FidelityResult) -> str:
    """The per-point table and the totals, as Markdown."""
    names = [c.config for c in result.configs]
    by_key: dict[tuple[int, ...], dict[str, PointResult]] = {}
    steps: dict[tuple[int, ...], int] = {}
    for config in result.configs:
        for point in config.points:
            key = tuple(point.history_ids)
            by_key.setdefault(key, {})[config.config] = point
            steps[key] = point.step
    header = ["point", "history ids", "migration (transaction)", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for number, key in enumerate(sorted(by_key, key=lambda k: (not k, k)), 1):
        row = [str(number), _ids(list(key)), result.step_label(steps[key])]
        row += [_cell(by_key[key].get(name)) for name in names]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("| configuration | equal points | share equal | failed replays "
                 "| last commit vs final truth | exported twice |")
    lines.append("|---|---|---|---|---|---|")
    for config in result.configs:
        final = "equal" if config.final_lines_different == 0 else (
            f"{config.final_lines_different} lines different"
        )
        if config.repeat_first_difference is None:
            repeat = "not checked"
        elif config.repeat_first_difference == 0:
            repeat = "same commit ids"
        else:
            repeat = f"commit ids differ from point {config.repeat_first_difference}"
        lines.append(
            f"| {config.config} ({config.description}) | {config.equal_points} of "
            f"{len(config.points)} | {config.share_equal:.0%} | {config.failed_points} | {final} "
            f"| {repeat} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--config",
        action="append",
        choices=[c.name for c in CONFIGS],
        help="configuration to run (repeatable; default: every one this export supports)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--jobs", type=int, default=4, help="snapshots restored in parallel")
    parser.add_argument(
        "--no-repeat", action="store_true", help="skip the second export (commit id stability)"
    )
    args = parser.parse_args(argv)
    if args.config:
        configs = [config_by_name(name) for name in args.config]
        unavailable = [c.name for c in configs if not config_available(c)]
        if unavailable:
            parser.error(f"not supported by this pggit-export yet: {', '.join(unavailable)}")
    else:
        configs = [c for c in CONFIGS if config_available(c)]
    fixture = load_fixture()
    with EmbeddedServer() as server:
        result = run_fidelity(
            server.conninfo("postgres"),
            server.binaries,
            configs,
            fixture,
            jobs=args.jobs,
            repeat=not args.no_repeat,
        )
    if args.json:
        print(json.dumps({**result.to_dict(), "targets_missed": target_violations(result)}, indent=1))
    else:
        print(format_table(result))
        problems = target_violations(result)
        if problems:
            print("\nTargets missed:\n" + "\n".join(f"- {p}" for p in problems))
        print()
        print("Cells: lines different from the truth, or 'equal'; F = the commit's replay "
              "failed; ~ = not the last commit of its transaction (inexact truth).")


if __name__ == "__main__":
    main()
