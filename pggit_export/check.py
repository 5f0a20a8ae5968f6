"""Pre-flight check: read a source's history and say what will not export cleanly.

`pggit-export check SOURCE` runs `check_history()`. It reads the history exactly
as the export does (HistoryReader: one REPEATABLE READ, READ ONLY transaction,
rows streamed through a server-side cursor, grouped by `group_changesets`) and
writes nothing anywhere. History SQL is never executed: statements are only
split and classified as replay would (`split_statements`). A shadow is started
only when the history names extensions or roles, and only to look them up in
its catalog (`pg_available_extensions`, `pg_roles`).

With `replay=True` (`check --replay`) it also replays the whole history the way the
export does, in the shadow, with repairs, writing nothing (`ExportOptions(dry_run=True)`):
only a replay knows what a repair can heal, so only then is the verdict the export's own
(`replay-failed`, `replay-refused`: `clean` is False exactly when the export would not be).

Memory stays bounded by the number of objects, not of rows: per-object state
lives in dicts keyed by the object's (type, schema, name) -- the identity
pggit.objects is unique on -- and row-level findings keep only ids.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK
from pggit_export.export import ExportOptions, export_history
from pggit_export.git.message import format_id_ranges
from pggit_export.identifiers import IDENTIFIER_PATTERN, catalog_name
from pggit_export.read.history import (
    Changeset,
    HistoryColumns,
    HistoryReader,
    HistoryRow,
    group_changesets,
)
from pggit_export.read.sqlsplit import without_leading_comments
from pggit_export.render.snapshot import DEFAULT_EXCLUDED_SCHEMAS
from pggit_export.shadow.evidence import (
    OidClock,
    read_later_changes,
    read_oid_clock,
    read_recorded_creations,
    read_unrecorded_objects,
)
from pggit_export.shadow.heal import LiveCatalog, plan_dated_objects, plan_labels
from pggit_export.shadow.prehistory import plan_prehistory
from pggit_export.shadow.replay import (
    DEFAULT_MAX_SQL_BYTES,
    Action,
    ShadowError,
    Statement,
    open_shadow,
    split_statements,
)
from pggit_export.shadow.server import ServerError
from pggit_export.shadow.standin import build_stand_in
from pggit_export.shadow.transaction_ids import read_comment_dates

SEVERITIES = ("error", "warning", "info")

# Every code this module emits, with its fixed severity: callers may rely on both.
CODES: dict[str, str] = {
    "null-created-at": "warning",  # time inferred from neighbouring rows
    "missing-created-by": "warning",  # commit author falls back to the default
    "missing-sql": "error",  # nothing to replay: the change is lost
    "missing-create": "error",  # ALTER/DROP of an object history never created
    "missing-create-index": "warning",  # same for an index/constraint, often unrecorded
    "missing-create-implicit": "info",  # same, but the SQL does not even name it
    "untracked-object": "warning",  # active in pggit.objects, no CREATE in history
    "recreated": "info",  # created, dropped, created again
    "time-order": "warning",  # created_at goes backwards against id
    "refused-statement": "warning",  # replay refuses it and says so
    "missing-extension": "error",  # CREATE EXTENSION the shadow cannot satisfy
    "missing-role": "error",  # a role the shadow lacks: the statement fails
    "extension-stand-in": "info",  # the shadow lacks it; the export builds a stand-in
    "oid-chronology": "info",  # whether recorded OIDs may date live objects
    "replay-environment": "info",  # a role or database setting the replay reproduces
    "unused-column": "info",  # an older pgGit's tables lack a column: what is not used
    "pre-history": "info",  # live objects no history row creates: the export's baseline
    "unrecorded-trigger": "info",  # live triggers no text creates: made when they can be
    "unrecorded-label": "info",  # enum labels no text adds, dated by OIDs or the texts
    "unrecorded-object": "info",  # sequences, types, matviews, procedures dated by their OIDs
    "xid-chronology": "info",  # whether the rows' transaction ids may date live comments
    "unrecorded-comment": "info",  # comments no text sets, dated by their transaction ids
    "hidden-ddl": "info",  # objects changed by SELECT/CALL/DO only
    "unsupported-kind": "warning",  # created, replayed, but not rendered in snapshots
    "missing-object-row": "warning",  # history row whose pggit.objects row is gone
    "large-sql": "warning",  # over 1 MB: slow to split
    "too-large-sql": "error",  # over max_sql_bytes: replay refuses the text unparsed
    "shadow-unavailable": "error",  # extensions/roles could not be checked
    "unmapped-author": "warning",  # a user the --authors file does not name
    # --replay: the dry replay's own account, the export's verdict
    "replay-failed": "error",  # the changeset fails in the shadow even after repairs
    "replay-refused": "error",  # the replay refuses a statement (host-reaching, too large)
    "replay-repaired": "info",  # changesets that replay only after repairs
}
# The findings of a dry replay that make the export not clean (ExportReport.clean).
REPLAY_VERDICT_CODES = frozenset({"replay-failed", "replay-refused"})

LARGE_SQL_BYTES = 1024 * 1024
EXAMPLE_LIMIT = 5  # examples kept in a finding's detail
STATEMENT_PREVIEW = 200  # characters of a statement quoted in a finding

# Object types that are not schema objects (branches, commits, tags) or that live
# inside another object's row (columns), and pgGit's own schemas.
SKIPPED_OBJECT_TYPES = frozenset({"COLUMN", "BRANCH", "COMMIT", "TAG"})
PGGIT_SCHEMAS = frozenset({"pggit", "pggit_v0", "pggit_v2", "pggit_audit"})

# Kinds that a CREATE makes in the shadow but that snapshot.render_snapshot does
# not render (it renders schemas, extensions, tables with their constraints,
# indexes, triggers, policies and owned sequences, views, materialized views,
# sequences, functions/procedures/window functions, and enum/domain/range/
# composite types). POLICY is rendered with its table, so it is not listed.
UNSUPPORTED_KINDS = frozenset({
    "AGGREGATE", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "RULE", "FOREIGN TABLE",
    "SERVER", "FOREIGN DATA WRAPPER", "USER MAPPING", "PUBLICATION", "SUBSCRIPTION",
    "EVENT TRIGGER", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "CAST", "COLLATION", "CONVERSION",
    "STATISTICS", "ACCESS METHOD", "TRANSFORM", "LANGUAGE",
})
BASE_TYPE_KIND = "TYPE (base or shell)"

# Role specifications that are not role names.
ROLE_KEYWORDS = frozenset({"PUBLIC", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE", "NONE",
                           "DEFAULT"})


@dataclass
class Finding:
    """One thing the export will not do cleanly, with the history rows concerned."""

    code: str  # stable machine name, a key of CODES
    severity: str  # "error" | "warning" | "info"
    message: str  # one human sentence
    history_ids: list[int]  # may be empty for object-level findings
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable facts


@dataclass
class CheckReport:
    """What `check_history` found."""

    source_server_version: int
    history_rows: int
    changesets: int
    findings: list[Finding]
    # Whether the history was replayed (check --replay): then `clean` is the export's verdict.
    replayed: bool = False

    @property
    def clean(self) -> bool:
        """True when no finding is an error or a warning (info is fine); after a dry
        replay, exactly when the export would be clean: no changeset fails and no
        statement is refused (what the static findings feared, the replay settled)."""
        if self.replayed:
            return not any(f.code in REPLAY_VERDICT_CODES for f in self.findings)
        return not any(f.severity in ("error", "warning") for f in self.findings)

    @property
    def exit_code(self) -> int:
        """EXIT_OK when the history is clean, else EXIT_INCOMPLETE (the findings are listed)."""
        return EXIT_OK if self.clean else EXIT_INCOMPLETE

    def counts(self) -> dict[str, int]:
        """Number of findings per severity."""
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the `--json` output)."""
        return {
            "source_server_version": self.source_server_version,
            "history_rows": self.history_rows,
            "changesets": self.changesets,
            "replayed": self.replayed,
            "clean": self.clean,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
        }

    def format_text(self) -> str:
        """Human output: findings grouped by code, ids as ranges, a summary line last."""
        version = _version_text(self.source_server_version)
        lines = [
            (
                f"Checked {self.history_rows} history rows in {self.changesets} changesets "
                f"(source PostgreSQL {version})."
            )
        ]
        by_code: dict[str, list[Finding]] = {}
        for finding in self.findings:
            by_code.setdefault(finding.code, []).append(finding)
        for code, findings in by_code.items():
            lines.append("")
            lines.append(f"{findings[0].severity}: {code} ({len(findings)})")
            for finding in findings:
                ids = (
                    f" [history ids {format_id_ranges(finding.history_ids)}]"
                    if finding.history_ids
                    else ""
                )
                lines.append(f"  - {finding.message}{ids}")
        counts = self.counts()
        lines.append("")
        verdict = "clean" if self.clean else "not clean"
        if self.replayed:
            verdict += (" (the dry replay exports every changeset)" if self.clean else
                        " (the dry replay says so: the export would exit 1)")
        lines.append(
            f"Summary: {verdict}: {counts['error']} error(s), {counts['warning']} warning(s), "
            f"{counts['info']} info."
        )
        return "\n".join(lines)


