"""Benchmark of pggit-export against the floor, a by-hand pg_dump+git loop, and the mirror.

    python bench/run.py --size small|large [--naive-prefix 300] [--keep DIR] [--json]

One private PostgreSQL (pggit_export.shadow.server.EmbeddedServer) serves everything, each in its
own database, so every number comes from the same server and the same data:

1. source: a synthetic v1 history (bench/generate.py) captured under the v1 triggers.
2. (a) floor: the changesets the export replays (grouped by ``HistoryReader.changesets()``,
   statements kept when ``split_statements`` says ``Action.REPLAY``, the same skips the
   export makes) applied to an empty database with psycopg, one transaction per changeset,
   nothing else. Reading and splitting are done before the clock starts (timed apart).
3. (b) export: ``export_history(source, repo, ExportOptions(shadow_dsn=<this server>,
   progress=cb))`` in a child Python process (this file with ``--_export-child``); ``cb``
   records ``time.perf_counter()`` after each changeset, which gives the per-changeset cost
   over the history. Its peak RSS is ``ru_maxrss`` of that one child, from ``os.wait4()``
   (the export process only; the PostgreSQL server's memory is not in it).
4. (c) naive: on the first ``--naive-prefix`` changesets (and, with ``--naive-tail``, the
   default, on as many at the end of the history, after applying the rest like the floor),
   apply the changeset, ``pg_dump --schema-only`` into one file, ``git add`` + ``git
   commit``. Its total is extrapolated: from the prefix alone (a lower bound: pg_dump gets
   slower as the schema grows) and linearly between the prefix and the tail.
5. (d) mirror: ``pggit_export.mirror.write.mirror_repository(repo, target)`` into an empty
   database, in a child process, when that module exists; otherwise "n/a" and why.

``--code DIR`` benchmarks the pggit_export package found in DIR (a clean ``git archive``
of a commit, for instance) instead of this checkout's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _import_path(code: Path | None) -> None:
    """Make `import pggit_export` load the code under test, and `import generate` work."""
    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(code or ROOT))


# ----------------------------------------------------------------------------- children


def _export_child(source: str, repo: str, shadow_dsn: str, out: str) -> None:
    """Run export_history with a timing progress callback; write the timings as JSON."""
    from pggit_export.export import ExportOptions, export_history

    times: list[float] = []
    result: dict[str, Any] = {"times": times, "interrupted": False}

    def progress(*event: Any) -> None:
        # One ProgressEvent, or (changesets, rows, total) from code before it (--code).
        times.append(time.perf_counter())

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    result["start"] = time.perf_counter()
    try:
        report = export_history(
            source, repo, ExportOptions(shadow_dsn=shadow_dsn, progress=progress)
        )
        result["end"] = time.perf_counter()
        result["commits"] = report.commits_written
        result["rows"] = report.rows_exported
        result["failed"] = len(report.failed)
        result["refused"] = len(report.refused_statements)
        result["not_replayed"] = len(report.not_replayed)
        result["head"] = report.head
    except KeyboardInterrupt:
        result["end"] = time.perf_counter()
        result["interrupted"] = True
    Path(out).write_text(json.dumps(result))


def _mirror_child(repo: str, target: str, out: str) -> None:
    """Run pggit_export.mirror_repository(repo, target); write its timing as JSON."""
    result: dict[str, Any] = {}
    try:
        try:
            from pggit_export import mirror_repository  # type: ignore[attr-defined]
        except ImportError:  # code from before the public API: the flat module
            from pggit_export.mirror import mirror_repository  # type: ignore[attr-defined,no-redef]

        started = time.perf_counter()
        value = mirror_repository(repo, target)
        result["seconds"] = time.perf_counter() - started
        result["result"] = repr(value)[:500]
    except Exception as exc:  # noqa: BLE001 - any failure is reported as "n/a" with its reason
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
    Path(out).write_text(json.dumps(result))


@dataclass
class ChildRun:
    """A child process's wall time, peak RSS and the JSON it wrote."""

    seconds: float
    max_rss_mb: float
    returncode: int
    data: dict[str, Any]
    stderr: str


