"""Views rendered in an older source's dialect, against that major's own render (issue 13).

    python bench/dialect_views.py [--sql FILE] [--source-bin DIR] [--without-parser]

Runs ``fixtures/dialect/views.sql`` (tables and views of every shape: one relation with and
without an alias, sub-queries, joins, USING, set operations, CTEs, functions and VALUES in
FROM, TABLESAMPLE, relations named ``old`` and ``new``, long constants, odd names) on a
server of the source's major (default: PostgreSQL 15 under /usr/lib/postgresql/15/bin) and
on the embedded server. Each view's file is rendered by the source's server as it is, and
by the embedded one with ``Dialect.between`` and its raw parser, as an export through that
shadow writes it (``--without-parser``: without the parser, names and NOT NULL constraints
only, as before the view rewrite). Prints the views that differ, and how many; exits 1 if
any does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pggit_export.render.dialect import Dialect, read_keywords  # noqa: E402
from pggit_export.render.rawparse import RawParser  # noqa: E402
from pggit_export.render.snapshot import render_objects  # noqa: E402
from pggit_export.shadow.server import (  # noqa: E402
    EmbeddedServer,
    PostgresBinaries,
    _version_of,
    find_binaries,
)

VIEW_KINDS = ("view", "matview")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sql", type=Path, default=ROOT / "fixtures" / "dialect" / "views.sql")
    parser.add_argument("--source-bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    parser.add_argument("--without-parser", action="store_true")
    args = parser.parse_args()
    version = _version_of(args.source_bin)
    if version is None:
        raise SystemExit(f"{args.source_bin}: no PostgreSQL server there")
    source_binaries = PostgresBinaries(args.source_bin, version)
    text = args.sql.read_text()

    with EmbeddedServer(source_binaries) as server, psycopg.connect(
        server.conninfo(), autocommit=True
    ) as conn:
        conn.execute(text)  # type: ignore[arg-type]
        source_keywords = read_keywords(conn)
        expected = {k: v for k, v in render_objects(conn).files.items() if k.kind in VIEW_KINDS}

    rendering = find_binaries()
    with EmbeddedServer(rendering) as server, psycopg.connect(
        server.conninfo(), autocommit=True
    ) as conn:
        conn.execute(text)  # type: ignore[arg-type]
        raw_parser = None if args.without_parser else RawParser.connect(server.conninfo())
        dialect = dataclasses.replace(
            Dialect.between(source_binaries.major, source_keywords,
                            rendering.major, read_keywords(conn)),
            parser=raw_parser)
        got = {k: v for k, v in render_objects(conn, dialect=dialect).files.items()
               if k.kind in VIEW_KINDS}
        if raw_parser is not None:
            raw_parser.close()

    differing = sorted(k for k in expected if got.get(k) != expected[k])
    for key in differing:
        print(f"{key.schema}.{key.name}:\n  {source_binaries.major}: {expected[key]!r}\n"
              f"  {rendering.major}: {got.get(key)!r}")
    print(f"{len(expected)} views, PostgreSQL {source_binaries.version} against "
          f"{rendering.version} in {source_binaries.major}'s dialect: {len(differing)} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
