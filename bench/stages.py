"""Where an export's time goes: floor and export side by side, with a profile by stage.

    python bench/stages.py --size small                  # 2,001 changesets, ~1 min
    python bench/stages.py --changesets 600 --cprofile /tmp/export.prof
    python bench/stages.py --size small --no-profile     # plain timings, no profiler

A quick loop for working on speed, not the benchmark of record (that is bench/run.py,
which adds the by-hand loop, the mirror and peak memory). It generates and captures the
history like bench/run.py, replays the floor, then runs export_history in this process,
under cProfile unless --no-profile, and prints ms per changeset for the floor and the
export and the cumulative time of each pipeline stage. Profiled times are inflated by the
profiler (roughly 1.5x); compare them with each other, not with the floor.
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

# (label, file suffix, function name) of the stages, in pipeline order.
STAGES = [
    ("read history", "reader.py", "changesets"),
    ("split statements", "replay.py", "split_statements"),
    ("replay (DDL, reset)", "replay.py", "replay"),
    ("take touched", "replay.py", "take_touched"),
    ("keys touched", "snapshot.py", "keys_touched"),
    ("render touched", "snapshot.py", "render_objects"),
    ("snapshot state", "state.py", "apply"),
    ("commit message", "message.py", "build_message"),
    ("git: write commit", "gitwriter.py", "write_commit"),
    ("git: flush packs", "gitwriter.py", "flush"),
    ("server round trips (all)", "connection.py", "wait"),
]


def stage_times(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Cumulative seconds of each stage's function, from a cProfile run."""
    table = stats.stats  # type: ignore[attr-defined]
    found: list[tuple[str, float]] = []
    for label, suffix, name in STAGES:
        total = sum(
            value[3] for (path, _, func), value in table.items()
            if func == name and path.endswith(suffix)
        )
        found.append((label, total))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    parser.add_argument("--changesets", type=int, help="override the size's changeset count")
    parser.add_argument("--seed", type=int, default=20220101)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--cprofile", type=Path, help="also write the cProfile stats here")
    parser.add_argument("--top", type=int, default=0, help="print the N costliest functions")
    args = parser.parse_args(argv)

    import generate
    import run as bench_run

    from pggit_export.export import ExportOptions, export_history
    from pggit_export.server import EmbeddedServer

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
        print(f"history: {count} changesets, {captured.history_rows} rows; "
              f"reading and splitting it: {prepared.seconds * 1000 / count:.2f} ms per changeset")
        print(f"floor:   {floor.seconds:7.2f} s  {floor.seconds * 1000 / count:6.2f} ms/changeset")

        profiler = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = export_history(source, Path(work) / "repo", ExportOptions(shadow_dsn=admin))
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        note = " (under cProfile)" if profiler else ""
        print(f"export:  {seconds:7.2f} s  {seconds * 1000 / count:6.2f} ms/changeset "
              f"= {seconds / floor.seconds:.2f}x floor{note}; "
              f"{report.commits_written} commits, {len(report.failed)} failed")
        if profiler:
            stats = pstats.Stats(profiler)
            print("\nstage (cumulative, overlapping)      seconds   ms/changeset")
            for label, total in stage_times(stats):
                print(f"  {label:34} {total:8.2f}   {total * 1000 / count:8.2f}")
            if args.cprofile:
                stats.dump_stats(str(args.cprofile))
            if args.top:
                stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
