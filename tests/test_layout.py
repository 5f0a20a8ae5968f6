"""Layout: where each object's file goes, for ordinary and hostile names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from history import Change, at, git, make_source

from pggit_export import ExportOptions, export_history
from pggit_export.render.layout import assign_paths, decode_name, encode_name
from pggit_export.render.snapshot import ObjectKey


def paths(*keys: ObjectKey) -> dict[ObjectKey, str]:
    return assign_paths(list(keys))


def test_plain_names() -> None:
    users = ObjectKey("table", "public", "users")
    schema = ObjectKey("schema", "public", "public")
    assert paths(users, schema) == {users: "public/users.sql", schema: "public/_schema.sql"}


@pytest.mark.parametrize(
    "name",
    [".git", "..", ".hidden", "a/b", "a\\b", "x.y", "50%", "tab\there", "nul\x00", "CON",
     "what?", "Ünïcødé", "a" * 63],
)
def test_encoded_names_are_safe_and_reversible(name: str) -> None:
    stem = encode_name(name)
    assert "/" not in stem and "\\" not in stem and "." not in stem
    assert not any(ord(c) < 0x20 for c in stem)
    assert stem.upper() not in {"CON", "NUL"}
    assert decode_name(stem + ".sql") == name


def test_kind_suffix_only_when_kinds_share_a_name() -> None:
    table = ObjectKey("table", "public", "users")
    function = ObjectKey("function", "public", "users")
    other = ObjectKey("function", "public", "other")
    assert paths(table, function, other) == {
        table: "public/users.table.sql",
        function: "public/users.function.sql",
        other: "public/other.sql",
    }


def test_names_differing_in_case_stay_distinct_when_case_is_folded() -> None:
    lower = ObjectKey("table", "public", "users")
    upper = ObjectKey("table", "public", "Users")
    result = paths(lower, upper)
    assert result[lower] == "public/users.sql"
    assert result[upper] == "public/%55sers.sql"
    assert len({p.casefold() for p in result.values()}) == 2
    assert decode_name(result[upper].split("/")[1]) == "Users"


def test_schema_directories_are_encoded_too() -> None:
    key = ObjectKey("table", "../evil", "t")
    assert paths(key)[key] == "%2E%2E%2Fevil/t.sql"


def test_long_names_are_cut_with_a_hash() -> None:
    key = ObjectKey("table", "s", "%" * 100)  # encodes to 300 bytes
    path = paths(key)[key]
    file_name = path.split("/")[1]
    assert len(file_name.encode()) <= 255 and file_name.endswith(".sql") and "~" in file_name


def test_hostile_names_export_inside_the_tree(
    make_database: Callable[[], str], pg_admin_dsn: str, tmp_path: Path
) -> None:
    ddl = (
        'CREATE SCHEMA ".git";\n'
        'CREATE TABLE ".git"."../../etc/passwd" (id int);\n'
        'CREATE TABLE public."Users" (id int);\n'
        'CREATE TABLE public.users (id int);\n'
        'CREATE FUNCTION public.users() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n'
    )
    source = make_source(make_database(), [Change(ddl, at(1), objects=[
        ("CREATE", "TABLE", ".git", "../../etc/passwd"), ("CREATE", "TABLE", "public", "Users"),
        ("CREATE", "TABLE", "public", "users"), ("CREATE", "FUNCTION", "public", "17000"),
    ])])
    repo = tmp_path / "repo"
    report = export_history(source, repo, ExportOptions(shadow_dsn=pg_admin_dsn))
    assert report.clean
    git(repo, "fsck", "--strict")
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", "main").split()) == [
        "%2Egit/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.sql",
        "%2Egit/_schema.sql",
        "public/%55sers.sql",
        "public/_schema.sql",
        "public/users.function.sql",
        "public/users.table.sql",
    ]
    assert not (tmp_path / "etc").exists()
    with psycopg.connect(source) as conn:  # the source was only read
        assert conn.execute("SELECT to_regclass('public.users')").fetchone() == (None,)


def test_incremental_layout_matches_a_fresh_one_as_names_come_and_go() -> None:
    from pggit_export.render.layout import TreeLayout

    layout = TreeLayout()
    steps = [
        ([ObjectKey("table", "public", "users"), ObjectKey("schema", "public", "public")], []),
        ([ObjectKey("function", "public", "users")], []),  # clash: both get kind suffixes
        ([ObjectKey("table", "public", "Users")], []),  # case clash
        ([ObjectKey("table", "Public", "x")], []),  # schema directories clash by case
        ([], [ObjectKey("function", "public", "users")]),
        ([], [ObjectKey("table", "Public", "x"), ObjectKey("table", "public", "Users")]),
    ]
    live: set[ObjectKey] = set()
    for created, dropped in steps:
        before = dict(layout.paths)
        moves = layout.update(created, dropped)
        live = (live | set(created)) - set(dropped)
        assert layout.paths == assign_paths(live)
        for key, (old, new) in moves.items():
            assert before.get(key) == old and layout.paths.get(key) == new
    assert layout.paths == {
        ObjectKey("table", "public", "users"): "public/users.sql",
        ObjectKey("schema", "public", "public"): "public/_schema.sql",
    }
