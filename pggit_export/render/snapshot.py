"""Render the catalog of a database as one SQL text per object.

A snapshot maps an ObjectKey (kind, schema, name) to the text of the file that
recreates that object. Things that cannot exist on their own (indexes,
constraints, triggers, policies, comments, sequences owned by a column) live in
the file of the table, view or type they belong to.

The text must depend only on the catalog state, never on the session or on the
order objects were created in: it becomes the content of Git commits, and a
byte that changes for no reason is a spurious diff. Hence:

* every catalog query runs with an empty ``search_path``, so every name that
  ``pg_get_*``/``format_type`` print is schema-qualified, and with fixed
  settings for everything else that changes how constants print (DateStyle,
  TimeZone, ...);
* everything is sorted by name (columns by position, enum labels by sort order),
  never by OID, and no OID is printed;
* owners, grants and other role-dependent details are left out.

Each object kind is read with ONE query for the whole database (details come back
as JSON aggregates), so the cost does not grow with one round trip per object.
Every query can be limited to a set of keys, so a caller can re-render only the
objects a change touched (`render_objects`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from pggit_export.identifiers import quote_literal
from pggit_export.render.dialect import Dialect


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Identity of one file of the snapshot."""

    kind: str  # schema, extension, table, view, matview, sequence, function, type
    schema: str  # for "schema": the schema itself; "extension": where it is installed
    name: str  # for "function": shared by every overload (functions and procedures)


Snapshot = dict[ObjectKey, str]

DEFAULT_EXCLUDED_SCHEMAS = ("pggit", "pggit_v0", "pggit_v2", "pggit_audit")

Row = dict[str, Any]


# --------------------------------------------------------------------------- SQL
# Relations are written pg_catalog-qualified: with an empty search_path the
# session's temporary schema is still searched first for relation names, and
# replayed history could have created a temp table called pg_class.

# Schemas that hold no user objects: pg_catalog, pg_toast, pg_temp_N, ...
# (user schemas cannot start with "pg_").
def _user_schema(inputs: _Inputs) -> str:
    return f"""
    n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
    AND n.nspname <> ALL ({inputs.exclude})
"""


def _description_sql(oid: str, catalog: str, subid: str = "0") -> str:
    """SQL: the comment on an object (a column: subid its attnum), as obj_description.

    A sub-select on pg_description, not obj_description()/col_description(): those
    are SQL functions the planner cannot inline, and calling them once per column,
    constraint and index was a sixth of a table's render.
    """
    return f"""(SELECT dsc.description FROM pg_catalog.pg_description dsc
        WHERE dsc.objoid = {oid} AND dsc.classoid = 'pg_catalog.{catalog}'::pg_catalog.regclass
          AND dsc.objsubid = {subid})"""


def _not_extension_member(catalog: str, oid: str) -> str:
    """SQL condition: the object is not part of an extension (pg_dump skips those too)."""
    return f"""NOT EXISTS (
        SELECT FROM pg_catalog.pg_depend e
        WHERE e.classid = 'pg_catalog.{catalog}'::pg_catalog.regclass
          AND e.objid = {oid} AND e.deptype = 'e')"""


@dataclass(frozen=True)
class _Inputs:
    """Where a render query takes its inputs from: psycopg parameters in a query the
    client sends (_ALL, _BY_KEY), PL/pgSQL variables inside render_keys
    (install_render_function). The query is built for one or the other, never edited."""

    exclude: str  # the schemas not rendered: a text[] expression
    keys: str | None  # a FROM item of the (schema, name) keys to render; None: every object


_EXCLUDE_PARAMETER = "%(exclude)s::text[]"
_ALL = _Inputs(_EXCLUDE_PARAMETER, None)
_BY_KEY = _Inputs(
    _EXCLUDE_PARAMETER, "unnest(%(key_schemas)s::text[], %(key_names)s::text[]) AS k(schema, name)"
)


def _objects_from(catalog: str, alias: str, namespace_column: str, name_column: str,
                  inputs: _Inputs) -> str:
    """The FROM clause of a render query: a catalog's rows `alias` and their schema `n`.

    With `inputs.keys`: only those (schema, name) keys (_BY_KEY: passed as
    %(key_schemas)s and %(key_names)s), joined from the keys through the catalogs' name indexes. A key that no longer
    exists simply comes back with no row, which lets a caller re-render an object it
    knows only by name (a dropped overload, a renamed table's old name). Joining from
    the keys rather than filtering every object by them keeps a changeset's render
    from growing with the schema, and gives a generic plan that stays cheap, so the
    query can be prepared once per export.
    """
    if inputs.keys is None:
        return f"""FROM pg_catalog.{catalog} {alias}
JOIN pg_catalog.pg_namespace n ON n.oid = {alias}.{namespace_column}"""
    return f"""FROM {inputs.keys}
JOIN pg_catalog.pg_namespace n ON n.nspname = k.schema
JOIN pg_catalog.{catalog} {alias}
  ON {alias}.{namespace_column} = n.oid AND {alias}.{name_column} = k.name"""


def _schemas_sql(inputs: _Inputs) -> str:
    scope = (
        f"FROM {inputs.keys}\n"
        "JOIN pg_catalog.pg_namespace n ON n.nspname = k.schema"
        if inputs.keys is not None else "FROM pg_catalog.pg_namespace n"
    )
    return f"""
SELECT n.nspname AS name, n.oid,
       quote_ident(n.nspname) AS qname,
       {_description_sql("n.oid", "pg_namespace")} AS comment
{scope}
WHERE {_user_schema(inputs)}
  AND {_not_extension_member('pg_namespace', 'n.oid')}
"""


# Extensions installed in a system schema (pg_catalog) are user objects too.
def _extensions_sql(inputs: _Inputs) -> str:
    return f"""
SELECT e.extname AS name, n.nspname AS schema, e.oid,
       quote_ident(e.extname) AS qname, quote_ident(n.nspname) AS qschema,
       {_description_sql("e.oid", "pg_extension")} AS comment
{_objects_from('pg_extension', 'e', 'extnamespace', 'extname', inputs)}
WHERE e.extname <> 'plpgsql'
  AND n.nspname <> ALL ({inputs.exclude})
"""


# Sequence parameters, as a JSON object, of the pg_sequence row aliased "s".
_SEQUENCE_JSON = """json_build_object(
    'type', format_type(s.seqtypid, NULL),
    'start', s.seqstart::text, 'increment', s.seqincrement::text,
    'min', s.seqmin::text, 'max', s.seqmax::text,
    'cache', s.seqcache::text, 'cycle', s.seqcycle)"""

