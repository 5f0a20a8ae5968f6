"""Resume from many points of a benchmark history and compare with a clean run.

    python bench/resume.py [--size small|tiny|large] [--points N] [--seed S] [--json]

Generates the benchmark's synthetic history (bench/generate.py, captured under v1's triggers
in a private PostgreSQL), exports it once from scratch, then, for N commits spread over the
clean run's history, clones the repository, resets the clone to that commit, and runs the
export again: the rerun rebuilds its shadow (replaying the history up to the commit) and
continues. A resume is exact when it ends on the clean run's head. Prints one line per point
(commit index, seconds, equal or not) and the count; exits 1 if any point differs.

No timing target here: the seconds say what a resume from that point costs (the replay up
to it plus the export of the rest).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pggit_export import ExportOptions, export_history  # noqa: E402
from pggit_export.shadow.server import EmbeddedServer  # noqa: E402

# changesets, live objects at the end (large: bench/run.py's 20,000-changeset history)
SIZES = {"tiny": (300, 60), "small": (2000, 300), "large": (20_000, 2_000)}


def _generate() -> ModuleType:
    """bench/generate.py (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def run(size: str, points: int, seed: int) -> dict[str, Any]:
    """Export once, resume from `points` commits; every point's result."""
    import psycopg

    generate = _generate()
    changesets, live = SIZES[size]
    with EmbeddedServer() as server, tempfile.TemporaryDirectory(prefix="pggit-resume-") as tmp:
        admin = server.conninfo("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_resume TEMPLATE template0")
        source = server.conninfo("bench_resume")
        generate.capture(source, generate.generate_migrations(changesets, live, seed))
        work = Path(tmp)
        clean = work / "clean"
        started = time.perf_counter()
        export_history(source, clean, ExportOptions(shadow_dsn=admin))
        clean_seconds = time.perf_counter() - started
        commits = _git(clean, "rev-list", "--reverse", "main").split()
        step = max(1, (len(commits) - 1) // (points + 1))
        results = []
        for index in range(step, len(commits) - 1, step)[:points]:
            copy = work / f"from-{index}"
            subprocess.run(["git", "clone", "--quiet", str(clean), str(copy)], check=True)
            _git(copy, "reset", "--quiet", "--hard", commits[index])
            started = time.perf_counter()
            report = export_history(source, copy, ExportOptions(shadow_dsn=admin))
            head = _git(copy, "rev-parse", "main")
            results.append({"commit_index": index, "seconds": round(time.perf_counter() - started, 2),
                            "resumed_by": report.resumed_by, "equal": head == commits[-1]})
    return {"size": size, "seed": seed, "commits": len(commits),
            "clean_seconds": round(clean_seconds, 2), "points": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--points", type=int, default=8, help="commits to resume from")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = run(args.size, args.points, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['size']}: {result['commits']} commits, clean export "
              f"{result['clean_seconds']} s")
        for point in result["points"]:
            verdict = "same head" if point["equal"] else "DIFFERENT HEAD"
            print(f"  resumed after commit {point['commit_index']}: {point['seconds']} s, "
                  f"shadow {point['resumed_by']}, {verdict}")
        equal = sum(p["equal"] for p in result["points"])
        print(f"{equal} of {len(result['points'])} resumes end on the clean run's head")
    sys.exit(0 if all(p["equal"] for p in result["points"]) else 1)


if __name__ == "__main__":
    main()
