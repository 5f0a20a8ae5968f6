"""Commit messages: a subject that says what changed, the SQL that ran, trailers.

Format (docs/ARCHITECTURE.md, "Commit format")::

    Create 3 tables in billing            <- subject, <= 72 characters

    <the changeset's SQL text, as recorded>

    <notes: replay failure, refused statements, inferred time ...>

    Pggit-History-Ids: 12-14, 17          <- trailers, always last
    Pggit-Replay: failed
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

from pggit_export.read.history import Changeset
from pggit_export.read.sqlsplit import without_leading_comments
from pggit_export.render.snapshot import ObjectKey
from pggit_export.render.state import SnapshotChanges
from pggit_export.shadow.replay import Action, ReplayResult

SUBJECT_LIMIT = 72
SQL_BODY_LIMIT = 64 * 1024

KIND_LABELS = {
    "schema": "schema",
    "extension": "extension",
    "table": "table",
    "view": "view",
    "matview": "materialized view",
    "sequence": "sequence",
    "function": "function",
    "type": "type",
}


# Names and numbers PostgreSQL makes from an object's OID. The shadow's OIDs depend on
# everything that ran in it before (a resumed export rebuilds the shadow and gets others),
# so a commit must not carry them: the same history would give other commit ids.
_SHADOW_OIDS = re.compile(
    r"\b(RI_ConstraintTrigger_[ac]_|pg_toast_|pg_temp_|pg_toast_temp_)\d+\b"
    r"|\b(with OID |relfilenode )\d+\b"  # "relation with OID 16384 does not exist"
)


def without_shadow_oids(text: str) -> str:
    """`text` with the shadow's OIDs replaced by `<oid>` (see _SHADOW_OIDS)."""
    return _SHADOW_OIDS.sub(lambda m: (m.group(1) or m.group(2)) + "<oid>", text)


def format_id_ranges(ids: list[int]) -> str:
    """`1, 2, 3, 7` -> `1-3, 7`: batches such as CREATE EXTENSION cover many ids."""
    parts: list[str] = []
    ordered = sorted(set(ids))
    start = prev = ordered[0]
    for value in ordered[1:] + [None]:  # type: ignore[list-item]
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ", ".join(parts)


def parse_id_ranges(text: str) -> list[int]:
    """Inverse of format_id_ranges."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            ids.extend(range(int(low), int(high) + 1))
        else:
            ids.append(int(part))
    return ids


def _label(key: ObjectKey) -> str:
    return key.schema if key.kind == "schema" else f"{key.schema}.{key.name}"


def _count(keys: list[ObjectKey]) -> str:
    """`table public.users`, or `3 tables and 1 view`."""
    if len(keys) == 1:
        return f"{KIND_LABELS[keys[0].kind]} {_label(keys[0])}"
    counts = Counter(KIND_LABELS[k.kind] for k in keys)
    return series([f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(counts.items())])


def series(things: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: for messages and reports."""
    return " and ".join(things) if len(things) <= 2 else ", ".join(things[:-1]) + " and " + things[-1]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# The intent of a statement, for the subject of a commit whose snapshot says nothing (a