# Per column, the lookups only some columns need (a collation other than the type's, a
# default, a NOT NULL constraint's name, an identity's sequence) are scalar sub-selects
# behind a CASE, so a plain column costs no catalog probe beyond its type.
_COLUMNS_JSON = f"""(
    SELECT json_agg(json_build_object(
        'name', quote_ident(a.attname),
        'type', format_type(a.atttypid, a.atttypmod),
        'collation', CASE WHEN a.attcollation <> t.typcollation THEN (
            SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
            FROM pg_catalog.pg_collation co
            JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
            WHERE co.oid = a.attcollation) END,
        'notnull', a.attnotnull,
        -- PG 18 names NOT NULL constraints; the name outlives renames of its
        -- table or column (no rows before 18: contype 'n' did not exist).
        'notnull_name', CASE WHEN a.attnotnull THEN (
            SELECT json_build_array(nn.conname, quote_ident(nn.conname))
            FROM pg_catalog.pg_constraint nn
            WHERE nn.conrelid = a.attrelid AND nn.contype = 'n'
              AND nn.conkey = ARRAY[a.attnum]) END,
        'table_name', c.relname,
        'raw_name', a.attname,
        'identity', a.attidentity,
        'generated', a.attgenerated,
        'default', CASE WHEN a.atthasdef THEN (
            SELECT pg_get_expr(ad.adbin, ad.adrelid)
            FROM pg_catalog.pg_attrdef ad
            WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum) END,
        'local', a.attislocal,
        -- ALTER COLUMN ... SET (n_distinct = ...) and SET STATISTICS: planner settings
        -- that pg_dump -s keeps (attstattarget is -1 or NULL when not set).
        'options', a.attoptions,
        'statistics', CASE WHEN a.attstattarget >= 0 THEN a.attstattarget END,
        'comment', {_description_sql("a.attrelid", "pg_class", "a.attnum")},
        'identity_sequence', CASE WHEN a.attidentity <> '' THEN (
            SELECT {_SEQUENCE_JSON}
            FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid
            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum
              AND d.deptype = 'i') END
    ) ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)"""

# Indexes that stand alone: not the index of a PRIMARY KEY/UNIQUE/EXCLUDE
# constraint (the constraint recreates it) and not a partition's index attached
# to an index of the parent (creating the parent's index recreates it).
# pg_class rows that live in a relation's file: its indexes and the sequences its
# columns own. Their OIDs let a dropped index be traced back to its file.
_OWNED_RELATIONS = """ARRAY(
    SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid
    UNION ALL
    SELECT d.objid FROM pg_catalog.pg_depend d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refobjid = c.oid AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i'))"""

_INDEXES_JSON = f"""(
    SELECT json_agg(json_build_object(
        'name', quote_ident(ic.relname),
        'def', pg_get_indexdef(i.indexrelid),
        'partitioned', ic.relkind = 'I',
        'comment', {_description_sql("ic.oid", "pg_class")}
    ) ORDER BY ic.relname)
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = c.oid
      AND NOT EXISTS (
          SELECT FROM pg_catalog.pg_constraint k
          WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid
            AND k.contype IN ('p', 'u', 'x'))
      AND NOT EXISTS (
          SELECT FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid))"""


def _triggers_json(server_version: int) -> str:
    # A partition's copy of a trigger defined on the parent is marked
    # internal up to PG 12 and has tgparentid set from PG 13 on.
    clone_filter = "AND tg.tgparentid = 0" if server_version >= 130000 else ""
    return f"""(
    SELECT json_agg(json_build_object(
        'name', quote_ident(tg.tgname),
        'def', pg_get_triggerdef(tg.oid),
        'enabled', tg.tgenabled,
        'comment', {_description_sql("tg.oid", "pg_trigger")}
    ) ORDER BY tg.tgname)
    FROM pg_catalog.pg_trigger tg
    WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal {clone_filter})"""


def _tables_sql(server_version: int, inputs: _Inputs) -> str:
    return f"""
SELECT n.nspname AS schema, c.relname AS name, quote_ident(n.nspname) AS qschema,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qname,
       c.oid, c.relkind, c.relpersistence, c.relispartition,
       {_OWNED_RELATIONS} AS owned,
       c.relrowsecurity, c.relforcerowsecurity, c.reloptions,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partbound,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
       {_description_sql("c.oid", "pg_class")} AS comment,
       (SELECT json_agg(json_build_array(pn.nspname, pc.relname) ORDER BY h.inhseqno)
        FROM pg_catalog.pg_inherits h
        JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
        JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE h.inhrelid = c.oid) AS parent_keys,
       (SELECT json_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
                        ORDER BY h.inhseqno)
        FROM pg_catalog.pg_inherits h
        JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
        JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE h.inhrelid = c.oid) AS parents,
       {_COLUMNS_JSON} AS columns,
       -- Constraints inherited from a parent (conislocal false) or cloned from
       -- the partitioned parent (conparentid set) come back with the parent.
       -- NOT NULL constraints (contype 'n' from PG 18) are rendered on columns.
       (SELECT json_agg(json_build_object(
                   'name', quote_ident(k.conname),
                   'type', k.contype,
                   'def', pg_get_constraintdef(k.oid),
                   'validated', k.convalidated,
                   'comment', {_description_sql("k.oid", "pg_constraint")}
               ) ORDER BY k.conname)
        FROM pg_catalog.pg_constraint k
        WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'c', 'x', 'f')
          AND k.conislocal AND k.conparentid = 0) AS constraints,
       {_INDEXES_JSON} AS indexes,
       {_triggers_json(server_version)} AS triggers,
       (SELECT json_agg(json_build_object(
                   'name', quote_ident(p.polname),
                   'permissive', p.polpermissive,
                   'cmd', p.polcmd,
                   'roles', (SELECT json_agg(r.name ORDER BY r.name COLLATE "C")
                             FROM (SELECT CASE WHEN ro = 0 THEN 'PUBLIC'
                                          ELSE quote_ident(pg_get_userbyid(ro)) END AS name
                                   FROM unnest(p.polroles) AS ro) r),
                   'using', pg_get_expr(p.polqual, p.polrelid),
                   'check', pg_get_expr(p.polwithcheck, p.polrelid),
                   'comment', {_description_sql("p.oid", "pg_policy")}
               ) ORDER BY p.polname)
        FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid) AS policies,
       -- Sequences OWNED BY a column (serial): identity sequences depend with 'i'.
       (SELECT json_agg(json_build_object(
                   'qname', quote_ident(sn.nspname) || '.' || quote_ident(sc.relname),
                   'column', quote_ident(a.attname),
                   'params', {_SEQUENCE_JSON},
                   'comment', {_description_sql("sc.oid", "pg_class")}
               ) ORDER BY sn.nspname, sc.relname)
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
        JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
        JOIN pg_catalog.pg_sequence s ON s.seqrelid = sc.oid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refobjid = c.oid AND d.refobjsubid > 0 AND d.deptype = 'a') AS sequences
{_objects_from('pg_class', 'c', 'relnamespace', 'relname', inputs)}
WHERE c.relkind IN ('r', 'p')
  AND {_user_schema(inputs)}
  AND {_not_extension_member('pg_class', 'c.oid')}
"""


def _views_sql(server_version: int, inputs: _Inputs) -> str:
    return f"""
SELECT n.nspname AS schema, c.relname AS name, quote_ident(n.nspname) AS qschema,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qname,
       c.oid, c.relkind, c.reloptions, {_OWNED_RELATIONS} AS owned,
       pg_get_viewdef(c.oid) AS def,
       {_description_sql("c.oid", "pg_class")} AS comment,
       {_COLUMNS_JSON} AS columns,
       {_INDEXES_JSON} AS indexes,
       {_triggers_json(server_version)} AS triggers
{_objects_from('pg_class', 'c', 'relnamespace', 'relname', inputs)}
WHERE c.relkind IN ('v', 'm')
  AND {_user_schema(inputs)}
  AND {_not_extension_member('pg_class', 'c.oid')}
"""