def check_history(
    source: str,
    *,
    shadow_dsn: str | None = None,
    max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
    authors: Collection[str] | None = None,
    replay: bool = False,
) -> CheckReport:
    """Read the source's history (read only, nothing written anywhere) and report
    what will not export cleanly.

    `shadow_dsn` is the server the export would replay on (None: a private
    PostgreSQL, started here only if the history names extensions or roles).
    `max_sql_bytes` is the export's limit above which a text is refused unparsed.
    `replay`: also replay the history as the export would, writing nothing (see above).
    Raises reader.SourceError when the source has no pgGit v1 tables.
    """
    checker = _Checker(max_sql_bytes=max_sql_bytes)
    with HistoryReader(source) as reader:
        info = reader.info()
        for changeset in group_changesets(reader.rows()):
            checker.changeset(changeset)
        # Same transaction, so the objects table matches the history just read.
        columns = reader.columns
        active = (_active_uncreated_objects(reader.conn)
                  if columns.has("objects", "is_active") and columns.has("history", "change_type")
                  else [])
        clock = read_oid_clock(reader.conn, columns)
        planned, baseline = _plan_findings(reader.conn, clock, columns)
        findings = checker.findings(active, baseline) + planned
        for unusable in columns.unusable():  # an older pgGit's tables
            findings.append(Finding("unused-column", CODES["unused-column"], unusable, [], {}))
        for setting in reader.environment().describe():
            findings.append(Finding(
                "replay-environment", CODES["replay-environment"],
                f"changesets replay under the source's {setting} (pg_db_role_setting)",
                [], {"setting": setting},
            ))
        if clock.oids:  # a history that records OIDs: say whether they can be trusted
            findings.append(Finding(
                "oid-chronology", CODES["oid-chronology"],
                f"OID chronology (dating live objects no history creates): {clock.reason}",
                [], {"usable": clock.usable, "recorded_oids": len(clock.oids)},
            ))
        findings += _shadow_findings(checker, shadow_dsn, info.server_version // 10000,
                                     reader.conn)
    if authors is not None:
        unmapped = {user: ids for user, ids in checker.users.items() if user not in authors}
        for user, ids in sorted(unmapped.items()):
            findings.append(Finding(
                "unmapped-author", CODES["unmapped-author"],
                f"database user {user!r} is not in the authors file: its commits get "
                f"'{user} <...@pggit.invalid>'", ids, {"user": user},
            ))
    if replay:
        findings += dry_replay_findings(source, shadow_dsn, max_sql_bytes)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    code_order = {c: i for i, c in enumerate(CODES)}
    findings.sort(key=lambda f: (order[f.severity], code_order[f.code],
                                 min(f.history_ids, default=0)))
    return CheckReport(
        source_server_version=info.server_version,
        history_rows=info.history_rows,
        changesets=checker.changesets,
        findings=findings,
        replayed=replay,
    )


