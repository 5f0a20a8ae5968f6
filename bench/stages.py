"""Where an export's time goes: floor and export side by side, timed stage by stage.

    python bench/stages.py --size small                  # 2,001 changesets, ~1 min
    python bench/stages.py --changesets 600 --cprofile /tmp/export.prof --top 30

A quick loop for working on speed, not the benchmark of record (that is bench/run.py,
which adds the by-hand loop, the mirror and peak memory). It generates and captures the
history like bench/run.py, replays the floor, then runs export_history in this process
with each pipeline stage's function wrapped in a timer (cheap enough not to distort the
figures), and prints ms per changeset for the floor, the export and every stage.
``--cprofile`` runs the export under cProfile instead (inflated ~1.5x, but function by
function) and can print the costliest functions (``--top``).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

# (label, module, owner attribute or None, function): wrapped where the export calls it.
STAGES = [
    ("split statements", "pggit_export.shadow.replay", None, "split_statements"),
    ("replay (one message per changeset)", "pggit_export.shadow.replay", "Shadow", "_replay_at_once"),
    # While the server runs the replay, the previous changeset is taken on the tool's
    # connection, and the commit before it is written.
    ("  in it: wait for the take beside it", "pggit_export.shadow.replay", "Shadow", "receive_take"),
    ("  in it: commit message", "pggit_export.export", None, "build_message"),
    ("  in it: git objects", "pggit_export.git.writer", "GitWriter", "write_commit"),
    ("take + files + render, alone", "pggit_export.shadow.replay", "Shadow", "take_touched"),
    ("keys touched (owners, drops)", "pggit_export.export", None, "keys_touched"),
    ("render the keys the take missed", "pggit_export.export", None, "render_objects"),
    ("  of which catalog queries", "pggit_export.render.snapshot", None, "_fetch"),
    ("snapshot state", "pggit_export.render.state", "SnapshotState", "apply"),
]


def install_timers(totals: collections.Counter[str]) -> None:
    """Wrap each stage's function so that its wall time adds up in `totals`."""
    import importlib

    for label, module_name, owner_name, name in STAGES:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        function = getattr(owner, name)

        def timed(*args: Any, _f: Callable[..., Any] = function, _label: str = label,
                  **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - started

        setattr(owner, name, timed)


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

        totals: collections.Counter[str] = collections.Counter()
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler is None:
            install_timers(totals)
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
            print("\nstage                                    ms/changeset")
            for label, *_ in STAGES:
                print(f"  {label:38} {totals[label] * 1000 / count:8.3f}")
            top_level = sum(v for k, v in totals.items() if not k.startswith(" "))
            print(f"  {'everything else (reader, loop, ...)':38} "
                  f"{(seconds - top_level) * 1000 / count:8.3f}")
        else:
            stats = pstats.Stats(profiler)
            stats.dump_stats(str(args.cprofile))
            if args.top:
                stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