# Sequences owned by a table column are rendered in the table's file.
def _sequences_sql(inputs: _Inputs) -> str:
    return f"""
SELECT n.nspname AS schema, c.relname AS name, c.oid,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qname,
       {_SEQUENCE_JSON} AS params,
       {_description_sql("c.oid", "pg_class")} AS comment
{_objects_from('pg_class', 'c', 'relnamespace', 'relname', inputs)}
JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S'
  AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objid = c.oid
        AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        AND t.relkind IN ('r', 'p'))
  AND {_user_schema(inputs)}
  AND {_not_extension_member('pg_class', 'c.oid')}
"""

# Aggregates (prokind 'a') are not rendered. Functions with an internal
# dependency (the constructors CREATE TYPE ... AS RANGE makes) come with their type.
def _functions_sql(inputs: _Inputs) -> str:
    return f"""
SELECT n.nspname AS schema, p.proname AS name, p.oid,
       quote_ident(n.nspname) || '.' || quote_ident(p.proname) AS qname,
       p.prokind,
       pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_functiondef(p.oid) AS def,
       {_description_sql("p.oid", "pg_proc")} AS comment
{_objects_from('pg_proc', 'p', 'pronamespace', 'proname', inputs)}
WHERE p.prokind IN ('f', 'p', 'w')
  AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
        AND d.objid = p.oid AND d.deptype = 'i')
  AND {_user_schema(inputs)}
  AND {_not_extension_member('pg_proc', 'p.oid')}
"""


def _types_sql(server_version: int, inputs: _Inputs) -> str:
    # Multirange types (PG 14+) are created by their range type; the name is
    # printed when it is not the one PostgreSQL would choose.
    if server_version >= 140000:
        multirange = """(SELECT json_build_object('schema', mn.nspname, 'name', mt.typname,
                                                  'qname', quote_ident(mn.nspname) || '.'
                                                           || quote_ident(mt.typname))
                         FROM pg_catalog.pg_type mt
                         JOIN pg_catalog.pg_namespace mn ON mn.oid = mt.typnamespace
                         WHERE mt.oid = r.rngmultitypid)"""
    else:
        multirange = "NULL::json"
    return f"""
SELECT n.nspname AS schema, t.typname AS name, t.oid,
       CASE WHEN t.typrelid <> 0 THEN ARRAY[t.typrelid] ELSE '{{}}'::oid[] END AS owned,
       quote_ident(n.nspname) || '.' || quote_ident(t.typname) AS qname,
       t.typtype,
       {_description_sql("t.oid", "pg_type")} AS comment,
       (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) AS labels,
       -- domain
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS basetype,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> bt.typcollation
            THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_catalog.pg_collation co
                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = t.typcollation) END AS collation,
       pg_get_expr(t.typdefaultbin, 0) AS default,
       t.typnotnull AS notnull,
       (SELECT json_agg(json_build_object(
                   'name', quote_ident(k.conname),
                   'def', pg_get_constraintdef(k.oid),
                   'validated', k.convalidated,
                   'comment', {_description_sql("k.oid", "pg_constraint")}
               ) ORDER BY k.conname)
        FROM pg_catalog.pg_constraint k
        WHERE k.contypid = t.oid AND k.contype = 'c') AS constraints,
       -- composite
       (SELECT json_agg(json_build_object(
                   'name', quote_ident(a.attname),
                   'type', format_type(a.atttypid, a.atttypmod),
                   'collation', CASE WHEN a.attcollation <> at.typcollation
                                     THEN quote_ident(cn.nspname) || '.'
                                          || quote_ident(co.collname) END,
                   'comment', {_description_sql("a.attrelid", "pg_class", "a.attnum")}
               ) ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
        WHERE t.typtype = 'c' AND a.attrelid = t.typrelid
          AND a.attnum > 0 AND NOT a.attisdropped) AS attributes,
       -- range
       CASE WHEN t.typtype = 'r' THEN json_build_object(
           'subtype', format_type(r.rngsubtype, NULL),
           'opclass', CASE WHEN NOT opc.opcdefault
                           THEN quote_ident(opn.nspname) || '.' || quote_ident(opc.opcname) END,
           'collation', CASE WHEN r.rngcollation <> st.typcollation
                             THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                                   FROM pg_catalog.pg_collation co
                                   JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                   WHERE co.oid = r.rngcollation) END,
           'canonical', CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END,
           'subdiff', CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END,
           'multirange', {multirange}) END AS range
{_objects_from('pg_type', 't', 'typnamespace', 'typname', inputs)}
LEFT JOIN pg_catalog.pg_class rel ON rel.oid = t.typrelid
LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_catalog.pg_type st ON st.oid = r.rngsubtype
LEFT JOIN pg_catalog.pg_opclass opc ON opc.oid = r.rngsubopc
LEFT JOIN pg_catalog.pg_namespace opn ON opn.oid = opc.opcnamespace
WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND rel.relkind = 'c'))
  AND {_user_schema(inputs)}
  AND {_not_extension_member('pg_type', 't.oid')}
"""


# ---------------------------------------------------------------------- helpers


def _literal(text: str) -> str:
    """A SQL string literal for text.

    Text holding a backslash is dollar-quoted: the loader splits files with
    sqlparse, whose lexer reads backslash-quote as an escaped quote in every
    string literal, so '...\\' would swallow the rest of the file.
    """
    if "\\" not in text:
        return quote_literal(text)
    tag = "$_$"
    n = 0
    while tag in text or text.endswith(tag[:-1]):
        n += 1
        tag = f"$_{n}$"
    return f"{tag}{text}{tag}"


def _comment(target: str, text: str | None) -> list[str]:
    """``COMMENT ON target IS ...;`` as a one-element list, or no statement."""
    if text is None:
        return []
    return [f"COMMENT ON {target} IS {_literal(text)};"]


def _parenthesized(items: Sequence[str]) -> str:
    """Items one per line in parentheses (one line per item diffs well), or ``()``."""
    if not items:
        return "()"
    return "(\n" + ",\n".join(f"    {item}" for item in items) + "\n)"


def _file(statements: Sequence[str]) -> str:
    """Statements separated by a blank line, the file ending with one newline."""
    return "\n\n".join(statements) + "\n"


def _reloptions(options: list[str] | None) -> str:
    """``WITH (a=b, ...)`` for pg_class.reloptions, or an empty string."""
    if not options:
        return ""
    rendered = []
    for option in options:
        key, _, value = option.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", value):
            value = _literal(value)
        rendered.append(f"{key}={value}")
    return f" WITH ({', '.join(rendered)})"


