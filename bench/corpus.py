"""Per-point fidelity on the real-history corpus (fixtures/corpus/, issues 13 and 14).

    python bench/corpus.py [--history NAME ...] [--shadow private|source] [--source dump|captured]
                           [--json] [--jobs N]

Every corpus history (``fixtures/corpus/<project>-<mode>-pg<major>/``: real published
migration sets captured under v1's triggers, with the truth after every transaction; see
fixtures/corpus/README.md) goes through bench/fidelity.py's comparison, unchanged: export
with configurations ``pure`` (``--no-repair``) and ``healed`` (the default), restore every
commit into an empty database, ``pg_dump -s`` it and count the lines that differ from the
truth at that history point.

The yardstick of the issues is a **naive replay** of the recorded SQL, which the export's
pure mode no longer is (it replays under each user's search_path, for one): so every history
is also replayed without the tool (``naive_replay``): in a new empty database of the same
server, as superuser with the default settings, each changeset's ``sql_executed`` (read from
the loaded source with plain SQL; changeset = consecutive rows sharing text, time and author,
in (created_at, id) order) runs once in its own transaction, rolled back on error; changesets
of pgGit's own schemas (its install) are skipped, as the export skips them. After each
changeset the database is dumped and compared exactly as the restored commits are. Naive
points pair with the export's commits by history ids (a commit is one changeset).

The source database, the restores and the dumps run on a server of the source's major
version: the embedded PostgreSQL 18, or the machine's ``/usr/lib/postgresql/<major>/bin``
(``--pg-bin MAJOR=DIR`` to point elsewhere), since truths dumped by one major only compare
with dumps of the same major. The export replays (``--shadow``):

``private`` (default)
    in its own private server, as a user's export does by default (PostgreSQL 18 today,
    whatever the source's version: issue 13's cause 4 shows in the pg15 rows);
``source``
    on the source's server, i.e. in the source's major version.

The source (``--source``): ``dump`` (default) loads each history.sql, so the objects get new
OIDs and the OIDs the rows recorded are stale, as in a source that was dumped and restored
(the export's OID chronology then says so and is not used); ``captured`` captures the
project's migrations again, in the history's send mode, into the source database (the
truths stay steps.json's; the capture must write the same steps): the recorded OIDs are the
live objects' own, as in a source that kept them, and the OID chronology dates what no row
records.

Per history the table gives: points (commits compared), points equal to the truth for
naive, pure and healed, points where healed is farther from the truth (more differing
lines) than naive and than pure, mean differing lines per point for each, and failed
replays (naive: points whose changeset raised an error). ``--json`` adds every point, with
the naive replay's lines, status and error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "corpus"
CONFIGS = ("pure", "healed")


def _load_fidelity() -> ModuleType:
    """bench/fidelity.py (bench/ is not a package)."""
    name = "_bench_fidelity"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "fidelity.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fidelity = _load_fidelity()


def history_names() -> list[str]:
    """Every built corpus history (a directory holding steps.json), by name."""
    return sorted(p.parent.name for p in CORPUS.glob("*/steps.json"))


# --------------------------------------------------------------------------- naive replay
#
# The yardstick of issues 13 and 14: what a user gets by running the recorded SQL as it is,
# without this tool. Nothing here uses pggit_export (its reader, shadow or replay), so the
# baseline does not move when the export changes; only the comparison (bench/fidelity.py's
# dump flags, normalisation and line count) is shared, so that the columns compare.

PGGIT_SCHEMAS = frozenset({"pggit", "pggit_v0", "pggit_v2", "pggit_audit"})

NAIVE_ROWS = """
SELECT h.id, h.sql_executed, h.created_at, h.created_by, o.schema_name
FROM pggit.history AS h
LEFT JOIN pggit.objects AS o ON o.id = h.object_id
ORDER BY h.created_at, h.id
"""

# A text that may end its own transaction (COMMIT; BEGIN; ...) can leave part of itself
# committed when a later statement fails: such a failed changeset is dumped again rather
# than assumed to have changed nothing. Conservative (END and BEGIN also close and open
# PL/pgSQL blocks): a false match only costs a dump.
_TRANSACTION_CONTROL = re.compile(r"\b(commit|end|rollback|abort)\b", re.IGNORECASE)


@dataclass
class NaiveChangeset:
    """Consecutive pggit.history rows sharing sql_executed, created_at and created_by."""

    history_ids: list[int]
    text: str | None
    own: bool  # every row names an object in one of pgGit's own schemas (its install)


def naive_changesets(source_dsn: str) -> list[NaiveChangeset]:
    """The source's changesets in history order (created_at, id), read with plain SQL.

    A row without a created_at never joins a changeset (no evidence of one transaction),
    as in the export; rows whose object is gone from pggit.objects count as not pgGit's own.
    """
    with psycopg.connect(source_dsn) as conn:
        rows = conn.execute(NAIVE_ROWS).fetchall()
    changesets: list[NaiveChangeset] = []
    previous: tuple[Any, ...] | None = None
    for history_id, text, created_at, created_by, schema in rows:
        key = (text, created_at, created_by)
        own = schema in PGGIT_SCHEMAS
        if changesets and created_at is not None and key == previous:
            changesets[-1].history_ids.append(history_id)
            changesets[-1].own = changesets[-1].own and own
        else:
            changesets.append(NaiveChangeset([history_id], text, own))
        previous = key
    return changesets


@dataclass
class NaivePoint:
    """The naive replay's database right after one changeset, compared with its truth."""

    history_ids: list[int]
    step: int  # index into the fixture's steps (the truth compared with)
    replay: str  # "ok", "failed" (rolled back), "skipped" (pgGit's own), "empty" (no SQL)
    error: str | None
    lines_different: int

    @property
    def equal(self) -> bool:
        return self.lines_different == 0