def run_child(
    args: list[str],
    out: Path,
    *,
    timeout: float | None,
    code: Path | None,
    pgoptions: str | None = None,
) -> ChildRun:
    """Run this file as a child; its own rusage comes from wait4, not RUSAGE_CHILDREN."""
    env = dict(os.environ)
    if pgoptions:
        env["PGOPTIONS"] = pgoptions
    env["PYTHONPATH"] = os.pathsep.join(
        [str(code or ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args], env=env, stderr=err
        )
        deadline = None if timeout is None else started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.send_signal(signal.SIGTERM)  # the child stops cleanly, writes what it has
                deadline = None
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    data = json.loads(out.read_text()) if out.exists() else {}
    return ChildRun(seconds, usage.ru_maxrss / 1024, proc.returncode, data, stderr[-3000:])


# ----------------------------------------------------------------------------- parent


@dataclass
class Prepared:
    """The changesets as the floor replays them: statements the export would run."""

    statements: list[list[str]]
    history_rows: int
    skipped_changesets: int  # pgGit's own install row, which the export does not replay
    seconds: float


# The reader's own query fills NULL created_at with window functions whose frame runs to the
# end of the history (quadratic: minutes at 25,000 rows). Generated histories have no NULL
# created_at, so the plain (created_at, id) order is the same order, and grouping goes
# through the reader's own group_changesets().
_PREPARE_SQL = """
SELECT h.id, h.change_type::text AS change_type, h.change_severity::text AS change_severity,
       h.sql_executed, h.created_at, h.created_by, o.schema_name
FROM pggit.history AS h LEFT JOIN pggit.objects AS o ON o.id = h.object_id
ORDER BY h.created_at, h.id
"""


def _stage_module(path: str, flat_name: str) -> Any:
    """A module of the code under test: at its place in the stage packages, or, in code from
    before the packages (``--code`` of an older commit), at its flat name."""
    try:
        return importlib.import_module(f"pggit_export.{path}")
    except ModuleNotFoundError:
        return importlib.import_module(f"pggit_export.{flat_name}")


def prepare(source: str) -> Prepared:
    """Read and split the history the way the export does, outside the floor's clock."""
    import psycopg

    history = _stage_module("read.history", "reader")
    replay = _stage_module("shadow.replay", "replay")
    HistoryRow, group_changesets = history.HistoryRow, history.group_changesets
    Action, prepare_for_transaction = replay.Action, replay.prepare_for_transaction
    split_statements = replay.split_statements
    DEFAULT_EXCLUDED_SCHEMAS = _stage_module("render.snapshot", "snapshot").DEFAULT_EXCLUDED_SCHEMAS

    started = time.perf_counter()
    with psycopg.connect(source) as conn:
        records = conn.execute(_PREPARE_SQL).fetchall()
    if any(rec[4] is None for rec in records):
        raise SystemExit("prepare: the history has NULL created_at, which this shortcut skips")
    rows = (
        HistoryRow(
            id=rec[0], change_type=rec[1], change_severity=rec[2], sql_executed=rec[3],
            created_at=rec[4], created_by=rec[5], effective_time=rec[4], schema_name=rec[6],
        )
        for rec in records
    )
    result: list[list[str]] = []
    skipped = 0
    for changeset in group_changesets(rows):
        if all(row.schema_name in DEFAULT_EXCLUDED_SCHEMAS for row in changeset.rows):
            skipped += 1
            result.append([])  # still a changeset (a commit) for the export
            continue
        result.append(
            [
                prepare_for_transaction(s.text)
                for s in split_statements(changeset.sql or "")
                if s.action is Action.REPLAY
            ]
        )
    return Prepared(result, len(records), skipped, time.perf_counter() - started)


@dataclass
class ApplyRun:
    seconds: float
    per_changeset: list[float]
    failures: list[tuple[int, str]] = field(default_factory=list)


def apply_changesets(
    conninfo: str,
    changesets: list[list[str]],
    *,
    after_each: Any = None,
) -> ApplyRun:
    """One transaction per changeset, each statement executed on its own (as the export)."""
    import psycopg

    failures: list[tuple[int, str]] = []
    per: list[float] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.prepare_threshold = None
        started = time.perf_counter()
        for number, statements in enumerate(changesets, 1):
            t0 = time.perf_counter()
            if statements:
                try:
                    with conn.transaction():
                        for text in statements:
                            conn.execute(text.encode())
                except psycopg.Error as exc:
                    failures.append((number, str(exc).splitlines()[0]))
            if after_each is not None:
                after_each(number)
            per.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - started
    return ApplyRun(seconds, per, failures)


def settle(admin: str, database: str) -> None:
    """VACUUM ANALYZE a database and CHECKPOINT, so that the next timing starts quiet."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def create_database(admin: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(admin)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def naive_loop(
    conninfo: str,
    changesets: list[list[str]],
    first: int,
    repo: Path,
    pg_dump: Path,
) -> ApplyRun:
    """Apply changesets[first:] one by one, pg_dump --schema-only and git commit after each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@pggit.invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@pggit.invalid",
        GIT_CONFIG_NOSYSTEM="1", HOME=str(repo),
    )
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    dump = repo / "schema.sql"

    def dump_and_commit(number: int) -> None:
        subprocess.run(
            [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges",
             "--dbname", conninfo, "--file", str(dump)],
            check=True, env=env,
        )
        subprocess.run(["git", "-C", str(repo), "add", "schema.sql"], check=True, env=env)
        subprocess.run(
            ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m",
             f"changeset {first + number}"],
            check=True, env=env,
        )

    return apply_changesets(conninfo, changesets[first:], after_each=dump_and_commit)


