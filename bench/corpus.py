"""Per-point fidelity on the real-history corpus (fixtures/corpus/, issues 13 and 14).

    python bench/corpus.py [--history NAME ...] [--shadow private|source] [--json] [--jobs N]

Every corpus history (``fixtures/corpus/<project>-<mode>-pg<major>/``: real published
migration sets captured under v1's triggers, with the truth after every transaction; see
fixtures/corpus/README.md) goes through bench/fidelity.py's comparison, unchanged: export
with configurations ``pure`` (no repair, close to a naive replay of the recorded SQL) and
``healed``, restore every commit into an empty database, ``pg_dump -s`` it and count the
lines that differ from the truth at that history point.

The source database, the restores and the dumps run on a server of the source's major
version: the embedded PostgreSQL 18, or the machine's ``/usr/lib/postgresql/<major>/bin``
(``--pg-bin MAJOR=DIR`` to point elsewhere), since truths dumped by one major only compare
with dumps of the same major. The export replays (``--shadow``):

``private`` (default)
    in its own private server, as a user's export does by default (PostgreSQL 18 today,
    whatever the source's version: issue 13's cause 4 shows in the pg15 rows);
``source``
    on the source's server, i.e. in the source's major version.

Per history the table gives: points (commits compared), points equal to the truth for
pure and for healed, points where healed is farther from the truth than pure (more
differing lines), mean differing lines per point for both, and failed replays.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

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


@dataclass
class HistorySummary:
    """One history's figures."""

    history: str
    postgresql: str  # the source's version (the truths' pg_dump)
    shadow: str  # "private" or "source"
    points: int
    pure_equal: int
    healed_equal: int
    healed_worse: int  # points where healed differs by more lines than pure
    pure_mean_lines: float
    healed_mean_lines: float
    pure_failed: int
    healed_failed: int
    seconds: float

    def row(self) -> str:
        return (
            f"| {self.history} | {self.points} | {self.pure_equal}/{self.points} "
            f"| {self.healed_equal}/{self.points} | {self.healed_worse} "
            f"| {self.pure_mean_lines:.1f} | {self.healed_mean_lines:.1f} "
            f"| {self.pure_failed} | {self.healed_failed} |"
        )


TABLE_HEADER = (
    "| history | points | pure equal | healed equal | healed worse than pure "
    "| mean lines off (pure) | mean lines off (healed) | failed replays (pure) "
    "| failed replays (healed) |\n|---|---|---|---|---|---|---|---|---|"
)


def summarise(name: str, result: Any, shadow: str, seconds: float) -> HistorySummary:
    """The table row of one history from bench/fidelity.py's FidelityResult."""
    pure, healed = result.config("pure"), result.config("healed")
    theirs = {tuple(p.history_ids): p for p in healed.points}
    worse = 0
    for point in pure.points:
        mate = theirs.get(tuple(point.history_ids))
        if mate is None or mate.lines_different > point.lines_different:
            worse += 1
    return HistorySummary(
        history=name,
        postgresql=result.fixture.postgresql,
        shadow=shadow,
        points=len(pure.points),
        pure_equal=pure.equal_points,
        healed_equal=healed.equal_points,
        healed_worse=worse,
        pure_mean_lines=_mean(p.lines_different for p in pure.points),
        healed_mean_lines=_mean(p.lines_different for p in healed.points),
        pure_failed=pure.failed_points,
        healed_failed=healed.failed_points,
        seconds=round(seconds, 1),
    )


def _mean(values: Iterable[int]) -> float:
    items = list(values)
    return round(statistics.fmean(items), 1) if items else 0.0


def point_rows(result: Any) -> list[dict[str, Any]]:
    """Per point: history ids, migration, lines off and replay status per configuration."""
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


def run_corpus(
    names: Sequence[str],
    shadow: str = "private",
    jobs: int = 4,
    pg_bins: dict[int, Path] | None = None,
    points: bool = False,
) -> list[dict[str, Any]]:
    """Run the fidelity comparison on each named history; one dict per history."""
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
                )
                summary = summarise(name, result, shadow, time.monotonic() - started)
                entry: dict[str, Any] = {"summary": summary}
                if points:
                    entry["points"] = point_rows(result)
                out[name] = entry
                print(f"{name}: {summary.seconds} s", file=sys.stderr)
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
    args = parser.parse_args(argv)
    pg_bins = {}
    for item in args.pg_bin:
        major, _, directory = item.partition("=")
        pg_bins[int(major)] = Path(directory)
    results = run_corpus(
        args.history or available, args.shadow, args.jobs, pg_bins, points=args.json
    )
    if args.json:
        print(
            json.dumps(
                [{**r, "summary": vars(r["summary"])} for r in results], indent=1
            )
        )
        return
    print(f"Shadow: {args.shadow}\n")
    print(TABLE_HEADER)
    for r in results:
        print(r["summary"].row())


if __name__ == "__main__":
    main()
