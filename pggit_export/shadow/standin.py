"""Extension stand-ins: an extension the shadow's server lacks, built from the source's catalog.

The embedded server has no ``pgcrypto`` and no ``uuid-ossp`` (they need OpenSSL and libuuid).
``CREATE EXTENSION pgcrypto`` then fails, its changeset rolls back, and every later point
misses what it created. The shadow holds no data and never calls these functions; what the
history needs is that they *exist*, with the source's signatures, so that a default
``gen_random_uuid()`` or an index on ``digest(...)`` replays, and that the extension itself is
there, so the file still says ``CREATE EXTENSION pgcrypto``.

So, for a private server of PostgreSQL 18 or later (``extension_control_path`` points into the
server's own directory, see ``server.EmbeddedServer``), a stand-in is written there: a control
file with the live extension's version and comment, marked trusted like the real ones (the
replay role is no superuser), and a script creating each member function of the live
extension with its exact signature, volatility and strictness, and a body that does nothing.
Its members are extension members, so they are rendered no more than a real extension's.

What cannot stand in: members other than functions and procedures (types, operators, casts,
operator classes: they need the extension's C code) and functions taking or returning types
PL/pgSQL cannot (``internal``, ``cstring``, ...). The stand-in is still built when there are
some; the repair's description counts them, so the commit says what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import quote_literal

_EXTENSION_SQL = """
SELECT e.oid, e.extversion, n.nspname, pg_catalog.obj_description(e.oid, 'pg_extension')
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = %(name)s
"""

# Member functions, printed the way CREATE FUNCTION takes them back.
_MEMBER_FUNCTIONS_SQL = """
SELECT CASE WHEN n.oid = e.extnamespace THEN '@extschema@' ELSE quote_ident(n.nspname) END
           || '.' || quote_ident(p.proname) AS qname,
       pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
       pg_catalog.pg_get_function_result(p.oid) AS result,
       p.prokind, p.provolatile, p.proisstrict,
       EXISTS (SELECT FROM unnest(p.proargtypes::oid[] || ARRAY[p.prorettype]) AS t(oid)
               JOIN pg_catalog.pg_type ty ON ty.oid = t.oid
               WHERE ty.typtype = 'p' AND ty.typname NOT IN (
                   'void', 'trigger', 'event_trigger', 'record', 'anyelement', 'anyarray',
                   'anynonarray', 'anyenum', 'anyrange', 'anymultirange',
                   'anycompatible', 'anycompatiblearray', 'anycompatiblenonarray',
                   'anycompatiblerange', 'anycompatiblemultirange'))
           OR p.prokind NOT IN ('f', 'p') AS unsupported,
       EXISTS (SELECT FROM unnest(p.proargmodes) AS m WHERE m IN ('o', 'b', 't')) AS has_out
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = %(oid)s
  AND d.deptype = 'e'
ORDER BY qname, arguments
"""

# Members that are not functions, counted by kind for the description.
_OTHER_MEMBERS_SQL = """
SELECT pg_catalog.split_part(pg_catalog.pg_describe_object(d.classid, d.objid, 0), ' ', 1) AS kind,
       count(*)
FROM pg_catalog.pg_depend d
WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = %(oid)s
  AND d.deptype = 'e' AND d.classid <> 'pg_catalog.pg_proc'::regclass
GROUP BY 1 ORDER BY 1
"""

_VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}


@dataclass(frozen=True)
class StandIn:
    """The files of one extension stand-in, and what it could not stand in for."""

    name: str
    version: str
    schema: str  # where the source has it
    files: dict[str, str]  # file name in the extension directory -> text
    functions: int
    missing: tuple[str, ...]  # "2 type", "1 function of unsupported types", ...

    def describe(self) -> str:
        lacks = f"; no stand-in for {', '.join(self.missing)}" if self.missing else ""
        return (f"built a stand-in for extension {self.name} {self.version}: the shadow's "
                f"PostgreSQL lacks it; {self.functions} functions with the source's "
                f"signatures (source's pg_depend), bodies that do nothing{lacks}")


def build_stand_in(live: psycopg.Connection[Any], name: str) -> StandIn | None:
    """The stand-in for extension `name` as the source has it; None if it has none."""
    with live.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(_EXTENSION_SQL, {"name": name}).fetchone()
        if found is None:
            return None
        oid, version, schema, comment = found
        functions = cur.execute(_MEMBER_FUNCTIONS_SQL, {"oid": oid}).fetchall()
        others = cur.execute(_OTHER_MEMBERS_SQL, {"oid": oid}).fetchall()
    statements = []
    unsupported = 0
    for qname, arguments, result, kind, volatility, strict, bad, has_out in functions:
        if bad:
            unsupported += 1
            continue
        statements.append(_function(qname, arguments, result, kind, volatility, strict, has_out))
    missing = [f"{count} {kind}" for kind, count in others]
    if unsupported:
        missing.append(f"{unsupported} function of types PL/pgSQL cannot take")
    control = "\n".join([
        f"comment = {quote_literal(comment or '')}",
        f"default_version = {quote_literal(version)}",
        "relocatable = false",
        "trusted = true",  # as pgcrypto and uuid-ossp are: the replay role is no superuser
        "",
    ])
    script = "\n".join([
        f"-- Stand-in for {name} {version}, built by pggit-export from the source's catalog.",
        *statements, "",
    ])
    return StandIn(
        name=name, version=version, schema=schema,
        files={f"{name}.control": control, f"{name}--{version}.sql": script},
        functions=len(statements), missing=tuple(missing),
    )


def _function(qname: str, arguments: str, result: str, kind: str, volatility: str,
              strict: bool, has_out: bool) -> str:
    """A member function with the source's signature and a body that does nothing.

    A member in the extension's schema is created in ``@extschema@``, wherever the history
    installs it; argument types print as the source's session sees them.
    """
    if kind == "p":
        return f"CREATE PROCEDURE {qname}({arguments}) LANGUAGE plpgsql AS $$BEGIN END$$;"
    if result == "void":
        body = "BEGIN END"
    elif has_out or result.startswith("SETOF ") or result.startswith("TABLE("):
        body = "BEGIN RETURN; END"
    else:
        body = "BEGIN RETURN NULL; END"
    flags = _VOLATILITY[volatility] + (" STRICT" if strict else "")
    return (f"CREATE FUNCTION {qname}({arguments}) RETURNS {result} LANGUAGE plpgsql "
            f"{flags} AS $$ {body} $$;")
