"""The session environment history ran under, as far as the source's catalog still tells.

v1 records the SQL text, not the session that ran it. A migration run as a role whose
``search_path`` is set on the role (``ALTER ROLE app SET search_path = auth``) or on the
database created its unqualified names in that schema; replayed under the shadow's default
they would land in ``public``. The catalog keeps those settings (``pg_db_role_setting``),
so the reader takes them, with the schemas that exist live, and the replay runs each
changeset under the ``search_path`` its recorded user had.

PostgreSQL applies the most specific setting: this role in this database, then this role,
then this database. ``$user`` in a path means the session's user: the recorded one, not the
shadow's replay role, so it is replaced by the recorded user's name. The default path
(``"$user", public``) matters only when a schema named after the user exists live; then it
is used, resolved the same way. The server-wide default (``postgresql.conf``) is not read:
the reader's own session cannot tell it apart from its own settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from pggit_export.identifiers import catalog_name, quote_identifier

DEFAULT_SEARCH_PATH = '"$user", public'

# search_path settings of this database: per role here, per role anywhere, per database.
_SEARCH_PATH_SETTINGS_SQL = """
SELECT COALESCE(r.rolname, '') AS role, s.setdatabase <> 0 AS in_database,
       substr(c.setting, length('search_path=') + 1) AS search_path
FROM pg_catalog.pg_db_role_setting AS s
LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting)
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                            WHERE datname = pg_catalog.current_database()))
  AND c.setting LIKE 'search\\_path=%'
"""

_LIVE_SCHEMAS_SQL = """
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
"""

_PATH_ITEM = re.compile(r'\s*("(?:[^"]|"")*"|[^,]+?)\s*(?:,|$)')


@dataclass(frozen=True)
class SessionEnvironment:
    """Session settings of the source's roles, and its live schemas (see the module)."""

    database_search_path: str | None = None
    role_search_paths: Mapping[str, str] = field(default_factory=dict)
    live_schemas: frozenset[str] = frozenset()

    def search_path_for(self, role: str | None) -> str | None:
        """The search_path a session of `role` had, `$user` resolved; None where it was
        the default and no schema is named after the role (the shadow's default is then
        the same)."""
        path = self.role_search_paths.get(role or "") if role else None
        path = path or self.database_search_path
        if path is None:
            if not role or role not in self.live_schemas:
                return None
            path = DEFAULT_SEARCH_PATH
        items = [m.group(1) for m in _PATH_ITEM.finditer(path) if m.group(1)]
        resolved = [
            (quote_identifier(role) if role else None) if item in ('"$user"', "$user") else item
            for item in items
        ]
        return ", ".join(item for item in resolved if item is not None)

    def describe(self) -> list[str]:
        """One line per setting found, for the report and check."""
        lines = [f"database search_path = {self.database_search_path}"] if self.database_search_path else []
        lines += [f"role {role} search_path = {path}"
                  for role, path in sorted(self.role_search_paths.items())]
        return lines


def read_environment(conn: psycopg.Connection[Any]) -> SessionEnvironment:
    """Read the settings and schemas in `conn`'s (read-only) transaction."""
    role_in_database: dict[str, str] = {}
    role_anywhere: dict[str, str] = {}
    database: str | None = None
    cur = conn.cursor(row_factory=tuple_row)
    for role, in_database, path in cur.execute(_SEARCH_PATH_SETTINGS_SQL).fetchall():
        if not role:
            database = path
        elif in_database:
            role_in_database[role] = path
        else:
            role_anywhere[role] = path
    schemas = frozenset(name for (name,) in cur.execute(_LIVE_SCHEMAS_SQL).fetchall())
    return SessionEnvironment(
        database_search_path=database,
        role_search_paths={**role_anywhere, **role_in_database},
        live_schemas=schemas,
    )


def search_path_schemas(search_path: str) -> list[str]:
    """The schema names a search_path value lists, as the catalog spells them."""
    return [catalog_name(m.group(1)) for m in _PATH_ITEM.finditer(search_path) if m.group(1)]