_INT_BOUNDS = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def _sequence_options(params: Row, *, with_type: bool) -> list[str]:
    """CREATE SEQUENCE options that differ from the defaults PostgreSQL would pick."""
    seq_type = params["type"]
    low, high = _INT_BOUNDS.get(seq_type, _INT_BOUNDS["bigint"])
    increment = int(params["increment"])
    default_min, default_max = (1, high) if increment > 0 else (low, -1)
    minimum, maximum = int(params["min"]), int(params["max"])
    default_start = minimum if increment > 0 else maximum
    options = []
    if with_type and seq_type != "bigint":
        options.append(f"AS {seq_type}")
    if increment != 1:
        options.append(f"INCREMENT BY {increment}")
    if minimum != default_min:
        options.append(f"MINVALUE {minimum}")
    if maximum != default_max:
        options.append(f"MAXVALUE {maximum}")
    if int(params["start"]) != default_start:
        options.append(f"START WITH {params['start']}")
    if int(params["cache"]) != 1:
        options.append(f"CACHE {params['cache']}")
    if params["cycle"]:
        options.append("CYCLE")
    return options


def _create_sequence(qname: str, params: Row) -> str:
    options = _sequence_options(params, with_type=True)
    return f"CREATE SEQUENCE {qname}" + "".join(f"\n    {o}" for o in options) + ";"


def _column(col: Row, names_not_null: bool = True) -> str:
    """One column definition of CREATE TABLE. `names_not_null`: false for a source whose
    major (before 18) has no names for NOT NULL constraints."""
    parts = [col["name"], col["type"]]
    if col["collation"]:
        parts.append(f"COLLATE {col['collation']}")
    if col["generated"]:
        kind = "VIRTUAL" if col["generated"] == "v" else "STORED"
        parts.append(f"GENERATED ALWAYS AS ({col['default']}) {kind}")
    elif col["default"] is not None:
        parts.append(f"DEFAULT {col['default']}")
    if col["identity"]:
        when = "ALWAYS" if col["identity"] == "a" else "BY DEFAULT"
        identity = f"GENERATED {when} AS IDENTITY"
        if col["identity_sequence"]:
            options = _sequence_options(col["identity_sequence"], with_type=False)
            if options:
                identity += f" ({' '.join(options)})"
        parts.append(identity)
    if col["notnull"]:
        named = col.get("notnull_name")  # [name, quoted name], PG 18 on
        if names_not_null and named and named[0] != default_object_name(
                col["table_name"], col["raw_name"], "not_null"):
            parts.append(f"CONSTRAINT {named[1]} NOT NULL")
        else:
            parts.append("NOT NULL")
    return " ".join(parts)


NAMEDATALEN = 64  # PostgreSQL's, in bytes, with the terminating zero


def default_object_name(name1: str, name2: str, label: str) -> str:
    """The name PostgreSQL gives an unnamed constraint of `name1`'s `name2`
    (``makeObjectName``): ``name1_name2_label``, the longer of the two names shortened
    first (by bytes, never inside a character) until it fits in NAMEDATALEN - 1 bytes."""
    overhead = len(label.encode()) + 2  # the two underscores
    available = NAMEDATALEN - 1 - overhead
    first, second = name1.encode(), name2.encode()
    length1, length2 = len(first), len(second)
    while length1 + length2 > available:
        if length1 > length2:
            length1 -= 1
        else:
            length2 -= 1
    return f"{_clip(first, length1)}_{_clip(second, length2)}_{label}"


def _clip(name: bytes, length: int) -> str:
    """The first `length` bytes of `name`, less any character cut in two (pg_mbcliplen)."""
    return name[:length].decode("utf-8", "ignore")


def _index(index: Row) -> str:
    definition: str = index["def"]
    if index["partitioned"]:
        # pg_get_indexdef prints a partitioned table's index ON ONLY, which
        # would not create the partitions' indexes: without ONLY it recurses.
        marker = f"INDEX {index['name']} ON ONLY "
        definition = definition.replace(marker, f"INDEX {index['name']} ON ", 1)
    return definition + ";"


_TRIGGER_ENABLED = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _triggers(qname: str, triggers: list[Row]) -> list[str]:
    # Only tables' triggers can be disabled (views refuse it).
    statements = []
    for trigger in triggers:
        statements.append(trigger["def"] + ";")
        if trigger["enabled"] in _TRIGGER_ENABLED:
            action = _TRIGGER_ENABLED[trigger["enabled"]]
            statements.append(f"ALTER TABLE {qname} {action} TRIGGER {trigger['name']};")
    return statements


def _policy(qname: str, policy: Row) -> str:
    text = f"CREATE POLICY {policy['name']} ON {qname}"
    if not policy["permissive"]:
        text += "\n    AS RESTRICTIVE"
    text += f"\n    FOR {_POLICY_COMMANDS[policy['cmd']]}"
    text += f"\n    TO {', '.join(policy['roles'] or ['PUBLIC'])}"
    if policy["using"] is not None:
        text += f"\n    USING ({policy['using']})"
    if policy["check"] is not None:
        text += f"\n    WITH CHECK ({policy['check']})"
    return text + ";"


def _column_comments(qname: str, columns: list[Row]) -> list[str]:
    statements = []
    for col in columns:
        statements += _comment(f"COLUMN {qname}.{col['name']}", col["comment"])
    return statements


# -------------------------------------------------------------------- renderers


def _render_schemas(rows: list[Row]) -> Iterator[tuple[ObjectKey, str]]:
    for row in rows:
        statements = [f"CREATE SCHEMA IF NOT EXISTS {row['qname']};"]
        statements += _comment(f"SCHEMA {row['qname']}", row["comment"])
        yield ObjectKey("schema", row["name"], row["name"]), _file(statements)


def _render_extensions(rows: list[Row]) -> Iterator[tuple[ObjectKey, str]]:
    for row in rows:
        # No VERSION: the shadow's server decides which versions exist.
        statements = [
            f"CREATE EXTENSION IF NOT EXISTS {row['qname']} WITH SCHEMA {row['qschema']};"
        ]
        statements += _comment(f"EXTENSION {row['qname']}", row["comment"])
        yield ObjectKey("extension", row["schema"], row["name"]), _file(statements)