def repo_stats(repo: Path, branch: str = "main") -> dict[str, int]:
    """Commits, files at the head, and object files written (added or changed) in total."""
    from dulwich.diff_tree import tree_changes
    from dulwich.repo import Repo

    r = Repo(str(repo))
    try:
        head = r.refs[f"refs/heads/{branch}".encode()]
    except KeyError:
        return {"commits": 0, "files_at_head": 0, "files_written": 0}
    commits = written = 0
    current = r[head]
    while True:
        commits += 1
        parent_tree = r[current.parents[0]].tree if current.parents else None
        for change in tree_changes(r.object_store, parent_tree, current.tree):
            if change.type in ("add", "modify"):
                written += 1
        if not current.parents:
            break
        current = r[current.parents[0]]
    files = sum(1 for _ in r.object_store.iter_tree_contents(r[head].tree))
    r.close()
    return {"commits": commits, "files_at_head": files, "files_written": written}


def _deciles(per: list[float]) -> list[float]:
    """Mean milliseconds per changeset in each tenth of `per`: the trend over the history."""
    k = len(per) / 10
    out = []
    for i in range(10):
        part = per[round(i * k) : round((i + 1) * k)]
        out.append(sum(part) / len(part) * 1000 if part else float("nan"))
    return out


def _tenths(per: list[float]) -> tuple[float, float]:
    """Mean seconds per changeset over the first and the last 10% of `per`."""
    if not per:
        return float("nan"), float("nan")
    k = max(1, len(per) // 10)
    return sum(per[:k]) / k, sum(per[-k:]) / k


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def git_label() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_package_files": git("status", "--porcelain", "--", "pggit_export"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the results (also printed as a table by main)."""
    _import_path(args.code)
    import generate
    import psycopg

    EmbeddedServer = _stage_module("shadow.server", "server").EmbeddedServer

    changesets, live_target = generate.SIZES[args.size]
    if args.changesets:
        changesets = args.changesets
    results: dict[str, Any] = {
        "size": args.size,
        "machine": machine(),
        "code": str(args.code or ROOT),
        "git": git_label(),
        "loadavg_at_start": os.getloadavg(),
        "export_pgoptions": args.export_pgoptions,
    }
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pggit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("export-repo", "naive-repo", "naive-tail-repo"):
        shutil.rmtree(work / sub, ignore_errors=True)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (
        lambda *a: None
    )
    try:
        with EmbeddedServer() as server:
            admin = server.conninfo("postgres")
            with psycopg.connect(admin) as conn:
                results["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]

            log(f"[bench] generating {changesets} changesets (seed {args.seed})")
            t0 = time.perf_counter()
            migrations = generate.generate_migrations(changesets, live_target, args.seed)
            plan_seconds = time.perf_counter() - t0
            source = create_database(admin, "bench_source")
            captured = generate.capture(source, migrations)
            results["history"] = {
                **generate.plan_stats(migrations),
                "plan_seconds": round(plan_seconds, 2),
                "capture_seconds": round(captured.seconds, 2),
                "history_rows": captured.history_rows,
                "live_at_end": captured.live,
            }
            log(f"[bench] captured {captured.history_rows} rows in {captured.seconds:.1f}s")

            prepared = prepare(source)
            n = len(prepared.statements)
            results["history"]["changesets"] = n
            results["prepare_seconds"] = round(prepared.seconds, 3)
            log(f"[bench] {n} changesets read and split in {prepared.seconds:.1f}s; floor...")

            # Capturing leaves dirty buffers and tables for autovacuum: both would run into
            # whatever comes next. Settle the server, then keep the fastest of a few floor
            # runs (a floor slowed by noise would flatter the export's ratio).
            settle(admin, source)
            floor_runs = []
            for _ in range(args.floor_runs):
                floor_db = create_database(admin, "bench_floor")
                floor_runs.append(apply_changesets(floor_db, prepared.statements))
            floor = min(floor_runs, key=lambda run: run.seconds)
            with psycopg.connect(floor_db) as conn:
                floor_live = generate.live_objects(conn)
            settle(admin, floor_db)
            results["floor"] = {
                "seconds": floor.seconds,
                "runs_seconds": [round(r.seconds, 3) for r in floor_runs],
                "failures": len(floor.failures),
                "failure_examples": floor.failures[:5],
                "first10_ms": _tenths(floor.per_changeset)[0] * 1000,
                "last10_ms": _tenths(floor.per_changeset)[1] * 1000,
                "live_after_replay": floor_live,
                "deciles_ms": _deciles(floor.per_changeset),
            }
            log(f"[bench] floor {floor.seconds:.1f}s, {len(floor.failures)} failures; export...")

            repo = work / "export-repo"
            out = work / "export-timings.json"
            out.unlink(missing_ok=True)
            child = run_child(
                ["--_export-child", source, str(repo), admin, str(out)],
                out, timeout=args.export_timeout, code=args.code, pgoptions=args.export_pgoptions,
            )
            data = child.data
            times = data.get("times", [])
            per = [b - a for a, b in zip([data.get("start", 0.0), *times], times)]
            # The first interval holds the shadow's creation and first render: leave it out
            # of the trend, keep it in the totals.
            first10, last10 = _tenths(per[1:])
            done = len(times)
            loop_end = times[-1] if times else data.get("start", 0.0)
            export: dict[str, Any] = {
                "seconds": child.seconds,
                "returncode": child.returncode,
                "max_rss_mb": child.max_rss_mb,
                "changesets_done": done,
                "partial": bool(data.get("interrupted")) or done < n,
                "first_changeset_seconds": per[0] if per else None,
                "in_function_seconds": data.get("end", 0.0) - data.get("start", 0.0),
                "after_last_changeset_seconds": data.get("end", loop_end) - loop_end,
                "first10_ms": first10 * 1000,
                "last10_ms": last10 * 1000,
                "deciles_ms": _deciles(per[1:]),
                # The floor over the same changesets, for a partial export's ratio.
                "floor_same_changesets_seconds": sum(floor.per_changeset[:done]),
                "failed": data.get("failed"),
                "refused": data.get("refused"),
                "not_replayed": data.get("not_replayed"),
                "head": data.get("head"),  # same history, same code: same id
                "stderr_tail": child.stderr[-1000:] if child.returncode else "",
            }
            if export["partial"] and done:
                # A lower bound: the cost per changeset still grows at the end.
                export["remaining_lower_bound_seconds"] = last10 * (n - done)
            if repo.exists():
                export.update(repo_stats(repo))
                export["files_written_per_second"] = export["files_written"] / child.seconds
            results["export"] = export
            log(f"[bench] export {child.seconds:.1f}s ({done}/{n} changesets), "
                f"peak RSS {child.max_rss_mb:.0f} MB; naive...")

            k = min(args.naive_prefix, n)
            naive_db = create_database(admin, "bench_naive")
            pg_dump = server.binaries.bindir / "pg_dump"
            head = naive_loop(naive_db, prepared.statements[:k], 0, work / "naive-repo", pg_dump)
            naive: dict[str, Any] = {
                "prefix": k,
                "prefix_seconds": head.seconds,
                "prefix_ms": head.seconds / k * 1000,
                "failures": len(head.failures),
                "extrapolated_prefix_only": head.seconds / k * n,
            }
            _prefix_ratio(naive, data)
            if args.naive_tail and n > 2 * k:
                tail_db = create_database(admin, "bench_naive_tail")
                log(f"[bench] naive tail: applying {n - k} changesets first")
                apply_changesets(tail_db, prepared.statements[: n - k])
                tail = naive_loop(
                    tail_db, prepared.statements, n - k, work / "naive-tail-repo", pg_dump
                )
                naive["tail_seconds"] = tail.seconds
                naive["tail_ms"] = tail.seconds / k * 1000
                naive["failures"] += len(tail.failures)
                # Cost grows with the schema, which grows about linearly with the position.
                naive["extrapolated_linear"] = (head.seconds + tail.seconds) / (2 * k) * n
            naive["extrapolated"] = naive.get("extrapolated_linear", naive["extrapolated_prefix_only"])
            results["naive"] = naive
            log(f"[bench] naive prefix {head.seconds:.1f}s for {k}; mirror...")

            results["mirror"] = run_mirror(admin, repo, work, args.code)
            results["loadavg_at_end"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _prefix_ratio(naive: dict[str, Any], data: dict[str, Any]) -> None:
    """naive/export on the naive prefix's changesets, setup left out of both.

    The export's first interval holds its setup (reading the history, creating the shadow,
    the first render), which the naive loop has no equivalent of; the export's cost of the
    first k changesets is taken as k times its mean over changesets 2..k.
    """
    times, k = data.get("times", []), naive["prefix"]
    if len(times) >= k > 1:
        export_prefix = (times[k - 1] - times[0]) / (k - 1) * k
        naive["export_prefix_seconds"] = export_prefix
        naive["ratio_on_prefix"] = naive["prefix_seconds"] / export_prefix


def run_mirror(admin: str, repo: Path, work: Path, code: Path | None) -> dict[str, Any]:
    """(d): the mirror of the export's repository, or why it could not be measured."""
    if not repo.exists():
        return {"error": "no export repository to mirror"}
    # The mirror may exist only in this checkout (it is newer than the code under test); it
    # was the module mirror.py before the stages became packages, mirror/ since.
    def has_mirror(root: Path) -> bool:
        return any((root / "pggit_export" / name).exists() for name in ("mirror.py", "mirror"))

    where = code if code and has_mirror(code) else ROOT
    if not has_mirror(where):
        return {"error": "pggit_export has no mirror yet"}
    target = create_database(admin, "bench_mirror")
    out = work / "mirror.json"
    out.unlink(missing_ok=True)
    child = run_child(["--_mirror-child", str(repo), target, str(out)], out, timeout=None,
                      code=where)
    result = {"seconds": child.data.get("seconds"), "wall_seconds": child.seconds,
              "max_rss_mb": child.max_rss_mb, **child.data}
    if "error" not in child.data and child.returncode != 0:
        result["error"] = f"exit {child.returncode}: {child.stderr[-300:]}"
    return result


# ----------------------------------------------------------------------------- output


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def _floor_runs(floor: dict[str, Any]) -> str:
    runs = floor.get("runs_seconds")
    if not runs:
        return ""
    return f"the fastest of {len(runs)} runs ({', '.join(f'{s:.2f}s' for s in runs)}); "


def table(results: dict[str, Any]) -> str:
    """The side-by-side table: metrics as rows, the four ways as columns."""
    n = results["history"]["changesets"]
    floor, export, naive, mirror = (
        results["floor"], results["export"], results["naive"], results["mirror"]
    )
    done = export["changesets_done"] or 1
    export_total = export["seconds"]
    export_ms = export_total / done * 1000
    floor_ms = floor["seconds"] / n * 1000
    # A partial export is compared with the floor on the same (first) changesets.
    floor_same_ms = export["floor_same_changesets_seconds"] / done * 1000
    naive_ms = naive["extrapolated"] / n * 1000
    mirror_ok = "error" not in mirror
    if export["partial"] and "ratio_on_prefix" in naive:
        naive_ratio = _fmt(naive["ratio_on_prefix"], ".1f", "x (prefix)")
    else:
        naive_ratio = _fmt(naive_ms / export_ms, ".1f", "x")
    partial = " (partial)" if export["partial"] else ""
    nan = float("nan")
    rows = [
        ("", "(a) floor", "(b) export", "(c) naive*", "(d) mirror"),
        (
            "total seconds",
            _fmt(floor["seconds"]),
            _fmt(export_total) + partial,
            _fmt(naive["extrapolated"], ".0f") + " (extrap.)",
            _fmt(mirror.get("seconds"), ".2f") if mirror_ok else "n/a",
        ),
        ("ms per changeset", _fmt(floor_ms, ".2f"), _fmt(export_ms, ".2f"),
         _fmt(naive_ms, ".1f"), ""),
        ("export / floor", "", _fmt(export_ms / floor_same_ms, ".2f", "x"), "", ""),
        ("naive / export", "", "", naive_ratio, ""),
        ("mirror / export", "", "", "",
         _fmt(mirror["seconds"] / export_total * 100, ".0f", "%") if mirror_ok else ""),
        ("peak RSS (MB)", "", _fmt(export["max_rss_mb"], ".0f"), "",
         _fmt(mirror.get("max_rss_mb"), ".0f") if mirror_ok else ""),
        ("objects written / s", "", _fmt(export.get("files_written_per_second"), ".0f"), "", ""),
        ("first 10%: ms/changeset", _fmt(floor["first10_ms"], ".2f"),
         _fmt(export["first10_ms"], ".2f"), _fmt(naive.get("prefix_ms"), ".1f"), ""),
        ("last 10%: ms/changeset", _fmt(floor["last10_ms"], ".2f"),
         _fmt(export["last10_ms"], ".2f"), _fmt(naive.get("tail_ms"), ".1f"), ""),
        (
            "last / first 10%",
            _fmt(floor["last10_ms"] / floor["first10_ms"], ".2f", "x"),
            _fmt(export["last10_ms"] / export["first10_ms"], ".2f", "x"),
            _fmt(naive.get("tail_ms", nan) / naive["prefix_ms"], ".2f", "x"),
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in rows
    ]
    h = results["history"]
    live = h["live_at_end"]
    modes = h["modes"]
    notes = [
        (f"history: {n} changesets, {h['history_rows']} rows, {h['migrations']} migrations"
        f" ({modes.get('batch', 0)} batch, {modes.get('psql-f', 0)} psql-f); live at the end:"
        f" {live['live_objects']} objects ({live['tables']} tables, {live['views']} views,"
        f" {live['function_overloads']} functions, {live['types']} types; {live['indexes']}"
        f" indexes, {live['schemas']} schemas)"),
        (f"floor: {_floor_runs(floor)}{floor['failures']} failures; reading and splitting the"
        f" history (not in the floor): {results['prepare_seconds']:.1f}s"),
        (f"export: {export['changesets_done']}/{n} changesets, {export.get('commits', '?')}"
        f" commits, {export.get('files_written', '?')} object files written,"
        f" {export.get('files_at_head', '?')} files at head,"
        f" {'n/a (interrupted)' if export['failed'] is None else export['failed']} failed;"
        f" first changeset (setup: reading the history, shadow, first render):"
        f" {export.get('first_changeset_seconds') or 0:.1f}s;"
        f" after the last changeset (flush, checkout): "
        f"{export['after_last_changeset_seconds']:.1f}s"),
    ]
    if export["partial"]:
        notes.append(
            f"PARTIAL export: stopped after {done} of {n} changesets; export/floor and"
            " naive/export use the mean cost per changeset of that part; the remaining"
            f" changesets would take at least {export['remaining_lower_bound_seconds']:.0f}s"
            " more at the last 10%'s rate"
        )
    notes.append(
        "ms per changeset by tenth of the history: floor "
        + " ".join(_fmt(v, ".1f") for v in floor["deciles_ms"])
        + "; export "
        + " ".join(_fmt(v, ".1f") for v in export["deciles_ms"])
        + (" (of the part done)" if export["partial"] else "")
    )
    k = naive["prefix"]
    naive_note = f"* naive: measured on the first {k} changesets ({naive['prefix_seconds']:.1f}s)"
    if "tail_seconds" in naive:
        naive_note += (
            f" and the last {k} ({naive['tail_seconds']:.1f}s), extrapolated to all {n}"
            " linearly between the two"
        )
    else:
        naive_note += f", extrapolated to all {n} from the prefix (a lower bound)"
    naive_note += f"; from the prefix alone: {naive['extrapolated_prefix_only']:.0f}s"
    if "ratio_on_prefix" in naive:
        naive_note += (
            f"; naive/export on the prefix itself (setup left out of both):"
            f" {naive['ratio_on_prefix']:.1f}x"
        )
    notes.append(naive_note)
    if not mirror_ok:
        notes.append(f"mirror: n/a: {mirror['error']}")
    if results.get("export_pgoptions"):
        notes.append(f"export ran with PGOPTIONS={results['export_pgoptions']!r}")
    notes.append("peak RSS: ru_maxrss of the export's own process (os.wait4), not PostgreSQL's")
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_export-child":
        _export_child(*argv[1:5])
        return
    if argv and argv[0] == "--_mirror-child":
        _mirror_child(*argv[1:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", choices=("tiny", "small", "large"), default="small")
    parser.add_argument("--changesets", type=int, help="override the size's changeset count")
    parser.add_argument("--seed", type=int, default=20220101)
    parser.add_argument("--naive-prefix", type=int, default=300)
    parser.add_argument("--floor-runs", type=int, default=3,
                        help="replay the floor this many times and keep the fastest")
    parser.add_argument("--naive-tail", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the naive loop on the last changesets (default: on)")
    parser.add_argument("--export-timeout", type=float, default=None,
                        help="stop the export after this many seconds and report it as partial")
    parser.add_argument(
        "--export-pgoptions",
        help="PGOPTIONS for the export process only (e.g. '-c work_mem=256MB'), to see past"
        " a server-side cost of the code under test; printed with the results",
    )
    parser.add_argument("--code", type=Path, default=None,
                        help="directory holding the pggit_export package to benchmark")
    parser.add_argument("--keep", help="keep repositories and timings in this directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--report", metavar="DIR",
                        help="print the table again from DIR/results.json (a --keep directory)")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(Path(args.report, "results.json").read_text())
        timings = Path(args.report, "export-timings.json")
        if timings.exists():
            _prefix_ratio(results["naive"], json.loads(timings.read_text()))
        print(json.dumps(results, indent=2, default=str) if args.json else table(results))
        return
    results = run(args)
    if args.keep:
        Path(args.keep, "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str) if args.json else table(results))


if __name__ == "__main__":
    main()