def dry_replay_findings(
    source: str, shadow_dsn: str | None, max_sql_bytes: int
) -> list[Finding]:
    """Replay the whole history as `export` would (same shadow, repairs, limits), writing
    nothing, and report what it could not export."""
    with tempfile.TemporaryDirectory(prefix="pggit-export-check-") as work:
        report = export_history(source, Path(work) / "repository", ExportOptions(
            shadow_dsn=shadow_dsn, max_sql_bytes=max_sql_bytes, dry_run=True))
    findings = []
    for item in report.failed:
        findings.append(Finding(
            "replay-failed", CODES["replay-failed"],
            f"the changeset fails to replay in the shadow ({report.shadow}): {item.error}",
            item.history_ids,
            {"statement": (item.statement or "")[:STATEMENT_PREVIEW], "error": item.error},
        ))
    for item in report.refused_statements:
        findings.append(Finding(
            "replay-refused", CODES["replay-refused"],
            f"the replay refuses a statement ({item.reason}): "
            f"{' '.join((item.statement or '').split())[:STATEMENT_PREVIEW]}",
            item.history_ids, {"reason": item.reason},
        ))
    repaired: dict[tuple[int, ...], list[str]] = {}
    for item in report.repairs:
        repaired.setdefault(tuple(item.history_ids), []).append(item.reason)
    if repaired:
        ids = sorted({i for key in repaired for i in key})
        findings.append(Finding(
            "replay-repaired", CODES["replay-repaired"],
            f"{len(repaired)} changesets replay only after repairs, each named in its "
            "commit's Pggit-Repaired trailer",
            ids, {"examples": [reasons[0] for reasons in list(repaired.values())[:EXAMPLE_LIMIT]]},
        ))
    return findings


def _plan_findings(conn: psycopg.Connection[Any], clock: OidClock,
                   columns: HistoryColumns) -> tuple[list[Finding], set[V1Object]]:
    """Where the export will put what the history never created (its pre-scan's plan):
    the pre-history baseline, and the triggers it creates when their parts exist. Also
    the baseline's objects, as v1 names them (their missing CREATE is no error)."""
    recorded = read_recorded_creations(conn, columns)
    later = read_later_changes(conn)
    unrecorded = read_unrecorded_objects(conn, DEFAULT_EXCLUDED_SCHEMAS)
    findings = []
    dates = read_comment_dates(conn, DEFAULT_EXCLUDED_SCHEMAS, recorded, columns)
    comments = dates.dated
    if dates.clock is not None:  # comments no text sets: may their ids date them?
        findings.append(Finding(
            "xid-chronology", CODES["xid-chronology"],
            f"transaction id chronology (dating {dates.unrecorded} live comments no history "
            f"text sets): {dates.clock.reason}",
            [], {"usable": dates.clock.usable, "comments": dates.unrecorded},
        ))
    plan = plan_prehistory(conn, recorded, later, DEFAULT_EXCLUDED_SCHEMAS, clock,
                           unrecorded=unrecorded, comments=comments)
    if plan.dated:
        findings.append(Finding(
            "pre-history", CODES["pre-history"],
            f"{plan.describe(plan.dated)} that no history creates have OIDs older than every "
            "object the history records as created (OID chronology): the export starts with "
            "them too",
            [], {"objects": [f"{k.kind} {k.schema}.{k.name}" for k in plan.dated]},
        ))
    if plan.objects:
        left_out = (f", without {len(plan.left_out)} parts that later rows add"
                    if plan.left_out else "")
        findings.append(Finding(
            "pre-history", CODES["pre-history"],
            f"{plan.describe()} exist in the live database and no history row creates them "
            "(v1 records every CREATE TABLE, VIEW and FUNCTION): the export starts with them, "
            f"as 'Baseline from the live database'{left_out}",
            [], {"objects": [f"{k.kind} {k.schema}.{k.name}" for k in plan.objects],
                 "left_out": [item.describe() for item in plan.left_out]},
        ))
    live = LiveCatalog(conn, DEFAULT_EXCLUDED_SCHEMAS)
    for trigger in live.triggers():
        if not recorded.creates_trigger(trigger.name, trigger.table):
            findings.append(Finding(
                "unrecorded-trigger", CODES["unrecorded-trigger"],
                f"trigger {trigger.name} on {trigger.schema}.{trigger.table}: no history text "
                "creates it (v1 never records CREATE TRIGGER); the export creates it as soon "
                f"as the table and {trigger.function_schema}.{trigger.function} exist",
                [], {"trigger": trigger.name, "table": f"{trigger.schema}.{trigger.table}"},
            ))
    for (schema, name), labels in sorted(plan_labels(live, later, clock).items()):
        dated = ", ".join(f"{label} ({why})" for label, (_, why) in sorted(labels.items()))
        findings.append(Finding(
            "unrecorded-label", CODES["unrecorded-label"],
            f"enum {schema}.{name}: labels {dated} are in no recorded text (ALTER TYPE ... ADD "
            "VALUE alone writes no row); the export adds each before the history id dating it",
            sorted({due for due, _ in labels.values()}),
            {"type": f"{schema}.{name}", "labels": {label: due for label, (due, _) in labels.items()}},
        ))
    for item in plan_dated_objects(unrecorded, recorded, clock):
        findings.append(Finding(
            "unrecorded-object", CODES["unrecorded-object"],
            f"{item.key.kind} {item.key.schema}.{item.key.name}: no history text creates it; "
            f"{item.evidence()}: the export creates it before history id {item.before_id}",
            [item.before_id], {"object": f"{item.key.kind} {item.key.schema}.{item.key.name}",
                               "before": item.before_id, "after": item.after_id},
        ))
    for comment in comments:
        then = (f"the export sets it before history id {comment.due_id}"
                if comment.due_id is not None
                else "only a reconcile commit (--reconcile) shows it")
        findings.append(Finding(
            "unrecorded-comment", CODES["unrecorded-comment"],
            f"{comment.describe()}: no history text sets it; {comment.evidence()}: {then}",
            [comment.due_id] if comment.due_id is not None else [],
            {"comment": comment.describe(), "before": comment.due_id,
             "after": comment.after_id},
        ))
    baseline = {(key.kind.upper(), key.schema, key.name) for key in plan.objects}
    return findings, baseline