def _render_table(row: Row, names_not_null: bool = True) -> str:
    qname = row["qname"]
    columns: list[Row] = row["columns"] or []
    constraints: list[Row] = row["constraints"] or []
    sequences: list[Row] = row["sequences"] or []
    parents: list[str] = row["parents"] or []
    statements = [_create_sequence(seq["qname"], seq["params"]) for seq in sequences]

    foreign_keys = [k for k in constraints if k["type"] == "f"]
    # NOT VALID constraints cannot be declared inside CREATE TABLE.
    inline = [k for k in constraints if k["type"] != "f" and k["validated"]]
    not_valid = [k for k in constraints if k["type"] != "f" and not k["validated"]]

    unlogged = "UNLOGGED " if row["relpersistence"] == "u" else ""
    create = f"CREATE {unlogged}TABLE {qname}"
    if row["relispartition"]:
        # A partition's columns are the parent's: only local constraints are its own.
        items = [f"CONSTRAINT {k['name']} {k['def']}" for k in inline]
        create += f" PARTITION OF {parents[0]}"
        if items:
            create += f" {_parenthesized(items)}"
        create += f"\n{row['partbound']}"
    else:
        # Columns inherited from INHERITS parents come back with the parents.
        items = [_column(col, names_not_null) for col in columns if col["local"] or not parents]
        items += [f"CONSTRAINT {k['name']} {k['def']}" for k in inline]
        create += f" {_parenthesized(items)}"
        if parents:
            create += f"\nINHERITS ({', '.join(parents)})"
    if row["partkey"]:
        create += f"\nPARTITION BY {row['partkey']}"
    create += _reloptions(row["reloptions"])
    statements.append(create + ";")

    for k in not_valid:
        statements.append(f"ALTER TABLE {qname} ADD CONSTRAINT {k['name']} {k['def']};")
    for col in columns:
        if col.get("statistics") is not None:
            statements.append(f"ALTER TABLE ONLY {qname} ALTER COLUMN {col['name']} "
                              f"SET STATISTICS {col['statistics']};")
        if col.get("options"):
            statements.append(f"ALTER TABLE ONLY {qname} ALTER COLUMN {col['name']} "
                              f"SET ({', '.join(col['options'])});")
    for seq in sequences:
        statements.append(f"ALTER SEQUENCE {seq['qname']} OWNED BY {qname}.{seq['column']};")
    statements += [_index(index) for index in row["indexes"] or []]
    statements += _triggers(qname, row["triggers"] or [])
    if row["relrowsecurity"]:
        statements.append(f"ALTER TABLE {qname} ENABLE ROW LEVEL SECURITY;")
    if row["relforcerowsecurity"]:
        statements.append(f"ALTER TABLE {qname} FORCE ROW LEVEL SECURITY;")
    statements += [_policy(qname, policy) for policy in row["policies"] or []]

    statements += _comment(f"TABLE {qname}", row["comment"])
    statements += _column_comments(qname, columns)
    for k in inline + not_valid:
        statements += _comment(f"CONSTRAINT {k['name']} ON {qname}", k["comment"])
    for index in row["indexes"] or []:
        statements += _comment(f"INDEX {row['qschema']}.{index['name']}", index["comment"])
    for trigger in row["triggers"] or []:
        statements += _comment(f"TRIGGER {trigger['name']} ON {qname}", trigger["comment"])
    for policy in row["policies"] or []:
        statements += _comment(f"POLICY {policy['name']} ON {qname}", policy["comment"])
    for seq in sequences:
        statements += _comment(f"SEQUENCE {seq['qname']}", seq["comment"])

    # Foreign keys last, so table files load in any order, FK cycles included.
    # ONLY is refused for a foreign key on a partitioned table.
    only = "" if row["relkind"] == "p" else "ONLY "
    for k in foreign_keys:
        statements.append(f"ALTER TABLE {only}{qname}\n    ADD CONSTRAINT {k['name']} {k['def']};")
        statements += _comment(f"CONSTRAINT {k['name']} ON {qname}", k["comment"])
    return _file(statements)


def _render_view(row: Row, dialect: Dialect | None) -> str:
    qname = row["qname"]
    # pg_get_viewdef ends the query with ";" and starts it with a space.
    query = row["def"].strip().rstrip(";").rstrip()
    if dialect is not None:
        query = dialect.view_query_in_source_dialect(query)
    options = _reloptions(row["reloptions"])
    columns: list[Row] = row["columns"] or []
    if row["relkind"] == "m":
        target = "MATERIALIZED VIEW"
        # WITH NO DATA: the snapshot is schema only, and refreshing could be costly.
        statements = [f"CREATE MATERIALIZED VIEW {qname}{options} AS\n{query}\nWITH NO DATA;"]
    else:
        target = "VIEW"
        statements = [f"CREATE VIEW {qname}{options} AS\n{query};"]
    statements += [_index(index) for index in row["indexes"] or []]
    statements += _triggers(qname, row["triggers"] or [])
    statements += _comment(f"{target} {qname}", row["comment"])
    statements += _column_comments(qname, columns)
    for index in row["indexes"] or []:
        statements += _comment(f"INDEX {row['qschema']}.{index['name']}", index["comment"])
    for trigger in row["triggers"] or []:
        statements += _comment(f"TRIGGER {trigger['name']} ON {qname}", trigger["comment"])
    return _file(statements)


def _render_sequence(row: Row) -> str:
    statements = [_create_sequence(row["qname"], row["params"])]
    statements += _comment(f"SEQUENCE {row['qname']}", row["comment"])
    return _file(statements)


def _render_functions(rows: list[Row]) -> str:
    """All overloads of one name, ordered by identity arguments."""
    statements = []
    for row in sorted(rows, key=lambda r: r["args"]):
        statements.append(row["def"].rstrip() + ";")
        kind = "PROCEDURE" if row["prokind"] == "p" else "FUNCTION"
        statements += _comment(f"{kind} {row['qname']}({row['args']})", row["comment"])
    return _file(statements)


def _multirange_name(range_name: str) -> str:
    """The multirange type name PostgreSQL derives from a range type name."""
    # Mirrors makeMultirangeTypeName(): "range" becomes "multirange", else a suffix.
    position = range_name.find("range")
    if position >= 0:
        return range_name[:position] + "multi" + range_name[position:]
    return range_name + "_multirange"


def _render_type(row: Row) -> str:
    qname = row["qname"]
    typtype = row["typtype"]
    target = "DOMAIN" if typtype == "d" else "TYPE"
    after: list[str] = []
    if typtype == "e":
        labels = [_literal(label) for label in row["labels"] or []]
        create = f"CREATE TYPE {qname} AS ENUM {_parenthesized(labels)}"
    elif typtype == "c":
        attributes: list[Row] = row["attributes"] or []
        items = [
            f"{a['name']} {a['type']}" + (f" COLLATE {a['collation']}" if a["collation"] else "")
            for a in attributes
        ]
        create = f"CREATE TYPE {qname} AS {_parenthesized(items)}"
        after += _column_comments(qname, attributes)
    elif typtype == "d":
        create = f"CREATE DOMAIN {qname} AS {row['basetype']}"
        if row["collation"]:
            create += f"\n    COLLATE {row['collation']}"
        if row["default"] is not None:
            create += f"\n    DEFAULT {row['default']}"
        if row["notnull"]:
            create += "\n    NOT NULL"
        for k in row["constraints"] or []:
            if k["validated"]:
                create += f"\n    CONSTRAINT {k['name']} {k['def']}"
            else:
                # NOT VALID is only accepted by ALTER DOMAIN.
                after.append(f"ALTER DOMAIN {qname} ADD CONSTRAINT {k['name']} {k['def']};")
            after += _comment(f"CONSTRAINT {k['name']} ON DOMAIN {qname}", k["comment"])
    else:
        spec = row["range"]
        options = [f"subtype = {spec['subtype']}"]
        if spec["opclass"]:
            options.append(f"subtype_opclass = {spec['opclass']}")
        if spec["collation"]:
            options.append(f"collation = {spec['collation']}")
        if spec["canonical"]:
            options.append(f"canonical = {spec['canonical']}")
        if spec["subdiff"]:
            options.append(f"subtype_diff = {spec['subdiff']}")
        multirange = spec["multirange"]
        if multirange and (
            multirange["schema"] != row["schema"]
            or multirange["name"] != _multirange_name(row["name"])
        ):
            options.append(f"multirange_type_name = {multirange['qname']}")
        create = f"CREATE TYPE {qname} AS RANGE {_parenthesized(options)}"
    statements = [create + ";"]
    statements += _comment(f"{target} {qname}", row["comment"])
    return _file(statements + after)


