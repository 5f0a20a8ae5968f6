"""Hostile or broken input: a history written by an attacker, or by a broken install.

The fixture (fixtures/adversarial/, see build.py there) holds well over 50 history rows:
statements that try to reach the host (plain, and hidden in DO blocks, functions, EXECUTE,
CTEs, Unicode-escaped names), statements that try to outlast the timeout, an over-size
text, broken SQL, psql meta-commands, NULL and odd values, hostile object names.

The export must complete, name every bad row by id in its report (or explain it in the
row's commit), leave a repository `git fsck --strict` accepts with every path inside the
tree, and do none of the hostile things. That last part is checked by side effects:
marker files under a scratch directory, a secret token that must not reach the
repository, and the shared server's databases, roles, tablespaces and settings.

Every check of one export is collected before asserting, so one run lists every problem.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from history import Change, at, git, make_source
from psycopg import sql

from pggit_export import ExportOptions, export_history
from pggit_export.render.layout import decode_name

ROOT = Path(__file__).resolve().parent.parent
ADVERSARIAL = ROOT / "fixtures" / "adversarial"


def _load_build() -> Any:
    spec = importlib.util.spec_from_file_location("adversarial_build", ADVERSARIAL / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()

TIMEOUT = "2s"
MAX_SQL_BYTES = 16 * 1024
SECRET = f"PGGIT-ADVERSARIAL-SECRET-{uuid.uuid4().hex}"
KEPT = {"secret.txt", "victim_dir", "victim_dir/keep", "control", "control/ok"}


# --- plumbing -------------------------------------------------------------------------


@pytest.fixture
def marker() -> Iterator[Path]:
    """A scratch directory the server's OS user can write to and read from.

    Outside pytest's tmp_path (0700, owned by the test's user), so a statement that
    escaped would really leave its file here.
    """
    path = Path(tempfile.mkdtemp(prefix="pggit-adversarial-", dir="/tmp"))
    path.chmod(0o777)
    (path / "secret.txt").write_text(SECRET + "\n")
    (path / "secret.txt").chmod(0o644)
    (path / "victim_dir").mkdir()
    (path / "victim_dir").chmod(0o777)
    (path / "victim_dir" / "keep").write_text("must survive\n")
    (path / "control").mkdir()
    (path / "control").chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def load_fixture(dsn: str, marker: Path) -> None:
    text = (ADVERSARIAL / "history.sql").read_text(encoding="utf-8")
    with psycopg.connect(dsn) as conn:
        conn.execute(text.replace(build.MARKER, str(marker)))  # type: ignore[arg-type]


def control_check(admin_dsn: str, marker: Path) -> None:
    """Prove the side-effect checks can see an escape: a superuser can write and read here."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("COPY (SELECT 1) TO {}").format(sql.Literal(str(marker / "control" / "ok")))
        )
        row = conn.execute(
            "SELECT pg_read_file(%s)", (str(marker / "secret.txt"),)
        ).fetchone()
    assert (marker / "control" / "ok").exists()
    assert row is not None and row[0].strip() == SECRET