# ---------------------------------------------------------------------- queries

# Objects v1 still lists as existing but for which history has no CREATE row:
# they predate pgGit (or came from a command v1 does not track).
ACTIVE_UNCREATED_QUERY = """
SELECT o.object_type::text AS object_type, o.schema_name, o.object_name
FROM pggit.objects AS o
WHERE o.is_active
  AND o.object_type::text <> ALL (%(skipped_types)s::text[])
  AND o.schema_name <> ALL (%(skipped_schemas)s::text[])
  AND NOT EXISTS (
      SELECT FROM pggit.history AS h
      WHERE h.object_id = o.id AND h.change_type = 'CREATE')
ORDER BY o.object_type, o.schema_name, o.object_name
"""

AVAILABLE_EXTENSIONS_QUERY = """
SELECT name FROM pg_catalog.pg_available_extensions WHERE name = ANY (%(names)s::text[])
"""

AVAILABLE_EXTENSION_VERSIONS_QUERY = """
SELECT name, version FROM pg_catalog.pg_available_extension_versions
WHERE name = ANY (%(names)s::text[])
"""

EXISTING_ROLES_QUERY = """
SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%(names)s::text[])
"""

V1Object = tuple[str, str, str]  # (object_type, schema_name, object_name)


def _active_uncreated_objects(conn: psycopg.Connection[Any]) -> list[V1Object]:
    with conn.cursor() as cur:
        cur.execute(
            ACTIVE_UNCREATED_QUERY,
            {"skipped_types": sorted(SKIPPED_OBJECT_TYPES),
             "skipped_schemas": sorted(PGGIT_SCHEMAS)},
        )
        return [(r["object_type"], r["schema_name"], r["object_name"]) for r in cur]


# ------------------------------------------------------------- SQL text parsing
# Only statement heads are parsed (after split_statements), so names inside
# function bodies or string literals are not mistaken for commands.

_IDENT = IDENTIFIER_PATTERN
_QUALIFIED = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
_ROLE = rf"(?:{_IDENT}|'(?:[^']|'')*')"