# ------------------------------------------------------------------------ entry


# Settings that change how the catalog is printed: names are qualified with
# an empty search_path; the others change how constants in expressions (defaults,
# partition bounds, view queries) and identifiers come out.
_OUTPUT_SETTINGS = {
    "search_path": "",
    "quote_all_identifiers": "off",
    "standard_conforming_strings": "on",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}

_SAVE_SETTINGS_SQL = """
SELECT array_agg(current_setting(name) ORDER BY ord)
FROM unnest(%s::text[]) WITH ORDINALITY AS s(name, ord)
"""

_SET_SETTINGS_SQL = """
SELECT count(set_config(name, value, true)) FROM unnest(%s::text[], %s::text[]) AS s(name, value)
"""

_SET_SESSION_SETTINGS_SQL = """
SELECT count(set_config(name, value, false)) FROM unnest(%s::text[], %s::text[]) AS s(name, value)
"""


@contextmanager
def _stable_output(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the block in a transaction (or savepoint) with _OUTPUT_SETTINGS.

    The settings are transaction-local; they are put back explicitly too,
    because inside the caller's transaction releasing our savepoint would keep
    them. On error the rollback (to the savepoint) undoes them.
    """
    names = list(_OUTPUT_SETTINGS)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        # A cursor of our own: the caller's connection may return dicts.
        row = cur.execute(_SAVE_SETTINGS_SQL, (names,)).fetchone()
        previous: list[str] = row[0] if row else []
        cur.execute(_SET_SETTINGS_SQL, (names, list(_OUTPUT_SETTINGS.values())))
        yield
        cur.execute(_SET_SETTINGS_SQL, (names, previous))


def prepare_render_session(conn: psycopg.Connection[Any]) -> None:
    """Fix the output settings for the whole session of a connection used only to render.

    `render_objects(..., stable_session=True)` then skips setting and restoring
    them around every render: several round trips per changeset saved.

    The render queries are also prepared from their first use, with generic plans:
    planning the table query costs more than running it for a few objects (2.6 ms
    against 0.5 ms), and an export runs the same few queries thousands of times.
    """
    settings = dict(_OUTPUT_SETTINGS)
    if conn.info.server_version >= 120000:
        settings["plan_cache_mode"] = "force_generic_plan"
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_SET_SESSION_SETTINGS_SQL, (list(settings), list(settings.values())))
    conn.prepare_threshold = 0


def _fetch(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]  # static SQL built above
        return cur.fetchall()


# Fixed OIDs of the system catalogs (the same in every PostgreSQL version): an
# object is identified as (catalog, oid), as event triggers report it.
PG_CLASS = 1259
PG_PROC = 1255
PG_TYPE = 1247
PG_NAMESPACE = 2615
PG_EXTENSION = 3079

CatalogRef = tuple[int, int]  # (classid, objid)
TouchedFile = tuple[int, int, str, str, str]  # (classid, objid, kind, schema, name)

_QUERY_KINDS = ("schema", "extension", "table", "view", "sequence", "function", "type")
_KINDS_OF_QUERY = {"view": ("view", "matview")}


def _query_kind(kind: str) -> str:
    """The render query (`_QUERY_KINDS`) that renders objects of `kind`."""
    return next((query for query, kinds in _KINDS_OF_QUERY.items() if kind in kinds), kind)


def _render_sql(query_kind: str, server_version: int, inputs: _Inputs) -> str:
    """The render query of one kind of object (`_QUERY_KINDS`)."""
    if query_kind == "schema":
        return _schemas_sql(inputs)
    if query_kind == "extension":
        return _extensions_sql(inputs)
    if query_kind == "table":
        return _tables_sql(server_version, inputs)
    if query_kind == "view":
        return _views_sql(server_version, inputs)
    if query_kind == "sequence":
        return _sequences_sql(inputs)
    if query_kind == "function":
        return _functions_sql(inputs)
    return _types_sql(server_version, inputs)


@dataclass
class Prefetched:
    """Render rows fetched ahead, with what the tracker found (touched_render_sql)."""

    # What touched_files_sql found: the files of the altered objects and their dependents.
    files: list[TouchedFile]
    # Query kind -> the rows its render query returns for those files' keys.
    rows: dict[str, list[Row]]
    # (query kind, schema, name) of every key asked for, found or not
    asked: set[tuple[str, str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.asked = {(_query_kind(kind), schema, name) for _, _, kind, schema, name in self.files}

    def covers(self, key: ObjectKey) -> bool:
        """Whether `key` was rendered (or found missing) ahead."""
        return (_query_kind(key.kind), key.schema, key.name) in self.asked

    @classmethod
    def from_json(cls, value: Any) -> Prefetched:
        """Read touched_render_sql's value, as psycopg returns it."""
        rows: dict[str, list[Row]] = {}
        for query_kind, row in value["rows"]:
            # to_json() writes oids as strings; psycopg reads them as int.
            row["oid"] = int(row["oid"])
            if row.get("owned"):
                row["owned"] = [int(oid) for oid in row["owned"]]
            rows.setdefault(query_kind, []).append(row)
        return cls(files=[tuple(f) for f in value["files"]], rows=rows)  # type: ignore[misc]


@dataclass
class Rendered:
    """Files rendered from a catalog, and which catalog objects each file holds."""

    files: Snapshot
    # (catalog, oid) of every object, index and owned sequence -> the file it is in.
    owners: dict[CatalogRef, ObjectKey]
    # Partitions and inheritance children -> their parents: a change to a parent
    # (DETACH PARTITION) can change a child's file with no trace left in pg_depend.
    parents: dict[ObjectKey, list[ObjectKey]] = field(default_factory=dict)

    def in_schemas(self, schemas: Collection[str]) -> Rendered:
        """Only the files of objects in `schemas` (export --schema), with what they hold."""
        wanted = set(schemas)
        return Rendered(
            {key: text for key, text in self.files.items() if key.schema in wanted},
            {ref: key for ref, key in self.owners.items() if key.schema in wanted},
            {key: parents for key, parents in self.parents.items() if key.schema in wanted},
        )


def _key_params(keys: Collection[ObjectKey] | None, kinds: Sequence[str]) -> dict[str, Any]:
    if keys is None:
        return {}
    # One (schema, name) once: a view and a matview key can name the same relation.
    wanted = sorted({(k.schema, k.name) for k in keys if k.kind in kinds})
    return {"key_schemas": [schema for schema, _ in wanted], "key_names": [name for _, name in wanted]}


def render_objects(
    conn: psycopg.Connection[Any],
    keys: Collection[ObjectKey] | None = None,
    *,
    exclude_schemas: Collection[str] = DEFAULT_EXCLUDED_SCHEMAS,
    stable_session: bool = False,
    prefetched: Prefetched | None = None,
    dialect: Dialect | None = None,
) -> Rendered:
    """Render the objects `keys` names (None: every user object of the database).

    A key whose object does not exist (any more) is simply absent from the
    result. Runs in the caller's transaction (as a savepoint) if there is one.
    With `stable_session`, the connection went through `prepare_render_session`
    and its settings are left as they are. The rows of `prefetched` (rendered
    in the same session and state) stand for their keys: only the other keys
    are queried. With `dialect`, the files are written in the source's dialect
    (render/dialect.py): for a shadow of another major version than the source.
    """
    version = conn.info.server_version
    files: list[tuple[ObjectKey, str]] = []
    owners: dict[CatalogRef, ObjectKey] = {}
    parents: dict[ObjectKey, list[ObjectKey]] = {}

    by_key = keys is not None
    # PostgreSQL 18 names NOT NULL constraints; a source of an older major has no such
    # names, whatever the shadow keeps (a renamed table's `old_col_not_null`).
    names_not_null = dialect is None or dialect.names_not_null

    ahead = prefetched if prefetched is not None and keys is not None else None

    def rows(query_kind: str) -> list[Row]:
        kinds = _KINDS_OF_QUERY.get(query_kind, (query_kind,))
        ready = ahead.rows.get(query_kind, []) if ahead else []
        wanted = [k for k in keys or () if not ahead.covers(k)] if ahead else keys
        params = {"exclude": list(exclude_schemas), **_key_params(wanted, kinds)}
        if params.get("key_schemas") == []:
            return ready  # nothing (more) of this kind asked for: skip the query
        inputs = _BY_KEY if by_key else _ALL
        return ready + _fetch(conn, _render_sql(query_kind, version, inputs), params)

    def own(key: ObjectKey, catalog: int, row: Row) -> None:
        owners[(catalog, row["oid"])] = key
        for oid in row.get("owned") or ():
            owners[(PG_CLASS, oid)] = key

    with nullcontext() if stable_session else _stable_output(conn):
        schema_rows = rows("schema")
        for row, (key, text) in zip(schema_rows, _render_schemas(schema_rows)):
            files.append((key, text))
            own(key, PG_NAMESPACE, row)
        extension_rows = rows("extension")
        for row, (key, text) in zip(extension_rows, _render_extensions(extension_rows)):
            files.append((key, text))
            own(key, PG_EXTENSION, row)
        for row in rows("table"):
            key = ObjectKey("table", row["schema"], row["name"])
            files.append((key, _render_table(row, names_not_null)))
            own(key, PG_CLASS, row)
            if row["parent_keys"]:
                parents[key] = [ObjectKey("table", *pair) for pair in row["parent_keys"]]
        for row in rows("view"):
            key = ObjectKey("matview" if row["relkind"] == "m" else "view", row["schema"], row["name"])
            files.append((key, _render_view(row, dialect)))
            own(key, PG_CLASS, row)
        for row in rows("sequence"):
            key = ObjectKey("sequence", row["schema"], row["name"])
            files.append((key, _render_sequence(row)))
            own(key, PG_CLASS, row)
        overloads: dict[ObjectKey, list[Row]] = {}
        for row in rows("function"):
            key = ObjectKey("function", row["schema"], row["name"])
            overloads.setdefault(key, []).append(row)
            own(key, PG_PROC, row)
        files += [(key, _render_functions(group)) for key, group in overloads.items()]
        for row in rows("type"):
            key = ObjectKey("type", row["schema"], row["name"])
            files.append((key, _render_type(row)))
            own(key, PG_TYPE, row)
    if dialect is not None:
        files = [(key, dialect.in_source_dialect(text)) for key, text in files]
    return Rendered(files=dict(sorted(files)), owners=owners, parents=parents)


def render_snapshot(
    conn: psycopg.Connection[Any],
    *,
    exclude_schemas: Collection[str] = DEFAULT_EXCLUDED_SCHEMAS,
) -> Snapshot:
    """Render every user object of the connected database.

    Skips system schemas, ``exclude_schemas``, objects that belong to an
    extension and plpgsql. Returns the files sorted by key. Runs in the caller's
    transaction (as a savepoint) if there is one, else in its own.
    """
    return render_objects(conn, exclude_schemas=exclude_schemas).files


# --------------------------------------------------------------- what changed


def touched_files_sql(server_version: int, refs: str) -> str:
    """SQL: the file of every altered object and of every object depending on one.

    Rows (classid, objid, kind, schema, name). `refs` is the FROM item of the altered
    objects' (classid, objid) as `r`. The shadow's tracker runs this in the statement
    that takes what a changeset touched (Shadow.install_tracker): a round trip fewer
    per changeset than asking afterwards.
    """
    # An array stands for its element type, a multirange (PG 14+) for its range.
    multirange = (
        "LEFT JOIN pg_catalog.pg_range mr ON mr.rngmultitypid = t.oid"
        if server_version >= 140000
        else "LEFT JOIN (SELECT NULL::oid AS rngtypid) mr ON false"
    )
    return f"""
WITH refs AS (
    SELECT DISTINCT r.classid, r.objid FROM {refs}
),
-- A change can alter the text of objects that depend on the changed one: a
-- view over a renamed column, a foreign key to a renamed table, everything in a
-- renamed schema. One level of pg_depend finds them.
affected AS (
    SELECT classid, objid FROM refs
    UNION
    SELECT d.classid, d.objid
    FROM pg_catalog.pg_depend d
    JOIN refs ON d.refclassid = refs.classid AND d.refobjid = refs.objid
    WHERE d.deptype IN ('n', 'a')
),
-- The relation each affected object belongs to (its own, for relations).
rel AS (
    SELECT a.classid, a.objid, a.objid AS relid
    FROM affected a WHERE a.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
    UNION ALL
    SELECT a.classid, a.objid, k.conrelid FROM affected a
    JOIN pg_catalog.pg_constraint k
      ON a.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = a.objid
    WHERE k.conrelid <> 0
    UNION ALL
    SELECT a.classid, a.objid, tg.tgrelid FROM affected a
    JOIN pg_catalog.pg_trigger tg
      ON a.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND tg.oid = a.objid
    UNION ALL
    SELECT a.classid, a.objid, ad.adrelid FROM affected a
    JOIN pg_catalog.pg_attrdef ad
      ON a.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND ad.oid = a.objid
    UNION ALL
    SELECT a.classid, a.objid, rw.ev_class FROM affected a
    JOIN pg_catalog.pg_rewrite rw
      ON a.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND rw.oid = a.objid
    UNION ALL
    SELECT a.classid, a.objid, po.polrelid FROM affected a
    JOIN pg_catalog.pg_policy po
      ON a.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND po.oid = a.objid
    UNION ALL
    SELECT a.classid, a.objid, t.typrelid FROM affected a
    JOIN pg_catalog.pg_type t
      ON a.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = a.objid
    WHERE t.typrelid <> 0
),
-- Indexes live in their table's file, owned sequences in their owner's.
rel_file AS (
    SELECT r.classid, r.objid, coalesce(i.indrelid, own.refobjid, c.oid) AS relid
    FROM rel r
    JOIN pg_catalog.pg_class c ON c.oid = r.relid
    LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
    LEFT JOIN LATERAL (
        SELECT d.refobjid FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p')
        WHERE c.relkind = 'S'
          AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        LIMIT 1) own ON true
),
typ AS (
    SELECT a.classid, a.objid, a.objid AS typid
    FROM affected a WHERE a.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    UNION ALL
    SELECT a.classid, a.objid, k.contypid FROM affected a
    JOIN pg_catalog.pg_constraint k
      ON a.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = a.objid
    WHERE k.contypid <> 0
),
typ_file AS (
    SELECT y.classid, y.objid, coalesce(el.oid, mr.rngtypid, t.oid) AS typid
    FROM typ y
    JOIN pg_catalog.pg_type t ON t.oid = y.typid
    LEFT JOIN pg_catalog.pg_type el ON el.typarray = t.oid
    {multirange}
)
SELECT r.classid, r.objid,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'matview' WHEN 'S' THEN 'sequence'
                      WHEN 'c' THEN 'type' ELSE 'table' END AS kind,
       n.nspname AS schema, c.relname AS name
FROM rel_file r
JOIN pg_catalog.pg_class c ON c.oid = r.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c')
UNION ALL
SELECT y.classid, y.objid, 'type', n.nspname, t.typname
FROM typ_file y
JOIN pg_catalog.pg_type t ON t.oid = y.typid
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r')
UNION ALL
SELECT a.classid, a.objid, 'function', n.nspname, p.proname
FROM affected a
JOIN pg_catalog.pg_proc p
  ON a.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = a.objid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
UNION ALL
SELECT a.classid, a.objid, 'schema', n.nspname, n.nspname
FROM affected a
JOIN pg_catalog.pg_namespace n
  ON a.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND n.oid = a.objid
UNION ALL
SELECT a.classid, a.objid, 'extension', n.nspname, e.extname
FROM affected a
JOIN pg_catalog.pg_extension e
  ON a.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND e.oid = a.objid
JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
"""


# Dropped sub-objects name their table in address_names: (schema, table, ...).
_DROPPED_PARTS_OF_RELATIONS = {
    "table column", "table constraint", "trigger", "default value", "rule", "policy",
}
_RELATION_KINDS = ("table", "view", "matview")


def keys_touched(
    altered: Sequence[CatalogRef],
    dropped: Sequence[tuple[int, int, str, Sequence[str]]],
    files: Sequence[TouchedFile],
    owners: Mapping[CatalogRef, ObjectKey],
) -> set[ObjectKey]:
    """The files a change may have altered, created or deleted.

    `altered` and `dropped` are what the shadow's event triggers reported, `files`
    what touched_files_sql found for `altered` right after the change; `owners`
    is where each catalog object was before the change (from the last render),
    which is how renamed and dropped objects find their old file. Returns a
    superset: re-rendering a key that did not change is harmless.
    """
    keys: set[ObjectKey] = set()
    for ref in altered:
        if ref in owners:
            keys.add(owners[ref])
    for classid, objid, kind, schema, name in files:
        keys.add(ObjectKey(kind, schema, name))
        if (classid, objid) in owners:
            keys.add(owners[(classid, objid)])
    for classid, objid, object_type, names in dropped:
        if (classid, objid) in owners:
            keys.add(owners[(classid, objid)])
        elif object_type in _DROPPED_PARTS_OF_RELATIONS and len(names) >= 2:
            keys.update(ObjectKey(kind, names[0], names[1]) for kind in _RELATION_KINDS)
        elif object_type == "domain constraint" and len(names) >= 2:
            keys.add(ObjectKey("type", names[0], names[1]))
    return keys


# ------------------------------------------- rendering in the tracker's statement

def render_keys_body(server_version: int, exclude: str) -> str:
    """The PL/pgSQL body of render_keys: for each kind of object asked for, the render
    query by key, built to read the function's arguments (p_kinds, p_schemas, p_names)
    and `exclude` (a text[] literal) where the client's query reads parameters."""
    branches = []
    for query_kind in _QUERY_KINDS:
        kinds = _KINDS_OF_QUERY.get(query_kind, (query_kind,))
        kind_list = ", ".join(f"'{kind}'" for kind in kinds)
        inputs = _Inputs(exclude="p_exclude::text[]", keys=f"""(
            SELECT DISTINCT w.schema, w.name
            FROM unnest(p_kinds, p_schemas, p_names) AS w(kind, schema, name)
            WHERE w.kind IN ({kind_list})) AS k""")
        query = _render_sql(query_kind, server_version, inputs)
        branches.append(f"""
    IF p_kinds && ARRAY[{kind_list}] THEN
        RETURN QUERY SELECT '{query_kind}'::text, to_json(r) FROM ({query}) r;
    END IF;""")
    return f"DECLARE p_exclude constant text[] := {exclude};\nBEGIN" + "".join(branches) + "\nEND"


def install_render_function(
    conn: psycopg.Connection[Any], schema: str, exclude_schemas: Collection[str]
) -> None:
    """Create `schema`.render_keys(kinds, schemas, names): the render queries, in PL/pgSQL.

    It runs, for the kinds of object asked for only, the very queries render_objects
    runs, and returns (query kind, row as json) rows. touched_render_sql calls it in
    the statement that takes what a changeset touched, so that the objects it
    touched come back rendered with it: a round trip, a statement and its
    transaction fewer per changeset. Only the connection's own user may call it.
    Rendered in the calling session's settings (prepare_render_session).
    """
    function = sql.Identifier(schema, "render_keys")
    exclude = sql.Literal(list(exclude_schemas)).as_string(conn)
    body = render_keys_body(conn.info.server_version, exclude)
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}(p_kinds text[], p_schemas text[], p_names text[])\n"
        "RETURNS TABLE (out_kind text, out_row json) LANGUAGE plpgsql AS {}"
    ).format(function, sql.Literal(body)), prepare=False)
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}(text[], text[], text[]) FROM PUBLIC").format(
        function), prepare=False)


