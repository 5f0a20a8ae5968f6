"""The real-history corpus (fixtures/corpus/): its captured histories keep the fidelity
fixture's promises, and one of them exports through the real command line, one commit per
recorded changeset, checked with the real git CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from history import cli, git, load_module

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "corpus"
HISTORY_DIR = re.compile(r"^(?P<project>[a-z]+)-(?P<mode>batch|psql-f)-pg(?P<major>\d+)$")


harness = load_module("_bench_fidelity", ROOT / "bench" / "fidelity.py")
HISTORIES = sorted(p.parent for p in CORPUS.glob("*/steps.json"))


def test_the_corpus_has_every_project_in_both_modes_on_two_majors() -> None:
    names = {p.name for p in HISTORIES}
    projects = {p.parent.name for p in CORPUS.glob("*/migrations.py")}
    assert len(projects) >= 2
    expected = {
        f"{project}-{mode}-pg{major}"
        for project in projects
        for mode in ("batch", "psql-f")
        for major in (15, 18)
    }
    assert names == expected


@pytest.mark.parametrize("directory", HISTORIES, ids=lambda p: p.name)
def test_corpus_history_is_well_formed(directory: Path) -> None:
    match = HISTORY_DIR.match(directory.name)
    assert match, directory.name
    project, mode, major = match["project"], match["mode"], int(match["major"])
    module = load_module(f"_corpus_{project}", CORPUS / project / "migrations.py")
    manifest: dict[str, Any] = json.loads((directory / "steps.json").read_text())
    assert int(manifest["postgresql"].split(".")[0]) == major
    assert manifest["truth_dump_flags"] == list(harness.build.TRUTH_DUMP_FLAGS)

    steps = manifest["steps"]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    assert steps[0]["migration"] == harness.build.INSTALL_LABEL
    assert (steps[0]["first_id"], steps[0]["last_id"]) == (1, 1)
    # Recorded steps write consecutive history ids, in order, with no hole.
    next_id = 1
    for step in steps:
        if step["first_id"] is not None:
            assert step["first_id"] == next_id and step["last_id"] >= step["first_id"]
            next_id = step["last_id"] + 1
    # Every migration of the module, in its order; one step each when sent as a batch.
    labels = [s["migration"] for s in steps[1:]]
    names = [m.name for m in module.MIGRATIONS]
    assert list(dict.fromkeys(labels)) == names
    if mode == "batch":
        assert labels == names

    history = (directory / "history.sql").read_text(encoding="utf-8")
    assert f"fixtures/corpus/{project}/migrations.py" in history.splitlines()[2]
    assert history.count('INSERT INTO "pggit"."history" ') == next_id - 1
    for statement in getattr(module, "CLUSTER_SQL", "").strip().splitlines():
        assert statement in history
    truths = harness.build.truth_texts(manifest)
    assert len(truths) == len(steps) and "CREATE TABLE" in truths[-1]


def _changesets(dsn: str) -> list[list[int]]:
    """History ids grouped as the reader groups them: consecutive rows sharing text, time
    and author (a row without a time never joins a group)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, sql_executed, created_at, created_by FROM pggit.history"
            " ORDER BY created_at, id"
        ).fetchall()
    groups: list[list[int]] = []
    previous: tuple[Any, ...] | None = None
    for history_id, text, created_at, created_by in rows:
        key = (text, created_at, created_by)
        if groups and created_at is not None and key == previous:
            groups[-1].append(history_id)
        else:
            groups.append([history_id])
        previous = key
    return groups


def test_a_corpus_history_exports_one_commit_per_changeset(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    fixture = harness.load_fixture(CORPUS / "procrastinate-batch-pg18")
    source = make_database()
    with psycopg.connect(source) as conn:
        conn.execute(fixture.history_sql.encode())
    changesets = _changesets(source)
    assert len(changesets) > 30

    repo = tmp_path / "procrastinate"
    result = cli("export", source, str(repo), "--json", "--shadow-dsn", pg_admin_dsn)
    assert result.returncode in (0, 1), result.stderr  # 1: some changeset failed to replay
    summary = json.loads(result.stdout)
    assert summary["head"] == git(repo, "rev-parse", "main").strip()

    assert int(git(repo, "rev-list", "--count", "main")) == len(changesets)
    trailers = git(
        repo, "log", "--reverse", "--format=%(trailers:key=Pggit-History-Ids,valueonly)%x00"
    )
    per_commit = [
        harness.parse_id_ranges(value.strip())
        for value in trailers.split("\0")
        if value.strip()
    ]
    assert per_commit == changesets


def test_the_naive_replay_runs_each_recorded_changeset_once(pg_admin_dsn: str) -> None:
    """bench/corpus.py's yardstick: the recorded SQL run as it is, without the tool. On
    procrastinate (role-level search_path, pre-pgGit schema) every statement runs and every
    object lands in public, so no point but the skipped install is near the truth."""
    corpus = load_module("_bench_corpus", ROOT / "bench" / "corpus.py")
    with psycopg.connect(pg_admin_dsn) as conn:
        if conn.info.server_version // 10000 != 18:
            pytest.skip("the history and its truths are PostgreSQL 18's")
    fixture = harness.load_fixture(CORPUS / "procrastinate-batch-pg18")
    binaries = harness.EmbeddedServer().binaries
    if binaries.major != 18:
        pytest.skip("needs a PostgreSQL 18 pg_dump")
    result = corpus.naive_replay(pg_admin_dsn, binaries, fixture)

    source_points = [p.history_ids for p in result.points]
    assert len(source_points) == 36 and source_points[0] == [1]
    assert [p.replay for p in result.points] == ["skipped"] + ["ok"] * 35
    assert result.points[0].lines_different == 1  # CREATE SCHEMA procrastinate, pre-pgGit
    assert all(p.lines_different > 1 for p in result.points[1:])
    assert result.point_for([5]) is next(p for p in result.points if 5 in p.history_ids)