_CREATE_HEAD = re.compile(
    rf"""^CREATE\s+
    (?:OR\s+REPLACE\s+)?
    (?:(?:GLOBAL|LOCAL|TEMP|TEMPORARY|UNLOGGED|UNIQUE|RECURSIVE|TRUSTED|PROCEDURAL
         |DEFAULT|CONSTRAINT)\s+)*
    (?P<kind>FOREIGN\s+DATA\s+WRAPPER|FOREIGN\s+TABLE|TEXT\s+SEARCH\s+[A-Z]+
      |OPERATOR\s+(?:CLASS|FAMILY)\b|EVENT\s+TRIGGER|USER\s+MAPPING|ACCESS\s+METHOD
      |MATERIALIZED\s+VIEW|[A-Z]+)\b
    \s*(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?
    (?P<name>{_QUALIFIED})?
    (?P<rest>\s*\S?)""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_IMPORT_FOREIGN = re.compile(r"^IMPORT\s+FOREIGN\s+SCHEMA\b", re.IGNORECASE)
_EXTENSION = re.compile(
    rf"^CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENT})"
    rf"(?:.*?\bVERSION\s+(?P<version>{_IDENT}|'(?:[^']|'')*'))?",
    re.IGNORECASE | re.DOTALL,
)
_SET_ROLE = re.compile(
    rf"^SET\s+(?:SESSION\s+|LOCAL\s+)?(?:ROLE|SESSION\s+AUTHORIZATION)\s+(?P<role>{_ROLE})",
    re.IGNORECASE,
)
_SCHEMA_AUTHORIZATION = re.compile(
    rf"^CREATE\s+SCHEMA\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:(?!AUTHORIZATION\b){_IDENT}\s+)?"
    rf"AUTHORIZATION\s+(?P<role>{_IDENT})",
    re.IGNORECASE,
)
_POLICY = re.compile(r"^(?:CREATE|ALTER)\s+POLICY\b", re.IGNORECASE)
_POLICY_ROLES = re.compile(
    rf"(?<!RENAME)\s+TO\s+(?P<roles>{_IDENT}(?:\s*,\s*{_IDENT})*)", re.IGNORECASE
)
_POLICY_END = re.compile(r"\bUSING\b|\bWITH\s+CHECK\b", re.IGNORECASE)
_RENAME_TO = re.compile(rf"\bRENAME\s+TO\s+(?P<name>{_IDENT})", re.IGNORECASE)
_HIDING_WORDS = frozenset({"SELECT", "CALL", "DO", "WITH"})
_SESSION_WORDS = frozenset({"SET", "RESET"})


def _head(text: str) -> str:
    return without_leading_comments(text)


def _unquote(ident: str) -> str:
    """The name an identifier denotes (see ``catalog_name``); a version written as a string
    literal (``VERSION '1.2'``) is taken as written."""
    ident = ident.strip()
    if ident.startswith("'"):
        return ident[1:-1].replace("''", "'")
    return catalog_name(ident)


def _last_part(qualified: str) -> str:
    parts = re.findall(_IDENT, qualified)
    return _unquote(parts[-1]) if parts else ""


def _created(statement: str) -> tuple[str, str] | None:
    """(KIND, unqualified name) that a CREATE statement makes, or None."""
    head = _head(statement)
    if _IMPORT_FOREIGN.match(head):
        return ("FOREIGN TABLE", "")
    match = _CREATE_HEAD.match(head)
    if match is None:
        return None
    kind = " ".join(match["kind"].upper().split())
    name = match["name"] or ""
    if kind == "USER MAPPING" or (kind == "INDEX" and name.upper() == "ON"):
        name = ""  # no name of its own: FOR role SERVER s, or an index named by PostgreSQL
    # CREATE TYPE name (...) or CREATE TYPE name; is a base or shell type; the
    # composite/enum/range/domain forms say AS.
    if kind == "TYPE" and name and match["rest"].strip() in ("(", ";", ""):
        kind = BASE_TYPE_KIND
    return (kind, _last_part(name) if name else "")


def _roles_used(statement: str) -> list[str]:
    """Role names a statement needs to exist on the server that runs it."""
    head = _head(statement)
    names: list[str] = []
    for pattern in (_SET_ROLE, _SCHEMA_AUTHORIZATION):
        match = pattern.match(head)
        if match:
            names.append(match["role"])
    if _POLICY.match(head):
        # TO comes after ON table and before USING / WITH CHECK.
        clause = _POLICY_END.split(head, maxsplit=1)[0]
        for match in _POLICY_ROLES.finditer(clause):
            names += re.findall(_IDENT, match["roles"])
    # A quoted "public" is a real role name; only the bare keywords are not.
    return [_unquote(n) for n in names
            if n.startswith(('"', "'")) or n.upper() not in ROLE_KEYWORDS]


def _names_object(text: str, name: str) -> bool:
    """Does the text mention this name as an identifier (quoted or not)?"""
    if not name:
        return False
    pattern = rf'(?<![\w$"]){re.escape(name)}(?![\w$"])|"{re.escape(name)}"'
    return re.search(pattern, text, re.IGNORECASE) is not None


def _first_word(statement: str) -> str:
    match = re.match(r"[A-Za-z_]+", _head(statement))
    return match.group(0).upper() if match else ""


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= STATEMENT_PREVIEW else text[: STATEMENT_PREVIEW - 1] + "…"


def _version_text(version: int) -> str:
    if version >= 100000:
        return f"{version // 10000}.{version % 10000}"
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}"


def _label(key: V1Object) -> str:
    object_type, schema, name = key
    kind = object_type.lower().replace("_", " ")
    if object_type in ("FUNCTION", "PROCEDURE") and name.isdigit():
        # v1 stores functions under their OID: do not pretend to know the name.
        return f"{kind} with OID {name} in schema {schema} (v1 records functions by OID)"
    return f"{kind} {schema}.{name}" if schema else f"{kind} {name}"


# --------------------------------------------------------------------- checker


@dataclass
class _ObjectState:
    """What the history said so far about one pggit.objects identity."""

    exists: bool = False  # as far as the replay will know
    ever_created: bool = False
    before_create: list[int] = field(default_factory=list)  # ALTER/DROP ids before any CREATE
    change_types: set[str] = field(default_factory=set)
    named_in_sql: bool = False
    create_ids: list[int] = field(default_factory=list)
    drop_ids: list[int] = field(default_factory=list)
    recreations: int = 0


@dataclass
class _Uses:
    """Where a name (extension, role, statement, kind) is used in the history."""

    ids: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    extra: set[str] = field(default_factory=set)

    def add(self, ids: Iterable[int], example: str = "", extra: str = "") -> None:
        self.ids.extend(ids)
        if example and len(self.examples) < EXAMPLE_LIMIT and example not in self.examples:
            self.examples.append(example)
        if extra:
            self.extra.add(extra)


class _TimeOrder:
    """Finds rows whose created_at is earlier than that of a lower id, streaming.

    Rows arrive in (time, id) order. A row is out of order exactly when a row
    with a lower id arrives after it. Ids seen and not yet flagged form an
    increasing stack, kept as runs of consecutive ids, so memory grows with the
    number of gaps in the ids, not with the number of rows.
    """

    def __init__(self) -> None:
        self.pending: list[list[int]] = []  # [first, last] runs, increasing
        self.flagged: list[tuple[int, int]] = []
        self.examples: list[dict[str, Any]] = []

    def see(self, row: HistoryRow) -> None:
        if row.created_at is None:
            return  # reported as null-created-at; its time is inferred, never backwards
        x = row.id
        while self.pending and self.pending[-1][0] > x:
            first, last = self.pending.pop()
            self.flagged.append((first, last))
            if len(self.examples) < EXAMPLE_LIMIT:
                self.examples.append({
                    "ids": format_id_ranges(list(range(first, last + 1))) if last - first < 50
                    else f"{first}-{last}",
                    "earlier_than_id": x,
                    "that_created_at": row.created_at.isoformat(sep=" "),
                })
        if self.pending and self.pending[-1][1] == x - 1:
            self.pending[-1][1] = x
        else:
            self.pending.append([x, x])

    def ids(self) -> list[int]:
        return sorted(i for first, last in self.flagged for i in range(first, last + 1))


class _Checker:
    """Accumulates findings over the stream of changesets."""

    def __init__(self, *, max_sql_bytes: int) -> None:
        self.max_sql_bytes = max_sql_bytes
        self.changesets = 0
        self.users: dict[str, list[int]] = {}  # created_by -> history ids
        self.null_time: list[int] = []
        self.no_author: list[int] = []
        self.no_sql: list[int] = []
        self.orphans: list[int] = []
        self.objects: dict[V1Object, _ObjectState] = {}
        self.time_order = _TimeOrder()
        self.refused: dict[str, _Uses] = {}
        self.extensions: dict[str, _Uses] = {}  # name -> uses; extra: versions asked for
        self.roles: dict[str, _Uses] = {}
        self.unsupported: dict[str, _Uses] = {}  # kind -> uses; extra: names
        self.other: list[Finding] = []  # findings complete when found

    # -- per changeset

    def changeset(self, changeset: Changeset) -> None:
        self.changesets += 1
        if changeset.created_by:
            self.users.setdefault(changeset.created_by, []).extend(changeset.history_ids)
        text = changeset.sql
        statements = self._statements(changeset)
        created_here = {name for kind, name in filter(None, map(_created, (
            s.text for s in statements if s.action is Action.REPLAY))) if name}
        renamed_to = {_unquote(m["name"]) for m in _RENAME_TO.finditer(text or "")}
        made_here = {n.lower() for n in created_here | renamed_to}
        for row in changeset.rows:
            self._row(row, text or "", made_here)
        self._statement_checks(changeset, statements)

    def _statements(self, changeset: Changeset) -> list[Statement]:
        text = changeset.sql
        if text is None or not text.strip():
            return []
        size = len(text.encode("utf-8", "surrogatepass"))
        ids = changeset.history_ids
        if size > self.max_sql_bytes:
            self.other.append(Finding(
                "too-large-sql", CODES["too-large-sql"],
                f"a SQL text of {size} bytes is over the export's limit of "
                f"{self.max_sql_bytes} bytes: replay refuses it whole, unparsed",
                ids, {"bytes": size, "limit": self.max_sql_bytes},
            ))
            return []  # what replay does: not even parsed
        if size > LARGE_SQL_BYTES:
            self.other.append(Finding(
                "large-sql", CODES["large-sql"],
                f"a SQL text of {size} bytes: splitting and replaying it is slow",
                ids, {"bytes": size},
            ))
        return split_statements(text)

    def _row(self, row: HistoryRow, text: str, made_here: set[str]) -> None:
        """Row-level checks, and the object's state; made_here: lower-cased names the
        changeset's text creates or renames to."""
        if row.created_at is None:
            self.null_time.append(row.id)
        if row.created_by is None or not row.created_by.strip():
            self.no_author.append(row.id)
        if row.sql_executed is None or not row.sql_executed.strip():
            self.no_sql.append(row.id)
        if row.object_type is None:
            self.orphans.append(row.id)
        self.time_order.see(row)
        if (
            row.object_type is None
            or row.object_type in SKIPPED_OBJECT_TYPES
            or (row.schema_name or "") in PGGIT_SCHEMAS
        ):
            return
        key = (row.object_type, row.schema_name or "", row.object_name or "")
        state = self.objects.setdefault(key, _ObjectState())
        state.change_types.add(row.change_type)
        if row.change_type == "CREATE":
            if state.ever_created and not state.exists:
                state.recreations += 1
            state.exists = state.ever_created = True
            state.create_ids.append(row.id)
            return
        if row.change_type not in ("ALTER", "DROP", "RENAME"):
            return
        if not state.ever_created and not state.exists:
            name = key[2]
            if name.lower() in made_here:
                # Made in the same text by a command v1 does not record (CREATE
                # TABLE AS, CREATE MATERIALIZED VIEW) or renamed to this name (v1
                # records a rename as an ALTER of the new name): replay has it.
                state.exists = True
            else:
                state.before_create.append(row.id)
                state.named_in_sql = state.named_in_sql or _names_object(text, name)
        if row.change_type == "DROP":
            if state.exists:
                state.drop_ids.append(row.id)
            state.exists = False

    def _statement_checks(self, changeset: Changeset, statements: list[Statement]) -> None:
        ids = changeset.history_ids
        # pgGit's own install script (the first history row) creates event triggers
        # and more in pggit's schemas, which snapshots leave out on purpose.
        own = all((r.schema_name or "") in PGGIT_SCHEMAS for r in changeset.rows)
        replayed: list[Statement] = []
        for statement in statements:
            if statement.action is Action.REFUSE:
                self.refused.setdefault(_preview(statement.text), _Uses()).add(ids)
                continue
            if statement.action is Action.REPLAY:
                replayed.append(statement)
            head = _head(statement.text)
            match = _EXTENSION.match(head)
            if match:
                version = _unquote(match["version"]) if match["version"] else ""
                self.extensions.setdefault(_unquote(match["name"]), _Uses()).add(
                    ids, _preview(statement.text), version
                )
            if statement.action is Action.REPLAY:
                # Privilege statements are skipped by replay, so their roles do not matter.
                for role in _roles_used(statement.text):
                    self.roles.setdefault(role, _Uses()).add(ids, _preview(statement.text))
            created = _created(statement.text) if not own else None
            if created and created[0] in UNSUPPORTED_KINDS | {BASE_TYPE_KIND}:
                kind, name = created
                if not (kind == "LANGUAGE" and name == "plpgsql"):  # always there, never rendered
                    self.unsupported.setdefault(kind, _Uses()).add(
                        ids, _preview(statement.text), name
                    )
        if not own:
            self._hidden_ddl(changeset, replayed)

    def _hidden_ddl(self, changeset: Changeset, replayed: list[Statement]) -> None:
        # v1 records the outer text of DDL run inside a function or DO block, so
        # rows that say "CREATE"/"ALTER" may come from `SELECT migrate()`. Replay
        # runs it too, but only if the function exists in the shadow by then.
        words = [_first_word(s.text) for s in replayed]
        if not words or not any(w in _HIDING_WORDS for w in words):
            return
        if not all(w in _HIDING_WORDS | _SESSION_WORDS for w in words):
            return
        changed = sorted({
            r.object_label for r in changeset.rows if r.change_type in ("CREATE", "ALTER")
        })
        if not changed:
            return
        self.other.append(Finding(
            "hidden-ddl", CODES["hidden-ddl"],
            f"{len(changed)} object(s) changed by a text that only runs "
            f"{'/'.join(sorted(set(words) & _HIDING_WORDS))}: the DDL is inside a function "
            "or DO block, which must exist and behave the same in the shadow",
            changeset.history_ids,
            {"objects": changed[:EXAMPLE_LIMIT * 4],
             "statements": [_preview(s.text) for s in replayed[:EXAMPLE_LIMIT]]},
        ))

    # -- results

    def findings(self, active_uncreated: list[V1Object],
                 baseline: Collection[V1Object] = ()) -> list[Finding]:
        findings: list[Finding] = list(self.other)
        for code, ids, message in (
            ("null-created-at", self.null_time,
             "rows with no created_at: the commit time is inferred from the row before"),
            ("missing-created-by", self.no_author,
             "rows with no created_by: the commit author falls back to the default author"),
            ("missing-sql", self.no_sql,
             "rows with no sql_executed: there is nothing to replay, the change is lost"),
            ("missing-object-row", self.orphans,
             "rows whose pggit.objects row is gone: the object they changed is unknown"),
        ):
            if ids:
                findings.append(Finding(code, CODES[code], message, ids, {"rows": len(ids)}))
        if self.time_order.flagged:
            ids = self.time_order.ids()
            findings.append(Finding(
                "time-order", CODES["time-order"],
                f"{len(ids)} row(s) have a created_at earlier than a row with a lower id: "
                "commits follow (created_at, id), so their order differs from id order",
                ids, {"rows": len(ids), "examples": self.time_order.examples},
            ))
        findings += self._object_findings(active_uncreated, baseline)
        for text, uses in self.refused.items():
            findings.append(Finding(
                "refused-statement", CODES["refused-statement"],
                f"replay refuses this statement (it could reach the server's host or "
                f"cluster) and notes it in the commit: {text}",
                sorted(set(uses.ids)), {"statement": text},
            ))
        for kind, uses in sorted(self.unsupported.items()):
            names = sorted(uses.extra)
            findings.append(Finding(
                "unsupported-kind", CODES["unsupported-kind"],
                f"history creates {kind} objects"
                + (f" ({', '.join(names[:EXAMPLE_LIMIT])})" if names else "")
                + ": replay runs them but snapshots do not show them",
                sorted(set(uses.ids)),
                {"kind": kind, "names": names, "statements": uses.examples},
            ))
        return findings

    def _object_findings(self, active_uncreated: list[V1Object],
                         baseline: Collection[V1Object]) -> list[Finding]:
        findings = []
        for key, state in self.objects.items():
            object_type, schema, name = key
            detail = {"object_type": object_type, "schema": schema, "name": name}
            if state.before_create and not (key in baseline and not state.ever_created):
                is_function = object_type in ("FUNCTION", "PROCEDURE") and name.isdigit()
                when = "before its first CREATE" if state.ever_created else "but never created"
                if not (state.named_in_sql or is_function):
                    code = "missing-create-implicit"
                    why = ("the SQL does not name it, so it was touched as a side effect "
                           "(dropped with its table, for example) of an object made by an "
                           "untracked command or before pgGit")
                elif object_type in ("INDEX", "CONSTRAINT"):
                    code = "missing-create-index"
                    why = ("v1 does not record indexes made by ALTER TABLE ... ADD PRIMARY "
                           "KEY/UNIQUE, so it may be fine, but if it predates pgGit replay fails")
                else:
                    code = "missing-create"
                    why = ("it predates pgGit or came from an untracked command, so replaying "
                           "this SQL fails")
                findings.append(Finding(
                    code, CODES[code],
                    f"{_label(key)} is altered or dropped {when}; {why}",
                    state.before_create,
                    {**detail, "change_types": sorted(state.change_types)},
                ))
            if state.recreations:
                findings.append(Finding(
                    "recreated", CODES["recreated"],
                    f"{_label(key)} was dropped and created again "
                    f"{'once' if state.recreations == 1 else f'{state.recreations} times'}: "
                    "its file disappears from the tree and comes back, one git history",
                    sorted(state.create_ids + state.drop_ids),
                    {**detail, "recreations": state.recreations},
                ))
        for key in active_uncreated:
            if key in self.objects or key in baseline:
                continue  # history touches it (reported above, or explained by a rename),
                # or the export's baseline holds it (the pre-history finding)
            object_type, schema, name = key
            findings.append(Finding(
                "untracked-object", CODES["untracked-object"],
                f"{_label(key)} is active in pggit.objects but history never creates it: "
                "it predates pgGit, and the export will not contain it",
                [], {"object_type": object_type, "schema": schema, "name": name},
            ))
        return findings


# ---------------------------------------------------------------------- shadow


def _shadow_findings(
    checker: _Checker, shadow_dsn: str | None, major: int, live: psycopg.Connection[Any]
) -> list[Finding]:
    """Look the extensions and roles the history uses up in the shadow's catalog (the
    shadow the export would use: of the source's `major` version where there is one).
    An extension the shadow lacks that the export can stand in for (`live`: the source's
    catalog) is information, not an error."""
    if not checker.extensions and not checker.roles:
        return []  # nothing to look up: do not start a server
    try:
        # check replays nothing there, it only looks names up: any role will do.
        with open_shadow(shadow_dsn, major=major, replay_as_owner=True) as shadow:
            conn = shadow.conn
            description = shadow.description
            names = sorted(checker.extensions)
            available = {r[0] for r in conn.execute(AVAILABLE_EXTENSIONS_QUERY,
                                                    {"names": names})}
            versions: dict[str, set[str]] = {}
            for name, version in conn.execute(AVAILABLE_EXTENSION_VERSIONS_QUERY,
                                              {"names": names}):
                versions.setdefault(name, set()).add(version)
            roles = {r[0] for r in conn.execute(EXISTING_ROLES_QUERY,
                                                {"names": sorted(checker.roles)})}
            can_stand_in = shadow.extension_directory is not None
    except (ShadowError, ServerError, psycopg.Error) as exc:
        ids = sorted({i for uses in (*checker.extensions.values(), *checker.roles.values())
                      for i in uses.ids})
        return [Finding(
            "shadow-unavailable", CODES["shadow-unavailable"],
            f"could not open the shadow to check extensions and roles: {exc}",
            ids, {"extensions": sorted(checker.extensions), "roles": sorted(checker.roles)},
        )]
    findings = []
    for name, uses in sorted(checker.extensions.items()):
        missing_versions = sorted(v for v in uses.extra if v not in versions.get(name, set()))
        if name in available and not missing_versions:
            continue
        stand_in = build_stand_in(live, name) if can_stand_in and name not in available else None
        if stand_in is not None and uses.extra <= {stand_in.version}:
            findings.append(Finding(
                "extension-stand-in", CODES["extension-stand-in"],
                f"extension {name} is not available on the shadow server: the export "
                f"{stand_in.describe().removeprefix('built ')}",
                sorted(set(uses.ids)),
                {"extension": name, "version": stand_in.version, "shadow": description,
                 "functions": stand_in.functions, "missing": list(stand_in.missing)},
            ))
            continue
        what = (f"extension {name} is not available" if name not in available
                else f"extension {name} version {', '.join(missing_versions)} is not available")
        findings.append(Finding(
            "missing-extension", CODES["missing-extension"],
            f"{what} on the shadow server: CREATE EXTENSION fails there, "
            "and its changeset with it",
            sorted(set(uses.ids)),
            {"extension": name, "versions": missing_versions, "shadow": description,
             "statements": uses.examples},
        ))
    for name, uses in sorted(checker.roles.items()):
        if name in roles:
            continue
        findings.append(Finding(
            "missing-role", CODES["missing-role"],
            f"role {name} does not exist on the shadow server: statements that "
            "use it fail, and their changesets with them",
            sorted(set(uses.ids)),
            {"role": name, "shadow": description, "statements": uses.examples},
        ))
    return findings


__all__ = ["CODES", "CheckReport", "Finding", "check_history"]