def server_state(admin_dsn: str) -> dict[str, Any]:
    """What a hostile history must not change on a server it only borrows."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        def col(query: str) -> list[Any]:
            return sorted(str(r[0]) for r in conn.execute(query).fetchall())  # type: ignore[arg-type]

        return {
            "databases": col(
                "SELECT datname FROM pg_database WHERE datname !~ '^t_[0-9a-f]{12}$'"
            ),
            "tablespaces": col("SELECT spcname FROM pg_tablespace"),
            "roles": col("SELECT rolname FROM pg_roles"),
            "role_settings": col(
                "SELECT coalesce(setdatabase::text, '') || '/' || coalesce(setrole::text, '') || '/'"
                " || array_to_string(setconfig, ',') FROM pg_db_role_setting"
            ),
            "auto_conf": col("SELECT pg_read_file('postgresql.auto.conf')"),
            "file_settings": col(
                "SELECT sourcefile || ':' || name || '=' || setting FROM pg_file_settings"
            ),
            "work_mem": col("SHOW work_mem"),
            "subscriptions": col("SELECT subname FROM pg_subscription"),
        }


def commits(repo: Path) -> list[tuple[str, str]]:
    """(commit id, message) of every commit on main, oldest first."""
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--reverse", "--format=%H%x00%B%x1e", "main"],
        capture_output=True, check=True,
    ).stdout.decode("utf-8", "replace")
    result = []
    for chunk in out.split("\x1e"):
        chunk = chunk.strip("\n")
        if chunk:
            commit, _, message = chunk.partition("\x00")
            result.append((commit, message))
    return result


def ids_of(message: str) -> list[int]:
    from pggit_export.git.message import parse_id_ranges, read_trailer

    value = read_trailer(message, "Pggit-History-Ids")
    return parse_id_ranges(value) if value else []


def all_git_objects(repo: Path) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True, check=True,
    ).stdout


def _ntfs_or_hfs_dotgit(component: str) -> bool:
    stripped = "".join(c for c in component if unicodedata.category(c) != "Cf")
    folded = stripped.casefold().rstrip(". ")
    return folded in {".git", "git~1", ".gitmodules", "gitmod~1", ".gitattributes", "gitatt~1"}


def path_problems(repo: Path) -> list[str]:
    """Every way a tree path could leave, confuse or collide inside the checkout."""
    problems = []
    raw = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", "main"],
        capture_output=True, check=True,
    ).stdout
    paths = [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]
    folded: dict[str, str] = {}
    for path in paths:
        parts = path.split("/")
        if len(parts) != 2:
            problems.append(f"path {path!r} is not <schema>/<file>")
        for part in parts:
            if part in {"", ".", ".."} or part.startswith("."):
                problems.append(f"path {path!r} has component {part!r}")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in part) or "\\" in part:
                problems.append(f"path {path!r} has a control character or backslash")
            if len(part.encode("utf-8", "surrogateescape")) > 255:
                problems.append(f"path {path!r} has a component over 255 bytes")
            if _ntfs_or_hfs_dotgit(part):
                problems.append(f"path {path!r}: {part!r} is .git/.gitmodules on NTFS or HFS+")
        key = path.casefold()
        if key in folded:
            problems.append(f"paths {folded[key]!r} and {path!r} differ only in case")
        folded[key] = path
    # the checkout holds exactly the tree, plus .git
    tops = {p.split("/")[0] for p in paths} | {".git"}
    present = {entry.name for entry in repo.iterdir()}
    if present != tops:
        problems.append(f"checkout top level {sorted(present - tops)} not in the tree, "
                        f"{sorted(tops - present)} missing")
    on_disk = set()
    for dirpath, dirnames, filenames in os.walk(repo):
        rel = Path(dirpath).relative_to(repo)
        if rel.parts[:1] == (".git",):
            continue
        for name in filenames + dirnames:
            full = Path(dirpath) / name
            if full.is_symlink():
                problems.append(f"symlink in checkout: {full}")
        for name in filenames:
            on_disk.add(str(rel / name))
    if on_disk != set(paths):
        problems.append(f"checkout files differ from the tree: {sorted(on_disk ^ set(paths))[:5]}")
    return problems


def decoded_tables(repo: Path) -> set[tuple[str, str]]:
    raw = git(repo, "ls-tree", "-r", "-z", "--name-only", "main")
    result = set()
    for path in filter(None, raw.split("\0")):
        schema_dir, file_name = path.split("/", 1)
        result.add((decode_name(schema_dir), decode_name(file_name)))
    return result


def run_export(source: str, repo: Path, options: ExportOptions) -> tuple[Any, str | None, float]:
    start = time.monotonic()
    try:
        report = export_history(source, repo, options)
    except BaseException:  # noqa: BLE001 - any escape is a finding
        return None, traceback.format_exc(), time.monotonic() - start
    return report, None, time.monotonic() - start


# --- the fixture itself ---------------------------------------------------------------


def test_fixture_is_deterministic_and_large_enough() -> None:
    assert (ADVERSARIAL / "history.sql").read_text(encoding="utf-8") == build.build(), (
        "fixtures/adversarial/history.sql is stale: run python fixtures/adversarial/build.py"
    )
    rows = sum(len(r.objects) for r in build.ROWS)
    bad = sum(len(r.objects) for r in build.ROWS if r.expect != "replayed")
    assert rows >= 50 and bad >= 50
    keys = [r.key for r in build.ROWS]
    assert len(keys) == len(set(keys))


# --- the export of the whole fixture --------------------------------------------------


@pytest.mark.timing
@pytest.mark.parametrize("shadow", ["private", "shared"])
def test_adversarial_history_exports_safely(
    shadow: str, make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path,
    marker: Path,
) -> None:
    """private: the default embedded shadow. shared: the test server itself is the shadow."""
    control_check(pg_admin_dsn, marker)
    (marker / "control" / "ok").unlink()
    source = make_database()
    load_fixture(source, marker)
    before = server_state(pg_admin_dsn)
    repo = tmp_path / "repo"
    options = ExportOptions(
        shadow_dsn=pg_admin_dsn if shadow == "shared" else None,
        statement_timeout=TIMEOUT, max_sql_bytes=MAX_SQL_BYTES,
    )
    try:
        report, crash, seconds = run_export(source, repo, options)
        after = server_state(pg_admin_dsn)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:  # undo what may have escaped
            conn.execute("DROP ROLE IF EXISTS adv_evil_role")
            conn.execute("DROP ROLE IF EXISTS adv_dblink_role")
            conn.execute("ALTER DATABASE postgres RESET work_mem")
            conn.execute("ALTER ROLE ALL RESET work_mem")
    problems: list[str] = []
    if crash is not None:
        problems.append(f"the export raised instead of reporting:\n{crash}")
    problems += side_effect_problems(marker, before, after)
    if report is not None:
        problems += report_problems(report, repo)
        problems += repository_problems(repo, report)
        if seconds > 60:
            problems.append(f"the export took {seconds:.0f}s: a timeout did not hold")
    assert not problems, f"{len(problems)} problems ({shadow} shadow):\n- " + "\n- ".join(problems)


def side_effect_problems(marker: Path, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems = []
    left = sorted(
        str(p.relative_to(marker)) for p in marker.rglob("*")
        if str(p.relative_to(marker)) not in KEPT
    )
    by_marker = {name: row.key for row in build.ROWS for name in row.markers}
    for name in left:
        who = by_marker.get(name.split("/")[0], "?")
        problems.append(f"hostile statement ran: {marker / name} was created (row {who})")
    if not (marker / "victim_dir" / "keep").exists():
        problems.append("hostile statement ran: victim_dir was removed")
    for name, value in before.items():
        if after[name] != value:
            problems.append(f"the server's {name} changed: {value} -> {after[name]}")
    return problems


def report_problems(report: Any, repo: Path) -> list[str]:
    problems = []
    failed = {i for item in report.failed for i in item.history_ids}
    refused = {i for item in report.refused_statements for i in item.history_ids}
    not_replayed = {i for item in report.not_replayed for i in item.history_ids}
    repaired = {i for item in report.repairs for i in item.history_ids}
    for item in [*report.failed, *report.refused_statements, *report.not_replayed]:
        if not item.reason or not item.history_ids:
            problems.append(f"report entry without ids or reason: {item}")
    messages: dict[int, list[str]] = {}
    for _commit, message in commits(repo):
        for i in ids_of(message):
            messages.setdefault(i, []).append(message)
    ids = build.history_ids()
    for row in build.ROWS:
        row_ids = ids[row.key]
        for i in row_ids:
            if len(messages.get(i, [])) != 1:
                problems.append(f"history id {i} ({row.key}) is in {len(messages.get(i, []))} commits")
        first = row_ids[0]
        message = (messages.get(first) or [""])[0]
        expect = row.expect
        where = (
            "failed" if first in failed else "refused" if first in refused
            else "not_replayed" if first in not_replayed else "not in the report"
        )
        if expect == "blocked" and first not in failed | refused:
            problems.append(f"{row.key} (ids {row_ids}) should be refused or fail, was {where}")
        elif expect == "repaired-or-failed" and first not in failed | repaired:
            problems.append(f"{row.key} (ids {row_ids}) should be repaired or fail, was {where}")
        elif expect == "failed" and first not in failed:
            problems.append(f"{row.key} (ids {row_ids}) should fail, was {where}")
        elif expect == "refused" and first not in refused:
            problems.append(f"{row.key} (ids {row_ids}) should be refused, was {where}")
        elif expect == "not_replayed" and first not in not_replayed:
            problems.append(f"{row.key} (ids {row_ids}) should be not replayed, was {where}")
        elif expect == "replayed" and first in failed:
            error = next(x.error for x in report.failed if first in x.history_ids)
            problems.append(f"{row.key} (ids {row_ids}) should replay, failed: {error}")
        elif expect.startswith("noted:") and expect[6:] not in message:
            problems.append(f"{row.key} (ids {row_ids}): commit message lacks {expect[6:]!r}")
        if row.orphan and not any(
            word in message for word in ("pggit.objects", "unknown object", "no objects row")
        ) and first not in failed | refused | not_replayed:
            problems.append(
                f"{row.key} (ids {row_ids}): history row whose pggit.objects row is gone is "
                "neither reported nor explained in its commit"
            )
    return problems


def repository_problems(repo: Path, report: Any) -> list[str]:
    problems = []
    fsck = subprocess.run(
        ["git", "-C", str(repo), "fsck", "--strict", "--no-dangling"],
        capture_output=True, text=True, check=False,
    )
    if fsck.returncode != 0 or fsck.stderr.strip():
        problems.append(f"git fsck --strict: {fsck.returncode} {fsck.stderr.strip()[:1500]}")
    problems += path_problems(repo)
    # nothing read from the host reaches the repository or the report
    leaks = {"the secret token": SECRET.encode()}
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    leaks["/etc/passwd's first line"] = passwd.encode()
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""
    if len(hostname) >= 8:
        leaks["/etc/hostname"] = hostname.encode()
    blob = all_git_objects(repo)
    summary = json.dumps(report.to_dict(), default=str).encode()
    for what, needle in leaks.items():
        if needle in blob:
            problems.append(f"{what} was written into the repository")
        if needle in summary:
            problems.append(f"{what} appears in the export report")
    # every table a hostile-name row created is in the head tree, at its own path
    tables = decoded_tables(repo)
    ids = build.history_ids()
    failed = {i for item in report.failed for i in item.history_ids}
    for row in build.ROWS:
        if row.expect != "replayed" or ids[row.key][0] in failed:
            continue
        for _, object_type, schema, name in row.objects:
            if object_type == "TABLE" and (schema, name) not in tables:
                problems.append(f"{row.key}: table {schema}.{name!r} missing from the head tree")
    if ("public", "after_path") not in tables:
        problems.append("SET search_path leaked into the next changeset")
    return problems


def test_names_git_treats_as_dotgit_on_ntfs(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    """`git~1` is the 8.3 short name of `.git` on NTFS and `gitmod~1` that of `.gitmodules`:
    git refuses such tree entries (checkout) and flags them (fsck)."""
    ddl = (
        'CREATE SCHEMA "git~1";\nCREATE TABLE "git~1"."HEAD" (id int);\n'
        'CREATE SCHEMA "GITMOD~1";\nCREATE TABLE "GITMOD~1".x (id int);\n'
        'CREATE SCHEMA "git~1. .";\nCREATE TABLE "git~1. .".y (id int);\n'
        'CREATE TABLE public."git~1" (id int);\n'
    )
    source = make_source(make_database(), [Change(ddl, at(1), objects=[
        ("CREATE", "TABLE", "git~1", "HEAD"), ("CREATE", "TABLE", "GITMOD~1", "x"),
        ("CREATE", "TABLE", "git~1. .", "y"), ("CREATE", "TABLE", "public", "git~1"),
    ])])
    repo = tmp_path / "repo"
    report, crash, _ = run_export(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert crash is None, f"the export raised:\n{crash}"
    assert report.clean
    problems = path_problems(repo)
    fsck = subprocess.run(
        ["git", "-C", str(repo), "fsck", "--strict"], capture_output=True, text=True, check=False
    )
    if fsck.returncode != 0:
        problems.append(f"git fsck --strict: {fsck.stderr.strip()}")
    assert not problems, "\n".join(problems)
    assert {("git~1", "HEAD"), ("GITMOD~1", "x"), ("git~1. .", "y"), ("public", "git~1")} <= (
        decoded_tables(repo)
    )


def test_head_paths_stay_distinct_on_macos_file_systems(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path, marker: Path
) -> None:
    """Beyond case: APFS/HFS+ also fold Unicode normalization (é vs e+U+0301) and HFS+
    ignores zero-width characters (us<ZWJ>ers vs users), so those must not share a file."""
    names = ["caf\u00e9", "cafe\u0301", "us\u200ders", "users"]
    ddl = "".join(f'CREATE TABLE public."{n}" (id int);\n' for n in names)
    source = make_source(make_database(), [
        Change(ddl, at(1), objects=[("CREATE", "TABLE", "public", n) for n in names]),
    ])
    repo = tmp_path / "repo"
    export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    paths = git(repo, "ls-tree", "-r", "-z", "--name-only", "main").split("\0")

    def hfs_key(path: str) -> str:
        text = unicodedata.normalize("NFD", path)
        return "".join(c for c in text if unicodedata.category(c) != "Cf").casefold()

    keys = [hfs_key(p) for p in paths if p]
    assert len(keys) == len(set(keys)), f"paths collide on macOS: {sorted(p for p in paths if p)}"


# --- hostile values the reader meets --------------------------------------------------


def _raw_source(dsn: str, rows: list[tuple[str, str, Any]]) -> None:
    """pgGit v1 tables with hand-written rows: (sql_executed, created_at SQL, metadata SQL)."""
    with psycopg.connect(dsn) as conn:
        conn.execute((ROOT / "fixtures" / "pggit_v1_schema.sql").read_text())  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO pggit.objects (id, object_type, schema_name, object_name)"
            " VALUES (1, 'TABLE', 'public', 't')"
        )
        for i, (text, when, metadata) in enumerate(rows, 1):
            conn.execute(
                sql.SQL(
                    "INSERT INTO pggit.history (id, object_id, change_type, change_severity,"
                    " sql_executed, created_at, created_by, new_metadata)"
                    " VALUES ({}, 1, 'CREATE', 'MINOR', %s, {}, 'mallory', {})"
                ).format(sql.Literal(i), sql.SQL(when), sql.SQL(metadata)),
                (text,),
            )


def _assert_completes_and_names(source: str, repo: Path, ids: list[int], **kw: Any) -> Any:
    report, crash, _ = run_export(source, repo, ExportOptions(statement_timeout=TIMEOUT, **kw))
    assert crash is None, f"the export raised instead of naming the history id:\n{crash}"
    seen = [i for _, message in commits(repo) for i in ids_of(message)]
    assert sorted(seen) == sorted(ids)
    return report


@pytest.mark.parametrize(
    "when",
    ["'infinity'", "'-infinity'", "'0044-03-15 12:00 BC'", "'1969-12-31 23:59:59'",
     "'9999-12-31 23:59:59'"],
)
def test_extreme_timestamps(
    when: str, make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_database()
    _raw_source(source, [
        ("CREATE TABLE public.a (id int);", "'2024-01-01 10:00'", "NULL"),
        ("CREATE TABLE public.b (id int);", when, "NULL"),
        ("CREATE TABLE public.c (id int);", "'2024-01-02 10:00'", "NULL"),
    ])
    repo = tmp_path / "repo"
    _assert_completes_and_names(source, repo, [1, 2, 3], shadow_dsn=pg_admin_dsn)
    git(repo, "fsck", "--strict")


def test_deeply_nested_metadata(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_database()
    _raw_source(source, [
        ("CREATE TABLE public.a (id int);", "'2024-01-01 10:00'",
         "(repeat('[', 3000) || repeat(']', 3000))::jsonb"),
        ("CREATE TABLE public.b (id int);", "'2024-01-02 10:00'", "NULL"),
    ])
    _assert_completes_and_names(source, tmp_path / "repo", [1, 2], shadow_dsn=pg_admin_dsn)


def test_fifty_megabyte_statement_is_refused_unparsed(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path, marker: Path
) -> None:
    huge = (
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}/huge';\n"
        + "CREATE TABLE public.pad (id int); -- " + "x" * (50 * 1024 * 1024) + "\n"
    )
    source = make_source(make_database(), [
        Change("CREATE TABLE public.a (id int);", at(1), objects=[("CREATE", "TABLE", "public", "a")]),
        Change(huge, at(2), objects=[("CREATE", "TABLE", "public", "pad")]),
    ])
    repo = tmp_path / "repo"
    start = time.monotonic()
    report = _assert_completes_and_names(source, repo, [1, 2], shadow_dsn=pg_admin_dsn)
    assert time.monotonic() - start < 30
    assert [r.history_ids for r in report.refused_statements] == [[2]]
    assert len(report.refused_statements[0].statement or "") < 10_000
    assert not (marker / "huge").exists()
    message = git(repo, "log", "-1", "--format=%B")
    assert len(message) < 200_000 and "Pggit-History-Ids: 2" in message
    git(repo, "fsck", "--strict")


def test_invalid_utf8_in_a_sql_ascii_source(pg_admin_dsn: str, tmp_path: Path) -> None:
    """A SQL_ASCII database stores any bytes; psycopg then returns bytes, not str."""
    from conftest import dsn_for

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
        ).format(sql.Identifier(name)))
    source = dsn_for(pg_admin_dsn, name)
    try:
        with psycopg.connect(source) as conn:
            conn.execute((ROOT / "fixtures" / "pggit_v1_schema.sql").read_text())  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO pggit.objects (id, object_type, schema_name, object_name) VALUES"
                " (1, 'TABLE', 'public', 'ok'), (2, 'TABLE', E'sch\\xe9ma', E't\\xff')"
            )
            conn.execute(
                "INSERT INTO pggit.history (id, object_id, change_type, change_severity,"
                " sql_executed, created_at, created_by) VALUES"
                " (1, 1, 'CREATE', 'MINOR', 'CREATE TABLE public.ok (id int);',"
                "  '2024-01-01 10:00', 'alice'),"
                " (2, 2, 'CREATE', 'MINOR', E'CREATE TABLE public.caf\\xe9 (id int); -- \\xff\\xfe',"
                "  '2024-01-02 10:00', E'm\\xe4llory'),"
                " (3, 1, 'ALTER', 'MINOR', 'ALTER TABLE public.ok ADD x int;',"
                "  '2024-01-03 10:00', 'alice')"
            )
        repo = tmp_path / "repo"
        report = _assert_completes_and_names(source, repo, [1, 2, 3], shadow_dsn=pg_admin_dsn)
        named = {i for item in [*report.failed, *report.refused_statements, *report.not_replayed]
                 for i in item.history_ids}
        message = next(m for _, m in commits(repo) if ids_of(m) == [2])
        assert 2 in named or "UTF-8" in message, "the invalid text is neither reported nor explained"
        assert "public/ok.sql" in git(repo, "ls-tree", "-r", "--name-only", "main")
        git(repo, "fsck", "--strict")
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- an empty history -----------------------------------------------------------------


def test_empty_history_exits_0_with_a_clear_message(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    source = make_source(make_database(), [])
    repo = tmp_path / "repo"
    result = subprocess.run(
        [sys.executable, "-m", "pggit_export", "export", source, str(repo),
         "--shadow-dsn", pg_admin_dsn],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "0 history rows" in result.stdout and "(no commits)" in result.stdout
    log = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--all"], capture_output=True, text=True, check=False
    )
    assert log.stdout.strip() == ""


# --- attacks on a shared shadow server, and on the network ----------------------------


def test_hidden_statements_cannot_kill_other_sessions_on_a_shared_shadow(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    """The reader's connection lives on the same server as the shadow here."""
    kill = (
        "DO $$ BEGIN EXECUTE 'SELECT count(pg_terminate' || '_backend(pid)) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND backend_type = ''client backend'''; END $$;"
    )
    source = make_source(make_database(), [
        Change("CREATE TABLE public.a (id int);", at(1), objects=[("CREATE", "TABLE", "public", "a")]),
        Change(kill, at(2)),
        Change("CREATE TABLE public.b (id int);", at(3), objects=[("CREATE", "TABLE", "public", "b")]),
    ])
    with psycopg.connect(pg_admin_dsn, autocommit=True) as bystander:
        report, crash, _ = run_export(
            source, tmp_path / "repo", ExportOptions(shadow_dsn=pg_admin_dsn, statement_timeout=TIMEOUT)
        )
        alive = True
        try:
            bystander.execute("SELECT 1")
        except psycopg.OperationalError:
            alive = False
    assert crash is None, f"the export died:\n{crash}"
    assert alive, "a history statement terminated another session on the shadow server"
    assert 2 in {i for item in [*report.failed, *report.refused_statements] for i in item.history_ids}