# failed replay, a data migration): verb, kind and name as written.
_INTENT = re.compile(
    r"(?P<verb>CREATE|ALTER|DROP)\s+(?:OR\s+REPLACE\s+)?(?:UNIQUE\s+)?"
    r"(?:UNLOGGED\s+|TEMPORARY\s+|TEMP\s+)?"
    r"(?P<kind>MATERIALIZED\s+VIEW|TABLE|VIEW|INDEX|FUNCTION|PROCEDURE|TYPE|SEQUENCE|SCHEMA"
    r"|EXTENSION|TRIGGER|DOMAIN|POLICY)\s+(?:CONCURRENTLY\s+)?(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    r"(?:ONLY\s+)?(?P<name>[^\s(;,]+)",
    re.I,
)


def _intent(result: ReplayResult) -> str:
    """`Alter table public.users`, `Run UPDATE users SET ...`: what the failing statement,
    or else the first one that replays, sets out to do."""
    # Else a data change (UPDATE ...), else whatever is first: not the BEGIN or SET a
    # migration starts with.
    texts = ([result.failure.statement] if result.failure is not None else [])
    texts += [s.text for s in result.statements if s.action is Action.REPLAY]
    texts += [s.text for s in result.statements if s.action is Action.SKIP_DATA]
    texts += [s.text for s in result.statements]
    if not texts:
        return "Record a change with no SQL"
    text = " ".join(without_leading_comments(texts[0]).split())
    if m := _INTENT.match(text):
        kind = " ".join(m.group("kind").lower().split())
        return f"{m.group('verb').capitalize()} {kind} {m.group('name')}"
    return f"Run {text}"


def _with_suffix(text: str, suffix: str) -> str:
    """`text` cut to leave room for `suffix` within the subject's limit."""
    return _truncate(text, SUBJECT_LIMIT - len(suffix)) + suffix


# What a table file holds, by line: column definitions (indented, in CREATE TABLE)
# and the named things after it.
_NAMED_PARTS = [
    ("index", re.compile(r"^CREATE (?:UNIQUE )?INDEX (\S+) ON ", re.M)),
    ("trigger", re.compile(r"^CREATE (?:CONSTRAINT )?TRIGGER (\S+) ", re.M)),
    ("constraint", re.compile(r"^\s+(?:ADD )?CONSTRAINT (\S+) ", re.M)),
    ("policy", re.compile(r"^CREATE POLICY (\S+) ON ", re.M)),
]


_CREATE_TABLE = re.compile(r"^CREATE (?:UNLOGGED )?TABLE [^\n]*\($", re.M)


def _columns(text: str) -> dict[str, str]:
    # The file may begin with the sequences the table owns; find CREATE TABLE itself.
    match = _CREATE_TABLE.search(text)
    body = text[match.end():] if match else ""
    columns = {}
    # Column lines are indented; the list ends at the first line that is not, whatever
    # follows the parenthesis (`);`, `) WITH (fillfactor=70);`, `) PARTITION BY ...`).
    for line in itertools.takewhile(lambda line: line[:1].isspace(), body.split("\n")[1:]):
        line = line.strip().rstrip(",")
        if line and not line.startswith("CONSTRAINT "):
            name = line.split(" ", 1)[0]
            columns[name.strip('"')] = line
    return columns


def table_changes(before: str, after: str) -> list[tuple[str, str, str]]:
    """(verb, part kind, name) for two versions of a table file: ("add", "column", "email")."""
    changes: list[tuple[str, str, str]] = []
    old_cols, new_cols = _columns(before), _columns(after)
    changes += [("add", "column", c) for c in new_cols if c not in old_cols]
    changes += [("drop", "column", c) for c in old_cols if c not in new_cols]
    changes += [("alter", "column", c) for c in new_cols
                if c in old_cols and new_cols[c] != old_cols[c]]
    for what, pattern in _NAMED_PARTS:
        old_names, new_names = set(pattern.findall(before)), set(pattern.findall(after))
        changes += [("add", what, n) for n in sorted(new_names - old_names)]
        changes += [("drop", what, n) for n in sorted(old_names - new_names)]
    return changes


_PREPOSITIONS = {"add": "to", "drop": "from", "alter": "of"}


def _more(count: int, noun: str) -> str:
    return f" and {count} more {noun}{'s' if count > 1 else ''}" if count else ""


def _renamed(result: ReplayResult, changes: SnapshotChanges) -> str | None:
    """`Rename table public.a to b` when the changeset dropped one object and made one of the
    same kind, and a statement renames or moves it into the new name (RENAME TO, SET SCHEMA);
    the other changes are counted (`... and 2 more changes`), a schema made to move it into
    is named (`to new schema app`)."""
    texts = " ".join(s.text for s in result.statements)
    for old in changes.dropped:
        for new in changes.created:
            if new.kind != old.kind or new.kind == "schema":
                continue
            kind = KIND_LABELS[new.kind]
            new_schema = ObjectKey("schema", new.schema, new.schema) in changes.created
            if new.schema == old.schema and re.search(
                    r"\bRENAME\s+TO\s+\"?" + re.escape(new.name) + r"\b", texts, re.I):
                what, others = f"Rename {kind} {_label(old)} to {new.name}", {old, new}
            elif new.name == old.name and re.search(
                    r"\bSET\s+SCHEMA\s+\"?" + re.escape(new.schema) + r"\b", texts, re.I):
                where = f"{'new ' if new_schema else ''}schema {new.schema}"
                what, others = f"Move {kind} {_label(old)} to {where}", {old, new}
                if new_schema:
                    others.add(ObjectKey("schema", new.schema, new.schema))
            else:
                continue
            rest = len(changes.created) + len(changes.altered) + len(changes.dropped) - len(others)
            return what + _more(rest, "change")
    return None


def subject_for(changeset: Changeset, result: ReplayResult, changes: SnapshotChanges) -> str:
    """One line, <= 72 characters, imperative as git users write them, saying what the
    changeset did to the schema: its main change, and how many more there are."""
    if not result.ok:
        return _with_suffix(_intent(result), " (replay failed)")
    if changes.empty:
        return _with_suffix(_intent(result), " (no schema change)")
    if not changes.created and not changes.dropped and len(changes.altered) == 1:
        key = changes.altered[0]
        if key.kind == "table":
            parts = table_changes(changes.before.get(key, ""), changes.after.get(key, ""))
            if parts:
                verb, what, name = parts[0]
                return _truncate(f"{verb.capitalize()} {what} {name} {_PREPOSITIONS[verb]} "
                                 f"{_label(key)}{_more(len(parts) - 1, 'change')}",
                                 SUBJECT_LIMIT)
    if renamed := _renamed(result, changes):
        return _truncate(renamed, SUBJECT_LIMIT)
    new_schemas = [k for k in changes.created if k.kind == "schema"]
    all_keys = changes.created + changes.altered + changes.dropped
    if (len(new_schemas) == 1 and len(changes.created) > 1 and not changes.altered
            and not changes.dropped and {k.schema for k in all_keys} == {new_schemas[0].schema}):
        inside = [k for k in changes.created if k.kind != "schema"]
        return _truncate(f"Create schema {new_schemas[0].schema} with {_count(inside)}",
                         SUBJECT_LIMIT)
    # The main change: what was created before what was altered before what was dropped;
    # tables, then views, then the rest.
    rank = {"table": 0, "view": 1, "matview": 2}
    changed = [("Create", k) for k in changes.created] + [("Alter", k) for k in changes.altered] \
        + [("Drop", k) for k in changes.dropped]
    verb, main = min(changed, key=lambda vk: (["Create", "Alter", "Drop"].index(vk[0]),
                                              rank.get(vk[1].kind, 3), vk[1]))
    rest = [(v, k) for v, k in changed if (v, k) != (verb, main)]
    alike = all(v == verb and k.kind == main.kind for v, k in rest)
    noun = KIND_LABELS[main.kind] if alike else "change"
    return _truncate(f"{verb} {KIND_LABELS[main.kind]} {_label(main)}{_more(len(rest), noun)}",
                     SUBJECT_LIMIT)


_SEVERITY_ORDER = {"MAJOR": 0, "MINOR": 1, "PATCH": 2}


def build_message(
    changeset: Changeset,
    result: ReplayResult,
    changes: SnapshotChanges,
    *,
    skipped_reason: str | None = None,
    author_missing: bool = False,
    repairs: list[str] | None = None,
    author_note: str | None = None,
) -> str:
    """The full commit message for one changeset."""
    subject = subject_for(changeset, result, changes)
    if skipped_reason:
        # Imperative like every subject; the trailer says "Pggit-Replay: skipped".
        subject = _truncate(f"Skip {skipped_reason}", SUBJECT_LIMIT)
    paragraphs = [subject]
    sql_text = (changeset.sql or "").strip("\n")
    if sql_text:
        if len(sql_text) > SQL_BODY_LIMIT:
            sql_text = (
                sql_text[:SQL_BODY_LIMIT]
                + f"\n[... {len(changeset.sql or '') - SQL_BODY_LIMIT} more characters"
                " not shown; the full text is in pggit.history]"
            )
        paragraphs.append(sql_text)
    else:
        paragraphs.append("(this history row recorded no SQL text)")

    notes: list[str] = []
    if skipped_reason:
        notes.append(f"This changeset was not replayed: {skipped_reason}.")
    if result.failure is not None:
        failure = result.failure
        failed_text = _truncate(" ".join(failure.statement.split()), 500)
        notes.append(
            f"Replay failed at {without_shadow_oids(failure.describe())}\n  {failed_text}\n"
            "The changeset was rolled back in the shadow: this commit's tree is its parent's."
        )
    for statement in result.refused:
        notes.append(
            f"Not run, {statement.action.value}:\n"
            f"  {_truncate(' '.join(statement.text.split()), 300)}"
        )
    if changeset.time_inferred:
        recorded = changeset.rows[0].unusable_time
        what = (f"the time {recorded}, which no git commit can carry" if recorded
                else "no time")
        notes.append(f"pggit.history recorded {what}: the date is taken from the row before it.")
    if author_missing:
        notes.append("pggit.history recorded no user: the author is the default author.")
    elif author_note:
        notes.append(author_note)
    orphans = [row for row in changeset.rows if row.object_type is None and row.object_id]
    if orphans:
        notes.append(
            f"History ids {format_id_ranges([r.id for r in orphans])} name objects that "
            "pggit.objects no longer has (object ids "
            f"{', '.join(str(r.object_id) for r in orphans[:20])})."
        )
    garbled = [row for row in changeset.rows if row.invalid_utf8]
    if garbled:
        columns = sorted({c for row in garbled for c in row.invalid_utf8})
        notes.append(
            f"History ids {format_id_ranges([r.id for r in garbled])} held bytes that are not "
            f"UTF-8 in {', '.join(columns)}; they are shown here as U+FFFD."
        )
    paragraphs.extend(notes)

    trailers = [f"Pggit-History-Ids: {format_id_ranges(changeset.history_ids)}"]
    # An older pgGit's history may record neither (read/history.py's optional columns).
    kinds = Counter(row.change_type for row in changeset.rows if row.change_type)
    if kinds:
        trailers.append("Pggit-Change-Types: "
                        + ", ".join(f"{k} ({n})" for k, n in kinds.items()))
    severities = sorted({row.change_severity for row in changeset.rows if row.change_severity},
                        key=lambda s: _SEVERITY_ORDER.get(s, 9))
    if severities:
        trailers.append(f"Pggit-Severity: {severities[0]}")
    trailers += [f"Pggit-Repaired: {without_shadow_oids(description)}"
                 for description in repairs or ()]
    if result.failure is not None:
        trailers.append("Pggit-Replay: failed")
    elif skipped_reason:
        trailers.append("Pggit-Replay: skipped")
    paragraphs.append("\n".join(trailers))
    return "\n\n".join(paragraphs) + "\n"


def read_trailer(message: str, name: str) -> str | None:
    """The value of the last `name: value` trailer in a commit message."""
    last_paragraph = message.rstrip("\n").rsplit("\n\n", 1)[-1]
    value = None
    for line in last_paragraph.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            value = rest.strip()
    return value