def touched_render_sql(server_version: int, schema: str, altered: str) -> str:
    """SQL (a scalar sub-select) of one json value: the files of the objects in
    `altered` (a relation of (classid, objid)) and their dependents, and their rows
    rendered by `schema`.render_keys (install_render_function). Prefetched.from_json
    reads it.
    """
    files = touched_files_sql(server_version, refs=f"{altered} AS r")
    render_keys = sql.Identifier(schema, "render_keys").as_string(None)
    return f"""(
    WITH files AS ({files}),
    wanted AS (
        SELECT array_agg(kind ORDER BY kind, schema, name) AS kinds,
               array_agg(schema ORDER BY kind, schema, name) AS schemas,
               array_agg(name ORDER BY kind, schema, name) AS names
        FROM (SELECT DISTINCT kind, schema, name FROM files) d
    )
    SELECT json_build_object(
        'files', (SELECT coalesce(json_agg(json_build_array(
                             f.classid::bigint, f.objid::bigint, f.kind, f.schema, f.name)), '[]')
                  FROM files f),
        'rows', (SELECT coalesce(json_agg(json_build_array(x.out_kind, x.out_row)), '[]')
                 FROM wanted, LATERAL {render_keys}(wanted.kinds, wanted.schemas, wanted.names) x
                 WHERE wanted.kinds IS NOT NULL)))"""