def test_subscription_cannot_reach_the_network(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """CREATE/ALTER SUBSCRIPTION makes the server connect out; nothing may connect here."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    hits: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, address = listener.accept()
            except (TimeoutError, OSError):
                continue
            hits.append(str(address))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        source = make_source(make_database(), [
            Change(
                f"CREATE SUBSCRIPTION adv_sub CONNECTION 'host=127.0.0.1 port={port} dbname=x"
                " connect_timeout=2' PUBLICATION p WITH (connect = false, enabled = false,"
                " create_slot = false, slot_name = NONE);", at(1),
            ),
            Change("ALTER SUBSCRIPTION adv_sub SET (slot_name = 'adv_slot');\n"
                   "ALTER SUBSCRIPTION adv_sub ENABLE;", at(2)),
            Change("DO $$ BEGIN PERFORM pg_sleep(1.5); END $$;\n"
                   "CREATE TABLE public.waited (id int);", at(3),
                   objects=[("CREATE", "TABLE", "public", "waited")]),
        ])
        report, crash, _ = run_export(
            source, tmp_path / "repo", ExportOptions(statement_timeout="5s")
        )
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert crash is None, f"the export died:\n{crash}"
    assert not hits, f"the shadow connected out to 127.0.0.1:{port} ({len(hits)} times)"
    named = {i for item in [*report.failed, *report.refused_statements] for i in item.history_ids}
    assert {1, 2} & named, "subscription statements ran without being reported"