def _create_database(admin_dsn: str, name: str, template: str = "template0") -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


@dataclass
class NaiveResult:
    """Every point of a naive replay, and its last state against the final truth."""

    points: list[NaivePoint]
    final_lines_different: int

    def point_for(self, history_ids: Sequence[int]) -> NaivePoint | None:
        """The point of a commit's history ids: the changeset holding its last id."""
        if not history_ids:
            return None
        for point in self.points:
            if history_ids[-1] in point.history_ids:
                return point
        return None


def _run_naively(dsn: str, text: str) -> str | None:
    """Run one changeset's text once, in one transaction of a fresh session (so a SET in one
    migration does not leak into the next, as with one ``psql`` run per migration file);
    roll back on error. None, or the error's first line."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(text)
        except psycopg.Error as exc:
            conn.rollback()
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        conn.commit()
    return None


def naive_replay(admin_dsn: str, binaries: Any, fixture: Any) -> NaiveResult:
    """Replay the fixture's recorded SQL naively; one point per changeset, in history order.

    In a new empty database of ``admin_dsn``'s server, as that superuser, under the default
    session settings: every changeset's sql_executed once, in its own transaction (rolled
    back on error, then on to the next); changesets that only touch pgGit's own schemas (its
    install) are skipped, as the export skips them. After each changeset the database is
    dumped like the truths (a changeset that changed nothing reuses the dump before it) and
    compared with the truth of the step that wrote its last history row.

    Sequential on purpose: a dump takes some 40 ms; the time goes into normalising dumps
    (sqlparse), which threads would not speed up, so identical texts are normalised once.
    """
    tag = uuid.uuid4().hex[:12]
    source_db, target_db = f"naive_source_{tag}", f"naive_{tag}"
    source = fidelity.load_source(admin_dsn, fixture, source_db)
    with fidelity._dropped(admin_dsn, source_db):
        changesets = naive_changesets(source)
    normalised: dict[str, list[str]] = {}

    def normalise(text: str) -> list[str]:
        if text not in normalised:
            normalised[text] = fidelity.normalise_dump(text)
        return normalised[text]

    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target_db))
        )
    target = fidelity._dsn_for(admin_dsn, target_db)
    points = []
    with fidelity._dropped(admin_dsn, target_db):
        state = fidelity.build.dump_schema(binaries, target)  # before anything ran
        for changeset in changesets:
            error = None
            if changeset.own:
                replay = "skipped"
            elif not (changeset.text or "").strip():
                replay = "empty"
            else:
                error = _run_naively(target, changeset.text or "")
                replay = "ok" if error is None else "failed"
                if error is None or _TRANSACTION_CONTROL.search(changeset.text or ""):
                    state = fidelity.build.dump_schema(binaries, target)
            step = fixture.step_of(changeset.history_ids[-1]).step
            points.append(
                NaivePoint(
                    history_ids=changeset.history_ids,
                    step=step,
                    replay=replay,
                    error=error,
                    lines_different=fidelity.lines_different(
                        normalise(fixture.truths[step]), normalise(state)
                    ),
                )
            )
        final = fidelity.lines_different(normalise(fixture.final_truth), normalise(state))
    return NaiveResult(points=points, final_lines_different=final)


@dataclass
class HistorySummary:
    """One history's figures."""

    history: str
    postgresql: str  # the source's version (the truths' pg_dump)
    shadow: str  # "private" or "source"
    points: int
    naive_equal: int
    pure_equal: int
    healed_equal: int
    healed_worse_than_naive: int  # points where healed differs by more lines than naive
    healed_worse: int  # points where healed differs by more lines than pure
    naive_mean_lines: float
    pure_mean_lines: float
    healed_mean_lines: float
    naive_failed: int  # changesets of the points that raised an error and were rolled back
    pure_failed: int
    healed_failed: int
    naive_unmatched: int  # export points whose history ids are not one naive changeset's
    seconds: float
    naive_seconds: float

    def row(self) -> str:
        n = self.points
        return (
            f"| {self.history} | {n} | {self.naive_equal}/{n} | {self.pure_equal}/{n} "
            f"| {self.healed_equal}/{n} | {self.healed_worse_than_naive} | {self.healed_worse} "
            f"| {self.naive_mean_lines:.1f} | {self.pure_mean_lines:.1f} "
            f"| {self.healed_mean_lines:.1f} | {self.naive_failed} | {self.pure_failed} "
            f"| {self.healed_failed} |"
        )


