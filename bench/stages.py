"""Where an export's time goes: floor and export side by side, the pipeline's phases.

    python bench/stages.py --size small                  # 2,001 changesets, ~1 min
    python bench/stages.py --changesets 600 --cprofile /tmp/export.prof --top 30

A quick loop for working on speed, not the benchmark of record (that is bench/run.py,
which adds the by-hand loop, the mirror and peak memory). It generates and captures the
history like bench/run.py, replays the floor, then runs export_history in this process
and prints ms per changeset for the floor, the export and each phase the changeset
pipeline reports (``ExportReport.pipeline``, shadow/pipeline.py): waiting for the server's
replay, waiting for a take, the render queries, the fold and commit, replays statement by
statement; and how often the take ran beside the next replay, was done first (foreseen)
or conflicted. ``--cprofile`` runs the export under cProfile instead (inflated ~1.5x, but
function by function) and can print the costliest functions (``--top``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

# The pipeline's phases (PipelineStats.seconds), in the order a changeset meets them.
PHASES = [
    ("replay", "waiting for the server's replay"),
    ("take", "waiting for a take beside a replay"),
    ("finish", "fold and commit"),
    ("prepare", "render queries (beside or alone)"),
    ("statement by statement", "failed scripts, again one by one"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    parser.add_argument("--changesets", type=int, help="override the size's changeset count")
    parser.add_argument("--seed", type=int, default=20220101)
    parser.add_argument("--cprofile", type=Path, help="profile with cProfile; write stats here")
    parser.add_argument("--top", type=int, default=0, help="with --cprofile: print N functions")
    args = parser.parse_args(argv)

    import generate
    import run as bench_run

    from pggit_export.export import ExportOptions, export_history
    from pggit_export.shadow.server import EmbeddedServer

    changesets, live = generate.SIZES[args.size]
    changesets = args.changesets or changesets
    with EmbeddedServer() as server, tempfile.TemporaryDirectory() as work:
        admin = server.conninfo("postgres")
        source = bench_run.create_database(admin, "bench_source")
        captured = generate.capture(source, generate.generate_migrations(changesets, live, args.seed))
        prepared = bench_run.prepare(source)
        count = len(prepared.statements)
        floor = bench_run.apply_changesets(bench_run.create_database(admin, "bench_floor"),
                                           prepared.statements)
        print(f"history: {count} changesets, {captured.history_rows} rows")
        print(f"floor:  {floor.seconds:7.2f} s  {floor.seconds * 1000 / count:6.3f} ms/changeset")

        profiler = cProfile.Profile() if args.cprofile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = export_history(source, Path(work) / "repo", ExportOptions(shadow_dsn=admin))
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        note = " (under cProfile)" if profiler else ""
        print(f"export: {seconds:7.2f} s  {seconds * 1000 / count:6.3f} ms/changeset "
              f"= {seconds / floor.seconds:.2f}x floor{note}; "
              f"{report.commits_written} commits, {len(report.failed)} failed")
        if profiler is None:
            stats = report.pipeline
            print(f"\npipeline: {stats.replays} scripts, {stats.beside} with the take beside, "
                  f"{stats.foreseen} taken first (foreseen), {len(stats.conflicts)} conflicts, "
                  f"{stats.statement_by_statement} replayed statement by statement")
            print("\nphase                                    ms/changeset")
            for phase, label in PHASES:
                print(f"  {label:38} {stats.seconds.get(phase, 0.0) * 1000 / count:8.3f}")
            measured = sum(stats.seconds.values())  # the phases never overlap in this process
            print(f"  {'everything else (reader, repairs, loop)':38} "
                  f"{(seconds - measured) * 1000 / count:8.3f}")
        else:
            stats = pstats.Stats(profiler)
            stats.dump_stats(str(args.cprofile))
            if args.top:
                stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
