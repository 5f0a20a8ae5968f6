"""Deterministic generator of synthetic pgGit v1 histories, for the benchmark.

    python bench/generate.py --size small                 # plan only: print the stats
    python bench/generate.py --size small --dsn DSN       # capture into an empty database

Two steps:

1. ``generate_migrations(changesets, live_target, seed)`` plans a migration list with a
   seeded ``random.Random`` and an in-memory model of the schema (tables, columns, indexes,
   constraints, views and what they read, functions and their overloads, types), so every
   statement is valid at the point where it runs: FKs point to live tables, a view whose
   column goes away is dropped and re-created around the change, a dropped table's views go
   first, names never collide. The same seed always gives the same list, byte for byte.

2. ``capture(conninfo, migrations)`` runs that list in an empty database under the v1
   capture triggers of ``fixtures/v1_capture.sql``, exactly the way
   ``fixtures/build_fixtures.py`` does (``batch``: one query; ``psql-f``: one query per
   statement), so the history rows are the ones pgGit v1 would write: one row per touched
   object, INDEX rows for inline PK/UNIQUE, functions under their OID, DROP rows per index,
   texts repeated on every row of a batch. Every statement really runs, DML included.

   Only the stamping differs from build_fixtures.py, for speed: instead of rewriting
   ``created_at``/``created_by`` with an UPDATE after each transaction (a scan of
   ``pggit.objects`` each time, quadratic over 20,000 migrations), a BEFORE INSERT row
   trigger on ``pggit.history`` (and one on ``pggit.objects``) copies them from two session
   settings set just before each transaction. The rows come out the same: one
   ``created_at`` per transaction, ``psql-f`` transactions 3 seconds apart. The stamping
   triggers are dropped with the event triggers at the end.

What the history contains (mix of operations, see ``_Planner``): CREATE TABLE with identity
or bigserial PK, inline UNIQUE, CHECK, defaults and FKs to earlier tables; ALTER TABLE
ADD/DROP/RENAME COLUMN, ALTER COLUMN TYPE, SET/DROP DEFAULT, ADD CONSTRAINT (check, unique,
foreign key); CREATE/DROP INDEX; views over tables (with a join along an FK) and views over
views, CREATE OR REPLACE VIEW that appends a column, DROP and re-CREATE of views when a
column they read changes, view renames; functions (SQL and PL/pgSQL) with overloads, CREATE
OR REPLACE with a new body, DROP FUNCTION of an overload; enum (with ADD VALUE), composite
and domain types used by columns and function arguments; table renames; DROP TABLE and a
later re-CREATE of the same name (with another shape); a few schemas; INSERT and UPDATE
mixed into batches; BEGIN/COMMIT around some batches; comment headers. Untracked commands
(CREATE TYPE/SCHEMA, RENAME COLUMN, ADD VALUE, DROP FUNCTION, COMMENT) are always sent in a
batch that also holds a tracked command, as in fixtures/demo/migrations.py, so they reach
the history; ``psql-f`` migrations hold only tracked DDL and DML.

Times: one migration every 1 to 9 minutes from 2022-01-01, by 5 authors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SCHEMA_SQL = FIXTURES / "pggit_v1_schema.sql"
CAPTURE_SQL = FIXTURES / "v1_capture.sql"

# size name -> (changesets, live objects to grow to)
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (50, 25),
    "small": (2_000, 300),
    "large": (20_000, 2_000),
}
DEFAULT_SEED = 20220101

START = datetime(2022, 1, 1, 9, 0, 0)
PGGIT_INSTALLED_AT = datetime(2022, 1, 1, 8, 30, 0)
PGGIT_INSTALLED_BY = "postgres"
AUTHORS = ("alice", "bob", "carol", "dmitri", "deploy_bot")
PSQL_F_STEP = timedelta(seconds=3)

_NOUNS = (
    "account", "address", "invoice", "payment", "customer", "product", "order", "shipment",
    "supplier", "warehouse", "stock", "price", "discount", "coupon", "refund", "review",
    "ticket", "session", "device", "employee", "team", "project", "task", "comment",
    "document", "folder", "tag", "category", "region", "store", "cart", "wishlist",
    "subscription", "plan", "usage", "event", "metric", "alert", "report", "batch",
)
_ATTRS = (
    "title", "note", "label", "amount", "total", "quantity", "weight", "score", "rank",
    "starts_on", "ends_on", "opened_at", "closed_at", "flag", "active", "payload", "ref",
    "city", "country", "phone", "email", "color", "size", "level", "source", "channel",
    "reason", "status_text", "budget", "ratio", "external_id", "locale", "version_no",
)
_SCHEMAS = ("app", "billing", "inventory", "reporting", "audit", "hr")
_VERBS = ("calc", "format", "normalize", "score", "count", "classify", "mask", "round")

# column type -> (backfill literal that satisfies every check this generator adds, or None)
_COLUMN_TYPES: dict[str, str | None] = {
    "text": "'n/a'",
    "varchar(40)": "'n/a'",
    "varchar(120)": "'n/a'",
    "integer": "0",
    "bigint": "0",
    "numeric(12,2)": "0",
    "boolean": "false",
    "date": "DATE '2022-01-01'",
    "timestamptz": "TIMESTAMPTZ '2022-01-01 00:00:00+00'",
    "jsonb": "'{}'::jsonb",
    "uuid": None,
}
_NUMERIC = {"integer", "bigint", "numeric(12,2)"}


# ----------------------------------------------------------------------------- model


@dataclass(eq=False)
class Column:
    """A column of a table, or an output column of a view (then ``source`` is what it reads)."""

    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    # Every value in the source's data is NULL (or the table is empty): UNIQUE and FOREIGN
    # KEY can be added without the source's seed rows making them fail.
    all_null: bool = True
    pk: bool = False
    fk_to: Table | None = None
    required: bool = False  # NOT NULL without default: INSERTs give it a unique value
    source: Column | None = None  # view columns only
    owner: Any = None  # Table or View


@dataclass(eq=False)
class Index:
    """An explicitly named index or UNIQUE constraint (both are relations)."""

    name: str
    columns: list[Column]
    constraint: bool = False  # a UNIQUE constraint: dropped with ALTER TABLE


@dataclass(eq=False)
class Constraint:
    """A named CHECK or FOREIGN KEY constraint added with ALTER TABLE."""

    name: str
    column: Column


@dataclass(eq=False)
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    rows: int = 0

    @property
    def qname(self) -> str:
        return f"{self.schema}.{self.name}"

    def col(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(eq=False)
class View:
    """SELECT some columns of one base relation, optionally LEFT JOIN a table along an FK."""

    schema: str
    name: str
    base: Table | View
    columns: list[Column] = field(default_factory=list)
    join: tuple[Column, Table, Column] | None = None  # (fk column of base, table, its id)

    @property
    def qname(self) -> str:
        return f"{self.schema}.{self.name}"

    def reads(self) -> list[Column]:
        """Every column this view's definition depends on."""
        cols = [c.source for c in self.columns if c.source is not None]
        if self.join is not None:
            cols += [self.join[0], self.join[2]]
        return cols

    def col(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(eq=False)
class Overload:
    args: str  # "p integer, q text"
    returns: str
    body_seed: int
    reads: Table | None = None  # a SQL function counting rows of a table


@dataclass(eq=False)
class Function:
    schema: str
    name: str
    overloads: dict[str, Overload] = field(default_factory=dict)  # arg types -> overload

    @property
    def qname(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(eq=False)
class UserType:
    schema: str
    name: str
    kind: str  # enum, composite, domain
    labels: list[str] = field(default_factory=list)
    base: str = ""  # domain: base type; composite: first field's type

    @property
    def qname(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Stmt:
    """One statement of a migration, and whether v1's triggers record it."""

    text: str
    tracked: bool = True
    dml: bool = False


@dataclass(frozen=True)
class Migration:
    """One migration as a client sent it (see fixtures/demo/migrations.py).

    ``batch``: ``sql`` goes out as one query; ``psql-f``: each of ``statements`` is its own
    query and, outside BEGIN/COMMIT, its own transaction.
    """

    name: str
    at: datetime
    author: str
    mode: str
    statements: tuple[str, ...]
    sql: str
    kind: str
    changesets: int  # replay units it should leave in the history


# ----------------------------------------------------------------------------- planner


class _Planner:
    """Plans operations against the in-memory model; one instance per generated history."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tables: list[Table] = []
        self.views: list[View] = []
        self.functions: list[Function] = []
        self.types: list[UserType] = []
        self.schemas: list[str] = ["public"]
        # Per schema: names in the relation/type namespace (tables, views, indexes, types).
        self.names: dict[str, set[str]] = {"public": set()}
        self.counter = 0
        self.recreate: list[tuple[str, str]] = []  # dropped tables whose name comes back

    # ------------------------------------------------------------------ helpers
    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def live_objects(self) -> int:
        overloads = sum(len(f.overloads) for f in self.functions)
        return len(self.tables) + len(self.views) + overloads + len(self.types)

    def fresh_name(self, schema: str, stem: str) -> str:
        taken = self.names.setdefault(schema, set())
        name = stem
        while name in taken:
            name = f"{stem}_{self.next_id()}"
        taken.add(name)
        return name

    def pick_schema(self, stmts: list[Stmt]) -> str:
        """A schema for a new object; sometimes a new one (CREATE SCHEMA, untracked)."""
        rng = self.rng
        if len(self.schemas) < 1 + len(_SCHEMAS) and rng.random() < 0.03 + 0.1 * (
            len(self.schemas) == 1 and len(self.tables) > 5
        ):
            schema = _SCHEMAS[len(self.schemas) - 1]
            self.schemas.append(schema)
            self.names.setdefault(schema, set())
            stmts.append(Stmt(f"CREATE SCHEMA {schema};", tracked=False))
            return schema
        return rng.choice(self.schemas) if rng.random() < 0.6 else "public"

    def dependents(self, rel: Table | View) -> list[View]:
        """Views reading `rel`, transitively, in creation order (drop them reversed)."""
        found: list[View] = []
        frontier: list[Any] = [rel]
        while frontier:
            current = frontier.pop()
            for view in self.views:
                if view in found:
                    continue
                if view.base is current or (view.join is not None and view.join[1] is current):
                    found.append(view)
                    frontier.append(view)
        return [v for v in self.views if v in found]

    def views_reading(self, column: Column) -> list[View]:
        direct = [v for v in self.views if column in v.reads()]
        result: list[View] = []
        for view in direct:
            for v in [view, *self.dependents(view)]:
                if v not in result:
                    result.append(v)
        return [v for v in self.views if v in result]

    def view_sql(self, view: View, *, replace: bool = False) -> str:
        joined = view.join[1] if view.join is not None else None
        cols = ", ".join(
            f"{'j' if c.source.owner is joined else 'b'}.{c.source.name} AS {c.name}"
            for c in view.columns
            if c.source is not None
        )
        text = f"CREATE {'OR REPLACE ' if replace else ''}VIEW {view.qname} AS\n"
        text += f"SELECT {cols}\nFROM {view.base.qname} AS b"
        if view.join is not None:
            fk, target, target_id = view.join
            text += f"\nLEFT JOIN {target.qname} AS j ON j.{target_id.name} = b.{fk.name}"
        return text + ";"

    def function_sql(self, fn: Function, key: str) -> str:
        ov = fn.overloads[key]
        rng = random.Random(ov.body_seed)
        head = f"CREATE OR REPLACE FUNCTION {fn.qname}({ov.args}) RETURNS {ov.returns}\n"
        if ov.returns == "bigint":
            # A SQL function over a table: its body is checked against the catalog when
            # created, so replaying it needs the table to exist under that name then.
            if ov.reads is not None:
                body = f"SELECT count(*) FROM {ov.reads.qname}"
            else:
                body = f"SELECT {rng.randint(0, 999)}::bigint"
            return head + f"LANGUAGE sql STABLE\nAS $$ {body} $$;"
        if ov.returns == "integer":
            expr = f"p * {rng.randint(2, 9)} + {rng.randint(0, 99)}"
        elif ov.returns == "numeric":
            expr = f"round(p * {rng.randint(101, 199)} / 100.0, 2)"
        else:
            expr = f"'{rng.choice(_VERBS)}:' || coalesce(p::text, '')"
        if rng.random() < 0.5:
            return head + f"LANGUAGE sql IMMUTABLE\nAS $$ SELECT {expr} $$;"
        return head + (
            f"LANGUAGE plpgsql\nAS $fn$\nBEGIN\n    -- revision {ov.body_seed % 1000}\n"
            f"    RETURN {expr};\nEND;\n$fn$;"
        )

    @staticmethod
    def uniqueable(col: Column) -> bool:
        """UNIQUE/FK can be added: the source's rows hold only NULLs there, now and later."""
        return (
            col.all_null
            and col.default is None
            and not col.pk
            and col.fk_to is None
            and "." not in col.type
            and col.type != "jsonb"
        )

    def new_column(self, table: Table, *, name: str | None = None) -> Column:
        rng = self.rng
        taken = {c.name for c in table.columns}
        stem = name or rng.choice(_ATTRS)
        cname = stem
        while cname in taken:
            cname = f"{stem}_{self.next_id()}"
        usable_types = [t for t in self.types if t.kind != "composite" or rng.random() < 0.3]
        if usable_types and rng.random() < 0.12:
            utype = rng.choice(usable_types)
            col = Column(cname, utype.qname, owner=table)
            if utype.kind == "enum" and rng.random() < 0.5:
                col.default = f"'{utype.labels[0]}'"
                col.not_null = rng.random() < 0.5
            return col
        ctype = rng.choice(list(_COLUMN_TYPES))
        col = Column(cname, ctype, owner=table)
        if ctype == "uuid" and rng.random() < 0.5:
            col.default = "gen_random_uuid()"
        elif ctype == "timestamptz" and rng.random() < 0.5:
            col.default = "now()"
            col.not_null = rng.random() < 0.5
        elif _COLUMN_TYPES[ctype] is not None and rng.random() < 0.3:
            col.default = _COLUMN_TYPES[ctype]
            col.not_null = rng.random() < 0.5
        col.all_null = col.default is None
        return col

    def column_sql(self, col: Column) -> str:
        text = f"{col.name} {col.type}"
        if col.not_null:
            text += " NOT NULL"
        if col.default is not None:
            text += f" DEFAULT {col.default}"
        return text

    def insert_sql(self, table: Table, rows: int) -> Stmt:
        """Seed rows: only `code`-like required columns get values (unique ones)."""
        required = [c for c in table.columns if c.required]
        table.rows += rows
        if not required:
            return Stmt(
                f"INSERT INTO {table.qname} SELECT FROM generate_series(1, {rows});", dml=True
            )
        names = ", ".join(c.name for c in required)
        values = ", ".join(
            "(" + ", ".join(f"'{table.name}-{self.next_id()}'" for _ in required) + ")"
            for _ in range(rows)
        )
        return Stmt(f"INSERT INTO {table.qname} ({names}) VALUES {values};", dml=True)

    def mark_data(self, table: Table) -> None:
        """The source now holds rows: columns with a default are no longer all NULL."""
        for col in table.columns:
            if col.default is not None or col.required or col.pk:
                col.all_null = False

    def forget_column(self, table: Table, col: Column) -> None:
        table.columns.remove(col)
        for index in [i for i in table.indexes if col in i.columns]:
            table.indexes.remove(index)
            self.names[table.schema].discard(index.name)
        table.constraints = [c for c in table.constraints if c.column is not col]

    def drop_views(self, views: list[View]) -> list[Stmt]:
        stmts = []
        for view in reversed(views):
            stmts.append(Stmt(f"DROP VIEW {view.qname};"))
        return stmts

    # ------------------------------------------------------------------ creations
    def op_create_table(self, reuse: tuple[str, str] | None = None) -> tuple[str, list[Stmt]]:
        """CREATE TABLE; `reuse` (or, half the time, a pending dropped name) names it."""
        rng = self.rng
        stmts: list[Stmt] = []
        if reuse is None and self.recreate and rng.random() < 0.5:
            reuse = self.recreate.pop(0)
        if reuse is not None:
            schema, name = reuse
            if name in self.names[schema]:
                name = self.fresh_name(schema, name)
            else:
                self.names[schema].add(name)
            kind = "recreate_table"
        else:
            schema = self.pick_schema(stmts)
            name = self.fresh_name(schema, rng.choice(_NOUNS))
            kind = "create_table"
        table = Table(schema, name)
        pk = Column("id", "bigint", not_null=True, pk=True, owner=table, all_null=False)
        table.columns.append(pk)
        lines = [
            "id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
            if rng.random() < 0.6
            else "id bigserial PRIMARY KEY"
        ]
        if rng.random() < 0.5:
            code = Column("code", "text", not_null=True, required=True, owner=table)
            code.all_null = False
            table.columns.append(code)
            lines.append("code text NOT NULL UNIQUE")
        if rng.random() < 0.3 and not any(t.kind == "enum" for t in self.types if t.schema == schema):
            # A new enum for this table: CREATE TYPE is untracked, the batch carries it.
            tname = self.fresh_name(schema, f"{name}_status")
            labels = ["draft", "active", "archived"][: rng.randint(2, 3)]
            utype = UserType(schema, tname, "enum", labels)
            self.types.append(utype)
            stmts.append(
                Stmt(
                    f"CREATE TYPE {utype.qname} AS ENUM ("
                    + ", ".join(f"'{lab}'" for lab in labels)
                    + ");",
                    tracked=False,
                )
            )
            col = Column("status", utype.qname, not_null=True, default=f"'{labels[0]}'",
                         owner=table, all_null=False)
            table.columns.append(col)
            lines.append(self.column_sql(col))
        for _ in range(rng.randint(2, 7)):
            col = self.new_column(table)
            table.columns.append(col)
            line = self.column_sql(col)
            if col.type in _NUMERIC and rng.random() < 0.3:
                line += f" CHECK ({col.name} >= 0)"
            lines.append(line)
        targets = [t for t in self.tables if t.schema in (schema, "public")]
        for target in rng.sample(targets, k=min(len(targets), rng.choice((0, 0, 1, 1, 2)))):
            fk = Column(self.fresh_col(table, f"{target.name}_id"), "bigint",
                        fk_to=target, owner=table)
            table.columns.append(fk)
            lines.append(f"{fk.name} bigint REFERENCES {target.qname} (id)")
        if rng.random() < 0.15:
            lines.append("created_at timestamptz NOT NULL DEFAULT now()")
            table.columns.append(
                Column("created_at", "timestamptz", not_null=True, default="now()",
                       owner=table, all_null=False)
            )
        stmts.append(Stmt(f"CREATE TABLE {table.qname} (\n    " + ",\n    ".join(lines) + "\n);"))
        self.tables.append(table)
        if rng.random() < 0.4:
            candidates = [c for c in table.columns if not c.pk and c.type != "jsonb"]
            if candidates:
                stmts.append(self.create_index_stmt(table, [rng.choice(candidates)]))
        if rng.random() < 0.4:
            stmts.append(self.insert_sql(table, rng.randint(1, 5)))
            self.mark_data(table)
        return kind, stmts

    def fresh_col(self, table: Table, stem: str) -> str:
        taken = {c.name for c in table.columns}
        name = stem[:50]
        while name in taken:
            name = f"{stem[:40]}_{self.next_id()}"
        return name

    def create_index_stmt(self, table: Table, cols: list[Column], unique: bool = False) -> Stmt:
        stem = f"ix_{table.name[:24]}_{cols[0].name[:24]}"
        name = self.fresh_name(table.schema, stem)
        table.indexes.append(Index(name, cols))
        where = ""
        if not unique and self.rng.random() < 0.2:
            where = f" WHERE {cols[0].name} IS NOT NULL"
        kind = "UNIQUE INDEX" if unique else "INDEX"
        col_list = ", ".join(c.name for c in cols)
        return Stmt(f"CREATE {kind} {name} ON {table.qname} ({col_list}){where};")

    def op_create_view(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        stmts: list[Stmt] = []
        over_view = self.views and rng.random() < 0.2
        base: Table | View = rng.choice(self.views) if over_view else rng.choice(self.tables)
        schema = base.schema if rng.random() < 0.7 else "public"
        if schema not in self.schemas:
            schema = "public"
        stem = f"v_{base.name.removeprefix('v_')[:40]}"
        view = View(schema, self.fresh_name(schema, stem), base)
        pool = [c for c in base.columns if c.type != "jsonb" or rng.random() < 0.3]
        id_col = base.col("id")
        picked = [id_col] + rng.sample(
            [c for c in pool if c is not id_col], k=min(len(pool) - 1, rng.randint(1, 4))
        )
        for src in picked:
            view.columns.append(Column(src.name, src.type, source=src, owner=view))
        if isinstance(base, Table):
            fks = [c for c in base.columns if c.fk_to is not None and c.fk_to in self.tables]
            if fks and rng.random() < 0.5:
                fk = rng.choice(fks)
                assert fk.fk_to is not None
                target = fk.fk_to
                view.join = (fk, target, target.col("id"))
                extra = [c for c in target.columns if not c.pk and c.type != "jsonb"]
                if extra:
                    src = rng.choice(extra)
                    out = f"{target.name[:30]}_{src.name[:30]}"
                    view.columns.append(Column(out, src.type, source=src, owner=view))
        self.views.append(view)
        stmts.append(Stmt(self.view_sql(view)))
        return "create_view", stmts

    def op_create_function(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        stmts: list[Stmt] = []
        if self.functions and rng.random() < 0.35:
            fn = rng.choice(self.functions)
            kind = "add_overload"
        else:
            schema = self.pick_schema(stmts)
            name = f"fn_{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"
            if any(f.schema == schema and f.name == name for f in self.functions):
                name = f"{name}_{self.next_id()}"
            fn = Function(schema, name)
            self.functions.append(fn)
            kind = "create_function"
        arg_types = ["integer", "numeric", "text", "bigint", "date"]
        arg_types += [t.qname for t in self.types]
        for _ in range(10):
            chosen = [rng.choice(arg_types) for _ in range(rng.choice((1, 1, 2)))]
            key = ",".join(chosen)
            if key not in fn.overloads:
                break
        else:
            return self.op_replace_function()
        args = ", ".join(
            ("p " if i == 0 else f"p{i} ") + t for i, t in enumerate(chosen)
        )
        returns = chosen[0] if chosen[0] in {"integer", "numeric", "text"} else "text"
        reads = None
        if self.tables and rng.random() < 0.15:
            reads = rng.choice(self.tables)
            returns = "bigint"
        fn.overloads[key] = Overload(args, returns, rng.randrange(10**9), reads)
        stmts.append(Stmt(self.function_sql(fn, key)))
        return kind, stmts

    def op_create_type(self) -> tuple[str, list[Stmt]]:
        """A new type, used at once by a new column: the ALTER TABLE makes it recorded."""
        rng = self.rng
        table = rng.choice(self.tables)
        schema = table.schema
        kind = rng.choice(("enum", "composite", "domain", "domain"))
        stem = {"enum": "kind", "composite": "pair", "domain": "dom"}[kind]
        name = self.fresh_name(schema, f"{rng.choice(_NOUNS)}_{stem}")
        utype = UserType(schema, name, kind)
        if kind == "enum":
            utype.labels = rng.sample(["low", "mid", "high", "new", "old", "hot", "cold"], 3)
            create = "AS ENUM (" + ", ".join(f"'{lab}'" for lab in utype.labels) + ")"
        elif kind == "composite":
            utype.base = "text"
            create = "AS (label text, amount numeric(12,2))"
        else:
            utype.base = rng.choice(("integer", "text"))
            check = "VALUE >= 0" if utype.base == "integer" else "length(VALUE) <= 200"
            create = f"AS {utype.base} CHECK ({check})"
        keyword = "DOMAIN" if kind == "domain" else "TYPE"
        self.types.append(utype)
        col = Column(self.fresh_col(table, f"{rng.choice(_ATTRS)}_{stem}"), utype.qname,
                     owner=table)
        table.columns.append(col)
        return "create_type", [
            Stmt(f"CREATE {keyword} {utype.qname} {create};", tracked=False),
            Stmt(f"ALTER TABLE {table.qname} ADD COLUMN {self.column_sql(col)};"),
        ]

    # ------------------------------------------------------------------ changes
    def op_add_column(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        table = rng.choice(self.tables)
        col = self.new_column(table)
        table.columns.append(col)
        stmts = [Stmt(f"ALTER TABLE {table.qname} ADD COLUMN {self.column_sql(col)};")]
        if table.rows and col.default is not None:
            col.all_null = False
        literal = _COLUMN_TYPES.get(col.type)
        if table.rows and col.default is None and literal is not None and rng.random() < 0.4:
            stmts.append(
                Stmt(f"UPDATE {table.qname} SET {col.name} = {literal} WHERE {col.name} IS NULL;",
                     dml=True)
            )
            col.all_null = False
        return "add_column", stmts

    def droppable_columns(self, table: Table) -> list[Column]:
        return [c for c in table.columns if not c.pk and not c.required]

    def op_drop_column(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        tables = [t for t in self.tables if self.droppable_columns(t)]
        if not tables:
            return self.op_add_column()
        table = rng.choice(tables)
        col = rng.choice(self.droppable_columns(table))
        views = self.views_reading(col)
        stmts = self.drop_views(views)
        stmts.append(Stmt(f"ALTER TABLE {table.qname} DROP COLUMN {col.name};"))
        self.forget_column(table, col)
        # Re-create the views without what read the column (a view keeps at least its id).
        gone = {col}
        for view in views:
            if view.join is not None and (view.join[0] in gone or view.join[2] in gone):
                view.join = None
            kept = []
            for vc in view.columns:
                src = vc.source
                joined_away = (
                    view.join is None and src is not None and src.owner is not view.base
                )
                if src in gone or joined_away:
                    gone.add(vc)
                else:
                    kept.append(vc)
            view.columns = kept
            stmts.append(Stmt(self.view_sql(view)))
        return ("drop_column_views" if views else "drop_column"), stmts

    def op_rename_column(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        tables = [t for t in self.tables if self.droppable_columns(t)]
        if not tables:
            return self.op_add_column()
        table = rng.choice(tables)
        col = rng.choice(self.droppable_columns(table))
        new = self.fresh_col(table, f"{col.name.split('_')[0]}_{rng.choice(_ATTRS)}")
        stmts = [
            Stmt(f"ALTER TABLE {table.qname} RENAME COLUMN {col.name} TO {new};", tracked=False)
        ]
        col.name = new
        # RENAME COLUMN writes no v1 row: the migration carries a recorded change too.
        if col.type not in {"jsonb"} and rng.random() < 0.6:
            stmts.append(self.create_index_stmt(table, [col]))
        else:
            _, more = self.op_add_column_on(table)
            stmts += more
        return "rename_column", stmts

    def op_add_column_on(self, table: Table) -> tuple[str, list[Stmt]]:
        col = self.new_column(table)
        table.columns.append(col)
        if table.rows and col.default is not None:
            col.all_null = False
        return "add_column", [
            Stmt(f"ALTER TABLE {table.qname} ADD COLUMN {self.column_sql(col)};")
        ]

    def op_alter_type(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        candidates = [
            (t, c) for t in self.tables for c in t.columns if c.type in {"varchar(40)", "integer"}
        ]
        rng.shuffle(candidates)
        # A column a view reads cannot change type; look for one no view reads.
        found = next(((t, c) for t, c in candidates if not self.views_reading(c)), None)
        if found is None:
            return self.op_add_column()
        table, col = found
        col.type = "text" if col.type == "varchar(40)" else "bigint"
        return "alter_column_type", [
            Stmt(f"ALTER TABLE {table.qname} ALTER COLUMN {col.name} TYPE {col.type};")
        ]

    def op_set_default(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        # Not on FK or UNIQUE columns: seed rows would then get duplicate or dangling values.
        candidates = [
            (t, c) for t in self.tables for c in t.columns
            if not c.not_null and not c.pk and c.fk_to is None
            and _COLUMN_TYPES.get(c.type) is not None
            and not any(c in i.columns for i in t.indexes)
        ]
        if not candidates:
            return self.op_add_column()
        table, col = rng.choice(candidates)
        if col.default is not None:
            col.default = None
            text = f"ALTER TABLE {table.qname} ALTER COLUMN {col.name} DROP DEFAULT;"
        else:
            col.default = _COLUMN_TYPES[col.type]
            text = f"ALTER TABLE {table.qname} ALTER COLUMN {col.name} SET DEFAULT {col.default};"
        return "set_default", [Stmt(text)]

    def op_add_constraint(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        table = rng.choice(self.tables)
        choice = rng.random()
        fresh = [c for c in table.columns if self.uniqueable(c)]
        numeric = [c for c in table.columns if c.type in _NUMERIC and not c.pk]
        if choice < 0.35 and numeric:
            col = rng.choice(numeric)
            name = self.fresh_name(table.schema, f"ck_{table.name[:24]}_{col.name[:24]}")
            table.constraints.append(Constraint(name, col))
            return "add_check", [
                Stmt(f"ALTER TABLE {table.qname} ADD CONSTRAINT {name} CHECK ({col.name} >= 0);")
            ]
        fk_cols = [c for c in fresh if c.type == "bigint"]
        targets = [t for t in self.tables if t is not table]
        if choice < 0.7 and fk_cols and targets:
            col = rng.choice(fk_cols)
            target = rng.choice(targets)
            col.fk_to = target
            name = self.fresh_name(table.schema, f"fk_{table.name[:24]}_{col.name[:24]}")
            table.constraints.append(Constraint(name, col))
            return "add_foreign_key", [
                Stmt(
                    f"ALTER TABLE {table.qname} ADD CONSTRAINT {name} FOREIGN KEY ({col.name})"
                    f" REFERENCES {target.qname} (id);"
                )
            ]
        if fresh:
            col = rng.choice(fresh)
            name = self.fresh_name(table.schema, f"uq_{table.name[:24]}_{col.name[:24]}")
            table.indexes.append(Index(name, [col], constraint=True))
            return "add_unique", [
                Stmt(f"ALTER TABLE {table.qname} ADD CONSTRAINT {name} UNIQUE ({col.name});")
            ]
        return self.op_create_index()

    def op_create_index(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        table = rng.choice(self.tables)
        cols = [c for c in table.columns if not c.pk and c.type != "jsonb"]
        if not cols:
            return self.op_add_column()
        picked = rng.sample(cols, k=min(len(cols), rng.choice((1, 1, 1, 2))))
        unique = all(self.uniqueable(c) for c in picked) and rng.random() < 0.3
        return "create_index", [self.create_index_stmt(table, picked, unique)]

    def op_drop_index(self) -> tuple[str, list[Stmt]]:
        candidates = [(t, i) for t in self.tables for i in t.indexes]
        if not candidates:
            return self.op_create_index()
        table, index = self.rng.choice(candidates)
        table.indexes.remove(index)
        self.names[table.schema].discard(index.name)
        if index.constraint:
            text = f"ALTER TABLE {table.qname} DROP CONSTRAINT {index.name};"
        else:
            text = f"DROP INDEX {table.schema}.{index.name};"
        return "drop_index", [Stmt(text)]

    def op_replace_view(self) -> tuple[str, list[Stmt]]:
        """CREATE OR REPLACE VIEW may only append columns: append one of the base's."""
        rng = self.rng
        if not self.views:
            return self.op_create_view()
        view = rng.choice(self.views)
        used = {c.source for c in view.columns}
        names = {c.name for c in view.columns}
        extra = [c for c in view.base.columns if c not in used and c.name not in names]
        if not extra:
            return self.op_recreate_view(view)
        src = rng.choice(extra)
        view.columns.append(Column(src.name, src.type, source=src, owner=view))
        return "replace_view", [Stmt(self.view_sql(view, replace=True))]

    def op_recreate_view(self, view: View | None = None) -> tuple[str, list[Stmt]]:
        """DROP VIEW and CREATE it again with fewer columns (and its dependents)."""
        rng = self.rng
        if not self.views:
            return self.op_create_view()
        view = view or rng.choice(self.views)
        deps = self.dependents(view)
        stmts = self.drop_views([view, *deps])
        removable = [c for c in view.columns if c.name != "id"]
        gone: set[Column] = set()
        if removable and rng.random() < 0.7:
            victim = rng.choice(removable)
            view.columns.remove(victim)
            gone.add(victim)
        stmts.append(Stmt(self.view_sql(view)))
        for dep in deps:
            kept = []
            for vc in dep.columns:
                if vc.source in gone:
                    gone.add(vc)  # views over this one lose it too
                else:
                    kept.append(vc)
            dep.columns = kept
            stmts.append(Stmt(self.view_sql(dep)))
        return "recreate_view", stmts

    def op_drop_view(self) -> tuple[str, list[Stmt]]:
        if not self.views:
            return self.op_create_view()
        view = self.rng.choice(self.views)
        views = [view, *self.dependents(view)]
        stmts = self.drop_views(views)
        for v in views:
            self.views.remove(v)
            self.names[v.schema].discard(v.name)
        return "drop_view", stmts

    def op_rename_view(self) -> tuple[str, list[Stmt]]:
        if not self.views:
            return self.op_create_view()
        view = self.rng.choice(self.views)
        new = self.fresh_name(view.schema, f"{view.name[:50]}_v{self.next_id()}")
        self.names[view.schema].discard(view.name)
        old = view.qname
        view.name = new
        return "rename_view", [Stmt(f"ALTER VIEW {old} RENAME TO {new};")]

    def op_replace_function(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        fns = [f for f in self.functions if f.overloads]
        if not fns:
            return self.op_create_function()
        fn = rng.choice(fns)
        key = rng.choice(sorted(fn.overloads))
        ov = fn.overloads[key]
        ov.body_seed = rng.randrange(10**9)
        if ov.reads is not None and ov.reads not in self.tables:
            ov.reads = rng.choice(self.tables)
        return "replace_function", [Stmt(self.function_sql(fn, key))]

    def op_drop_overload(self) -> tuple[str, list[Stmt]]:
        """DROP FUNCTION is not recorded by v1: the same batch replaces another overload."""
        rng = self.rng
        fns = [f for f in self.functions if len(f.overloads) >= 2]
        if not fns:
            return self.op_replace_function()
        fn = rng.choice(fns)
        key = rng.choice(sorted(fn.overloads))
        del fn.overloads[key]
        other = rng.choice(sorted(fn.overloads))
        fn.overloads[other].body_seed = rng.randrange(10**9)
        return "drop_overload", [
            Stmt(f"DROP FUNCTION {fn.qname}({key.replace(',', ', ')});", tracked=False),
            Stmt(self.function_sql(fn, other)),
        ]

    def op_enum_add_value(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        enums = [t for t in self.types if t.kind == "enum"]
        if not enums:
            return self.op_add_column()
        utype = rng.choice(enums)
        label = f"v{self.next_id()}"
        utype.labels.append(label)
        # ADD VALUE is untracked: an index on a user table makes the batch recorded.
        _, more = self.op_create_index()
        return "enum_add_value", [
            Stmt(f"ALTER TYPE {utype.qname} ADD VALUE '{label}';", tracked=False),
            *more,
        ]

    def op_rename_table(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        table = rng.choice(self.tables)
        old = table.qname
        new = self.fresh_name(table.schema, f"{table.name.split('_')[0]}_{rng.choice(_NOUNS)}")
        self.names[table.schema].discard(table.name)
        table.name = new
        return "rename_table", [Stmt(f"ALTER TABLE {old} RENAME TO {new};")]

    def op_drop_table(self) -> tuple[str, list[Stmt]]:
        rng = self.rng
        if len(self.tables) < 4:
            return self.op_add_column()
        table = rng.choice(self.tables)
        views = self.dependents(table)
        stmts = self.drop_views(views)
        for view in views:
            self.views.remove(view)
            self.names[view.schema].discard(view.name)
        incoming = [
            (t, c) for t in self.tables for c in t.columns if c.fk_to is table and t is not table
        ]
        cascade = " CASCADE" if incoming else ""
        stmts.append(Stmt(f"DROP TABLE {table.qname}{cascade};"))
        for other, col in incoming:
            col.fk_to = None  # CASCADE dropped the constraint; the column stays
            other.constraints = [c for c in other.constraints if c.column is not col]
        self.tables.remove(table)
        for index in table.indexes:
            self.names[table.schema].discard(index.name)
        for con in table.constraints:
            self.names[table.schema].discard(con.name)
        self.names[table.schema].discard(table.name)
        for fn in self.functions:
            for ov in fn.overloads.values():
                if ov.reads is table:
                    ov.reads = None  # the body still names it, but only as text
        if rng.random() < 0.3:
            # Dropped and re-created with another shape in the same migration.
            _, more = self.op_create_table(reuse=(table.schema, table.name))
            return "drop_recreate_table", stmts + more
        self.recreate.append((table.schema, table.name))
        return "drop_table", stmts


_CHANGES: tuple[tuple[str, float], ...] = (
    ("op_add_column", 14),
    ("op_drop_column", 5),
    ("op_rename_column", 4),
    ("op_alter_type", 3),
    ("op_set_default", 3),
    ("op_add_constraint", 6),
    ("op_create_index", 8),
    ("op_drop_index", 2.5),
    ("op_replace_view", 4),
    ("op_recreate_view", 3),
    ("op_drop_view", 0.8),
    ("op_rename_view", 0.5),
    ("op_replace_function", 6),
    ("op_drop_overload", 0.4),
    ("op_enum_add_value", 1.2),
    ("op_rename_table", 1.5),
    ("op_drop_table", 1.2),
)


def generate_migrations(
    changesets: int, live_target: int, seed: int = DEFAULT_SEED
) -> list[Migration]:
    """Plan a migration list that leaves about `changesets` replay units in the history.

    The schema grows roughly linearly to about `live_target` live objects (tables, views,
    function overloads, types). Deterministic: the same arguments give the same list.
    """
    planner = _Planner(seed)
    rng = planner.rng
    migrations: list[Migration] = []
    made = 0
    when = START
    number = 0
    while made < changesets:
        number += 1
        progress = made / changesets
        target = 5 + (live_target - 5) * progress
        live = planner.live_objects()
        p_create = min(0.9, max(0.03, 0.12 + (target - live) / 20))
        if not planner.tables or rng.random() < p_create:
            kinds = [("op_create_table", 4.0)]
            if planner.tables:
                kinds += [("op_create_view", 2.5), ("op_create_function", 2.5),
                          ("op_create_type", 0.8)]
        else:
            kinds = list(_CHANGES)
        op = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        kind, stmts = getattr(planner, op)()
        # Untracked DDL only reaches the history inside a batch that also holds tracked DDL.
        only_tracked = all(s.tracked or s.dml for s in stmts)
        mode = "psql-f" if only_tracked and rng.random() < 0.3 else "batch"
        texts = [s.text for s in stmts]
        wrapped = rng.random() < 0.25
        if wrapped:
            texts = ["BEGIN;", *texts, "COMMIT;"]
        if mode == "batch":
            units = 1
            header = f"-- {number:05d}_{kind}\n" if rng.random() < 0.5 else ""
            sql_text = header + "\n".join(texts) + "\n"
        else:
            units = sum(1 for s in stmts if s.tracked and not s.dml)
            sql_text = "\n".join(texts) + "\n"
        author = rng.choice(AUTHORS)
        migrations.append(
            Migration(
                name=f"{number:05d}_{kind}",
                at=when,
                author=author,
                mode=mode,
                statements=tuple(texts),
                sql=sql_text,
                kind=kind,
                changesets=units,
            )
        )
        made += units
        span = PSQL_F_STEP * len(texts) if mode == "psql-f" else timedelta(0)
        when = when + span + timedelta(seconds=rng.randint(60, 540))
    return migrations


def plan_stats(migrations: Sequence[Migration]) -> dict[str, Any]:
    """Counts for the report: migrations, expected changesets, kinds, send modes."""
    return {
        "migrations": len(migrations),
        "changesets_planned": sum(m.changesets for m in migrations),
        "statements": sum(len(m.statements) for m in migrations),
        "modes": dict(Counter(m.mode for m in migrations)),
        "kinds": dict(sorted(Counter(m.kind for m in migrations).items())),
        "first": migrations[0].at.isoformat() if migrations else None,
        "last": migrations[-1].at.isoformat() if migrations else None,
        "authors": sorted({m.author for m in migrations}),
    }


# ----------------------------------------------------------------------------- capture

# Stamping by trigger instead of build_fixtures.py's UPDATE after each transaction (see the
# module docstring). Created before the event triggers exist, so they write no history row.
_STAMP_SQL = """
SELECT set_config('pggit_bench.at', '2000-01-01 00:00:00', false),
       set_config('pggit_bench.by', 'postgres', false);
CREATE FUNCTION pggit.bench_stamp_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := current_setting('pggit_bench.at')::timestamp;
    NEW.created_by := current_setting('pggit_bench.by');
    RETURN NEW;
END $$;
CREATE FUNCTION pggit.bench_stamp_object() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := current_setting('pggit_bench.at')::timestamp;
    END IF;
    NEW.updated_at := current_setting('pggit_bench.at')::timestamp;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_stamp BEFORE INSERT ON pggit.history
    FOR EACH ROW EXECUTE FUNCTION pggit.bench_stamp_history();
CREATE TRIGGER bench_stamp BEFORE INSERT OR UPDATE ON pggit.objects
    FOR EACH ROW EXECUTE FUNCTION pggit.bench_stamp_object();
"""

_UNSTAMP_SQL = """
DROP EVENT TRIGGER pggit_ddl_trigger;
DROP EVENT TRIGGER pggit_drop_trigger;
DROP TRIGGER bench_stamp ON pggit.history;
DROP TRIGGER bench_stamp ON pggit.objects;
DROP FUNCTION pggit.bench_stamp_history();
DROP FUNCTION pggit.bench_stamp_object();
"""


class CaptureError(RuntimeError):
    """A migration failed in the source, or left no row (a generator bug)."""


@dataclass
class CaptureStats:
    """What capture() wrote."""

    migrations: int = 0
    history_rows: int = 0
    seconds: float = 0.0
    live: dict[str, int] = field(default_factory=dict)


def _set_stamp(conn: psycopg.Connection[Any], at: datetime, author: str) -> int:
    """Stamp the next transaction's rows; returns the current max history id."""
    row = conn.execute(
        "SELECT set_config('pggit_bench.at', %s, false), set_config('pggit_bench.by', %s, false),"
        " (SELECT coalesce(max(id), 0) FROM pggit.history)",
        (at.isoformat(sep=" "), author),
    ).fetchone()
    assert row is not None
    return int(row[2])


def _max_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM pggit.history").fetchone()
    assert row is not None
    return int(row[0])


def _psql_f_statements(text: str) -> list[str]:
    """The queries ``psql -f`` sends, exactly as ``fixtures/build_fixtures.py`` splits them."""
    spec = importlib.util.spec_from_file_location("_build_fixtures", FIXTURES / "build_fixtures.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    statements: list[str] = build.psql_statements(text)
    return statements


def live_objects(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Live user objects by kind, counted in the catalog (pgGit's own schema left out)."""
    row = conn.execute(
        """
        WITH ns AS (
            SELECT oid FROM pg_namespace
            WHERE nspname !~ '^pg_' AND nspname NOT IN ('information_schema', 'pggit')
        )
        SELECT
          (SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p')
              AND relnamespace IN (SELECT oid FROM ns)),
          (SELECT count(*) FROM pg_class WHERE relkind = 'v' AND relnamespace IN (SELECT oid FROM ns)),
          (SELECT count(*) FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns)),
          (SELECT count(DISTINCT (pronamespace, proname)) FROM pg_proc
              WHERE pronamespace IN (SELECT oid FROM ns)),
          (SELECT count(*) FROM pg_type t WHERE typnamespace IN (SELECT oid FROM ns)
              AND (typtype IN ('e', 'd') OR (typtype = 'c' AND EXISTS (
                  SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')))),
          (SELECT count(*) FROM pg_class WHERE relkind = 'i' AND relnamespace IN (SELECT oid FROM ns)),
          (SELECT count(*) FROM ns)
        """
    ).fetchone()
    assert row is not None
    tables, views, overloads, functions, types, indexes, schemas = (int(v) for v in row)
    return {
        "tables": tables,
        "views": views,
        "function_overloads": overloads,
        "function_names": functions,
        "types": types,
        "indexes": indexes,
        "schemas": schemas,
        "live_objects": tables + views + overloads + types,
    }


def capture(conninfo: str, migrations: Sequence[Migration]) -> CaptureStats:
    """Install pgGit v1 (tables + capture triggers) in an empty database and run `migrations`.

    Raises CaptureError when a statement fails or a transaction that ran tracked DDL left
    no history row.
    """
    started = time.perf_counter()
    stats = CaptureStats()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text(encoding="utf-8").encode())
        conn.execute(
            "UPDATE pggit.branches SET created_at = %s, created_by = %s WHERE name = 'main'",
            (PGGIT_INSTALLED_AT, PGGIT_INSTALLED_BY),
        )
        conn.execute(_STAMP_SQL.encode())
        # Installed like pgGit, one statement per query: its last function is the first row.
        _set_stamp(conn, PGGIT_INSTALLED_AT, PGGIT_INSTALLED_BY)
        for statement in _psql_f_statements(CAPTURE_SQL.read_text(encoding="utf-8")):
            conn.execute(statement.encode())
        for migration in migrations:
            try:
                _run_migration(conn, migration)
            except psycopg.Error as exc:
                raise CaptureError(f"migration {migration.name} failed: {exc}\n"
                                   f"{migration.sql}") from exc
            stats.migrations += 1
        stats.live = live_objects(conn)
        conn.execute(_UNSTAMP_SQL.encode())
        stats.history_rows = _max_id(conn)
        conn.execute("ANALYZE")
    stats.seconds = time.perf_counter() - started
    return stats


def _run_migration(conn: psycopg.Connection[Any], migration: Migration) -> None:
    if migration.mode == "batch":
        before = _set_stamp(conn, migration.at, migration.author)
        # Parameterless text goes out with the simple query protocol: current_query() is
        # the whole text, as with psql -c or diesel.
        conn.execute(migration.sql.encode())
        if _max_id(conn) == before:
            raise CaptureError(f"migration {migration.name} left no history row")
        return
    when = migration.at
    before = -1
    tracked_in_tx = False
    for statement in migration.statements:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            before = _set_stamp(conn, when, migration.author)
            tracked_in_tx = False
        conn.execute(statement.encode())
        upper = statement.lstrip().upper()
        tracked_in_tx |= not upper.startswith(("BEGIN", "COMMIT", "INSERT", "UPDATE"))
        if conn.info.transaction_status == TransactionStatus.IDLE:
            if tracked_in_tx and _max_id(conn) == before:
                raise CaptureError(
                    f"migration {migration.name}: {statement!r} left no history row"
                )
            when += PSQL_F_STEP


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    """Plan (and with --dsn, capture) a synthetic history; print its stats as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--changesets", type=int, help="override the size's changeset count")
    parser.add_argument("--live", type=int, help="override the size's live object target")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--dsn", help="capture into this (empty) database")
    parser.add_argument("--show", type=int, default=0, help="print the first N migrations")
    args = parser.parse_args(argv)
    changesets, live = SIZES[args.size]
    started = time.perf_counter()
    migrations = generate_migrations(args.changesets or changesets, args.live or live, args.seed)
    result: dict[str, Any] = {"plan": plan_stats(migrations),
                              "plan_seconds": round(time.perf_counter() - started, 2)}
    for migration in migrations[: args.show]:
        print(f"-- [{migration.name} {migration.mode} {migration.author} {migration.at}]",
              file=sys.stderr)
        print(migration.sql, file=sys.stderr)
    if args.dsn:
        stats = capture(args.dsn, migrations)
        result["capture"] = {
            "history_rows": stats.history_rows,
            "seconds": round(stats.seconds, 2),
            "live": stats.live,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