TABLE_HEADER = (
    "| history | points | naive equal | pure equal | healed equal | healed worse than naive "
    "| healed worse than pure | mean lines off (naive) | mean lines off (pure) "
    "| mean lines off (healed) | failed (naive) | failed (pure) | failed (healed) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _naive_lines(naive: NaiveResult, history_ids: Sequence[int]) -> int:
    """Lines off of the naive point matching a commit (the final state for no history id)."""
    point = naive.point_for(history_ids)
    if point is None:
        return naive.final_lines_different
    return point.lines_different


def summarise(
    name: str, result: Any, naive: NaiveResult, shadow: str, seconds: float, naive_seconds: float
) -> HistorySummary:
    """The table row of one history from bench/fidelity.py's FidelityResult and the naive
    replay; the points are the export's commits (pure and healed have the same ones)."""
    pure, healed = result.config("pure"), result.config("healed")
    theirs = {tuple(p.history_ids): p for p in healed.points}
    worse = 0
    for point in pure.points:
        mate = theirs.get(tuple(point.history_ids))
        if mate is None or mate.lines_different > point.lines_different:
            worse += 1
    naive_lines = [_naive_lines(naive, p.history_ids) for p in healed.points]
    matched = [naive.point_for(p.history_ids) for p in healed.points]
    return HistorySummary(
        history=name,
        postgresql=result.fixture.postgresql,
        shadow=shadow,
        points=len(pure.points),
        naive_equal=sum(lines == 0 for lines in naive_lines),
        pure_equal=pure.equal_points,
        healed_equal=healed.equal_points,
        healed_worse_than_naive=sum(
            p.lines_different > lines for p, lines in zip(healed.points, naive_lines)
        ),
        healed_worse=worse,
        naive_mean_lines=_mean(naive_lines),
        pure_mean_lines=_mean(p.lines_different for p in pure.points),
        healed_mean_lines=_mean(p.lines_different for p in healed.points),
        naive_failed=sum(m is not None and m.replay == "failed" for m in matched),
        pure_failed=pure.failed_points,
        healed_failed=healed.failed_points,
        naive_unmatched=sum(
            m is None or m.history_ids != list(p.history_ids)
            for m, p in zip(matched, healed.points)
            if p.history_ids
        ),
        seconds=round(seconds, 1),
        naive_seconds=round(naive_seconds, 1),
    )


def _mean(values: Iterable[int]) -> float:
    items = list(values)
    return round(statistics.fmean(items), 1) if items else 0.0


def point_rows(result: Any, naive: NaiveResult) -> list[dict[str, Any]]:
    """Per point: history ids, migration, lines off and replay status per configuration
    and for the naive replay (its error, if it raised one)."""
    rows: dict[tuple[int, ...], dict[str, Any]] = {}
    for config in result.configs:
        for point in config.points:
            key = tuple(point.history_ids)
            row = rows.setdefault(
                key,
                {
                    "history_ids": fidelity._ids(point.history_ids),
                    "migration": result.step_label(point.step),
                    "exact": point.exact,
                },
            )
            row[config.config] = {
                "lines_different": point.lines_different,
                "replay": point.replay,
                "load_failures": point.load_failures,
            }
    for key, row in rows.items():
        mate = naive.point_for(key)
        row["naive"] = {
            "lines_different": _naive_lines(naive, key),
            "replay": mate.replay if mate else "(final state)",
            "error": mate.error if mate else None,
            "history_ids": fidelity._ids(mate.history_ids) if mate else "-",
        }
    return [rows[k] for k in sorted(rows, key=lambda k: (not k, k))]


def _binaries_for(major: int, overrides: dict[int, Path]) -> Any:
    """PostgresBinaries of a server of ``major``: the embedded one, or the machine's."""
    if major in overrides:
        bindir = overrides[major]
    else:
        embedded = fidelity.EmbeddedServer().binaries
        if embedded.major == major:
            return embedded
        bindir = Path(f"/usr/lib/postgresql/{major}/bin")
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out)
    if match is None:
        raise SystemExit(f"{bindir}/postgres: cannot read its version from {out!r}")
    return fidelity.PostgresBinaries(bindir=bindir, version=match.group(1))


