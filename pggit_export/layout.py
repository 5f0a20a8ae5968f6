"""Where each object's file goes in the exported tree: `<schema>/<name>.sql`.

The rule, exactly (also in docs/ARCHITECTURE.md, "Repository layout"):

1. Every object lives in the directory of its schema; the schema's own
   definition is `<schema>/_schema.sql`; an extension is a file in the
   directory of the schema it is installed in.
2. Names are percent-encoded: `%`, `/`, `\\`, `.`, control characters and
   characters Windows forbids (`: * ? " < > |`) become `%XX` (UTF-8 bytes,
   uppercase hex). So no file name holds a literal dot before `.sql`, a leading
   dot (`.git`, `..`) is impossible, and nothing can escape the tree. Names that
   Windows reserves (CON, NUL, COM1, ...) get their first letter encoded.
3. When two names in one directory differ only in case (`Users`, `users`), the
   letters that are uppercase are encoded in every name of that group, so the
   files stay distinct on case-insensitive file systems.
4. When two objects of different kinds still share a name in one directory (a
   table and a function called `users`), each gets its kind before `.sql`:
   `users.table.sql`, `users.function.sql`.
5. A name whose encoded file name would pass 255 bytes keeps its first bytes and
   gets `~` and 16 hex digits of its SHA-256 (PostgreSQL's 63-byte limit makes
   this practically unreachable).

Decoding a file name (percent-decode the part before the first dot) gives the
object's name back; the kind is the middle part if present. The layout is a
function of the whole snapshot, so a collision appearing later renames files.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from urllib.parse import unquote

from .snapshot import ObjectKey

SCHEMA_FILE_STEM = "_schema"
MAX_FILE_NAME_BYTES = 255

_ALWAYS_ENCODED = set('%/\\.:*?"<>|')
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}


def _encode_char(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def encode_name(name: str, *, encode_uppercase: bool = False) -> str:
    """Percent-encode an object name into a safe file-name stem (rules 2 and 3)."""
    out = []
    for ch in name:
        if (
            ch in _ALWAYS_ENCODED
            or ord(ch) < 0x20
            or ord(ch) == 0x7F
            or (encode_uppercase and ch != ch.lower())
        ):
            out.append(_encode_char(ch))
        else:
            out.append(ch)
    stem = "".join(out)
    if stem.upper() in _WINDOWS_RESERVED:
        stem = _encode_char(stem[0]) + stem[1:]
    return stem


def decode_name(file_name: str) -> str:
    """The object or schema name a file or directory name stands for."""
    return unquote(file_name.split(".", 1)[0], encoding="utf-8", errors="strict")


def _fit(stem: str, suffix: str) -> str:
    name = stem + suffix
    if len(name.encode("utf-8")) <= MAX_FILE_NAME_BYTES:
        return name
    digest = hashlib.sha256(stem.encode("utf-8")).hexdigest()[:16]
    room = MAX_FILE_NAME_BYTES - len(suffix.encode("utf-8")) - 17
    cut = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f"{cut}~{digest}{suffix}"


def _stem_name(key: ObjectKey) -> str:
    return SCHEMA_FILE_STEM if key.kind == "schema" else key.name


def _place(entries: list[tuple[ObjectKey, str]]) -> dict[ObjectKey, str]:
    """Give each (key, raw name) in one directory a distinct file name (rules 3-5)."""
    by_fold: dict[str, list[tuple[ObjectKey, str]]] = defaultdict(list)
    for key, raw in entries:
        by_fold[encode_name(raw).casefold()].append((key, raw))
    stems: dict[ObjectKey, str] = {}
    for group in by_fold.values():
        case_clash = len({raw for _, raw in group}) > 1
        for key, raw in group:
            stems[key] = encode_name(raw, encode_uppercase=case_clash)
    by_stem: dict[str, list[ObjectKey]] = defaultdict(list)
    for key, stem in stems.items():
        by_stem[stem].append(key)
    names = {}
    for stem, keys in by_stem.items():
        for key in keys:
            suffix = f".{key.kind}.sql" if len(keys) > 1 else ".sql"
            names[key] = _fit(stem, suffix)
    return names


def assign_paths(keys: list[ObjectKey] | Mapping[ObjectKey, object]) -> dict[ObjectKey, str]:
    """Map every object of a snapshot to its path in the tree (`dir/file.sql`)."""
    schemas = sorted({key.schema for key in keys})
    dir_entries: dict[str, list[tuple[ObjectKey, str]]] = defaultdict(list)
    for key in keys:
        dir_entries[key.schema].append((key, _stem_name(key)))
    directories = {key.schema: key for key in (ObjectKey("schema", s, s) for s in schemas)}
    dir_names = _place([(directories[s], s) for s in schemas])
    paths: dict[ObjectKey, str] = {}
    for schema in schemas:
        directory = dir_names[directories[schema]].removesuffix(".sql")
        for key, file_name in _place(dir_entries[schema]).items():
            paths[key] = f"{directory}/{file_name}"
    return paths
