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
3. When two names in one directory differ only in case or Unicode normalization
   (`Users`, `users`; `café` composed or not), the uppercase letters and all
   non-ASCII characters are encoded in every name of that group, so the files
   stay distinct on case-insensitive, normalizing file systems. Invisible format
   characters (zero-width joiners, direction overrides) and `~` (`git~1`) are
   always encoded.
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
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from pggit_export.render.snapshot import ObjectKey

SCHEMA_FILE_STEM = "_schema"
MAX_FILE_NAME_BYTES = 255

# '~' too: git refuses NTFS short names such as "git~1" as path components.
_ALWAYS_ENCODED = set('%/\\.:*?"<>|~')
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
            or unicodedata.category(ch) in ("Cf", "Zl", "Zp")  # invisible: RTL overrides, ZWJ
            or (encode_uppercase and (ch != ch.lower() or not ch.isascii()))
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
        by_fold[_fold_name(raw)].append((key, raw))
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


def _fold_name(name: str) -> str:
    """What a case-insensitive, normalising file system (macOS, Windows) sees of a name."""
    return unicodedata.normalize("NFC", encode_name(name)).casefold()


def _fold(key: ObjectKey) -> str:
    return _fold_name(_stem_name(key))


class TreeLayout:
    """The path of every file of a snapshot, kept up to date as objects come and go.

    A file's name depends only on the names in its directory that fold to the
    same string (rules 3 and 4), and directory names only on the set of schemas,
    so a change recomputes just those few names: the cost does not grow with
    the size of the schema.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], set[ObjectKey]] = defaultdict(set)
        self._folds_by_schema: dict[str, set[str]] = defaultdict(set)
        self._dir_names: dict[str, str] = {}
        self.paths: dict[ObjectKey, str] = {}

    def update(
        self, created: Iterable[ObjectKey], dropped: Iterable[ObjectKey]
    ) -> dict[ObjectKey, tuple[str | None, str | None]]:
        """Add and remove keys; return `{key: (old path, new path)}` for every moved key.

        A created key has old path None, a dropped one new path None; a key
        renamed by a new name clash has both.
        """
        created, dropped = list(created), list(dropped)
        touched: set[tuple[str, str]] = set()
        for key in dropped:
            group = (key.schema, _fold(key))
            self._groups[group].discard(key)
            touched.add(group)
        for key in created:
            group = (key.schema, _fold(key))
            self._groups[group].add(key)
            self._folds_by_schema[key.schema].add(group[1])
            touched.add(group)
        for group in touched:
            if not self._groups[group]:
                del self._groups[group]
                self._folds_by_schema[group[0]].discard(group[1])
        schemas = {s for s, folds in self._folds_by_schema.items() if folds}
        if schemas != set(self._dir_names):
            directories = [ObjectKey("schema", s, s) for s in sorted(schemas)]
            placed = _place([(d, d.schema) for d in directories])
            dir_names = {d.schema: placed[d].removesuffix(".sql") for d in directories}
            for schema, name in dir_names.items():
                if self._dir_names.get(schema) != name:  # every file of it moves
                    touched |= {(schema, fold) for fold in self._folds_by_schema[schema]}
            self._dir_names = dir_names
        moves: dict[ObjectKey, tuple[str | None, str | None]] = {}
        for group in touched:
            keys = self._groups.get(group, set())
            placed = _place([(key, _stem_name(key)) for key in keys])
            old_keys = {key for key in keys if key in self.paths} | {
                key for key in dropped if (key.schema, _fold(key)) == group
            }
            for key in old_keys | set(placed):
                old = self.paths.get(key)
                new = f"{self._dir_names[key.schema]}/{placed[key]}" if key in placed else None
                if old != new:
                    moves[key] = (old, new)
                    if new is None:
                        self.paths.pop(key, None)
                    else:
                        self.paths[key] = new
        return moves


def assign_paths(keys: Iterable[ObjectKey]) -> dict[ObjectKey, str]:
    """Map every object of a snapshot to its path in the tree (`dir/file.sql`)."""
    layout = TreeLayout()
    layout.update(keys, ())
    return dict(layout.paths)


def snapshot_files(snapshot: Mapping[ObjectKey, str]) -> dict[str, str]:
    """Every file of a snapshot, by path: what a commit's tree holds."""
    paths = assign_paths(snapshot)
    return {paths[key]: text for key, text in snapshot.items()}