def captured_source(server: Any, name: str) -> Any:
    """A ``make_source`` for bench/fidelity.py that captures history ``name`` again (its
    project's migrations, its send mode) into the new database, instead of loading its
    history.sql: the rows then record the OIDs the live objects really have, as in a
    source that was never dumped and restored (OID chronology usable)."""
    project, mode = re.fullmatch(r"(.+?)-(batch|psql-f)-pg\d+", name).groups()  # type: ignore[union-attr]
    module = fidelity.build.load_migration_module(CORPUS / project / "migrations.py")

    def make(admin_dsn: str, fixture: Any, dbname: str) -> str:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            cluster_sql = getattr(module, "CLUSTER_SQL", "") or ""
            if cluster_sql:
                admin.execute(cluster_sql.encode())
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                sql.Identifier(dbname)))
        capture = fidelity.build.capture_with_truths(server, module, mode, database=dbname,
                                                     with_truths=False)
        recorded = [(s.first_id, s.last_id) for s in capture.steps]
        expected = [(s.first_id, s.last_id) for s in fixture.steps]
        if recorded != expected:
            raise SystemExit(f"{name}: the capture's steps differ from steps.json")
        return fidelity._dsn_for(admin_dsn, dbname)

    return make


def run_corpus(
    names: Sequence[str],
    shadow: str = "private",
    jobs: int = 4,
    pg_bins: dict[int, Path] | None = None,
    points: bool = False,
    source: str = "dump",
) -> list[dict[str, Any]]:
    """Run the fidelity comparison on each named history; one dict per history. `source`:
    ``dump`` loads each history.sql (a source dumped and restored: its recorded OIDs are
    stale), ``captured`` captures it again (OIDs as recorded; see captured_source)."""
    configs = [fidelity.config_by_name(name) for name in CONFIGS]
    fixtures = {name: fidelity.load_fixture(CORPUS / name) for name in names}
    by_major: dict[int, list[str]] = {}
    for name in names:
        by_major.setdefault(int(fixtures[name].postgresql.split(".")[0]), []).append(name)
    out: dict[str, dict[str, Any]] = {}
    for major, group in sorted(by_major.items()):
        binaries = _binaries_for(major, pg_bins or {})
        with fidelity.EmbeddedServer(binaries) as server:
            for name in group:
                started = time.monotonic()
                result = fidelity.run_fidelity(
                    server.conninfo("postgres"),
                    server.binaries,
                    configs,
                    fixtures[name],
                    jobs=jobs,
                    private_shadow=shadow == "private",
                    make_source=captured_source(server, name) if source == "captured" else None,
                )
                exported = time.monotonic()
                naive = naive_replay(server.conninfo("postgres"), server.binaries, fixtures[name])
                summary = summarise(
                    name, result, naive, shadow, exported - started, time.monotonic() - exported
                )
                entry: dict[str, Any] = {"summary": summary}
                if points:
                    entry["points"] = point_rows(result, naive)
                out[name] = entry
                print(
                    f"{name}: {summary.seconds} s export and compare, "
                    f"{summary.naive_seconds} s naive replay",
                    file=sys.stderr,
                )
                if summary.naive_unmatched:
                    print(
                        f"{name}: {summary.naive_unmatched} points are not exactly one naive "
                        "changeset (compared with the changeset holding their last id)",
                        file=sys.stderr,
                    )
    return [out[name] for name in names]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    available = history_names()
    parser.add_argument(
        "--history", action="append", choices=available, help="history to run (repeatable)"
    )
    parser.add_argument("--shadow", choices=["private", "source"], default="private")
    parser.add_argument("--jobs", type=int, default=4, help="snapshots restored in parallel")
    parser.add_argument(
        "--pg-bin", action="append", default=[], metavar="MAJOR=DIR",
        help="server binaries for sources of that major (default: embedded or the machine's)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, with every point")
    parser.add_argument(
        "--source", choices=["dump", "captured"], default="dump",
        help="dump: load each history.sql (recorded OIDs stale, as after a dump and restore);"
             " captured: capture the migrations again (recorded OIDs true)",
    )
    args = parser.parse_args(argv)
    pg_bins = {}
    for item in args.pg_bin:
        major, _, directory = item.partition("=")
        pg_bins[int(major)] = Path(directory)
    results = run_corpus(
        args.history or available, args.shadow, args.jobs, pg_bins, points=args.json,
        source=args.source,
    )
    if args.json:
        print(
            json.dumps(
                [{**r, "summary": vars(r["summary"])} for r in results], indent=1
            )
        )
        return
    print(f"Shadow: {args.shadow}; source: {args.source}\n")
    print(TABLE_HEADER)
    for r in results:
        print(r["summary"].row())


if __name__ == "__main__":
    main()
