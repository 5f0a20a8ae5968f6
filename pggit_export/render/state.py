"""The export's running state between changesets: the snapshot and where its files are.

After each changeset only the objects it touched are re-rendered (see
`snapshot.keys_touched`); this module folds those renders into the snapshot and
turns them into file changes for the git writer, so the cost of a changeset
follows what it changed, not the size of the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from pggit_export.render.layout import TreeLayout
from pggit_export.render.snapshot import CatalogRef, ObjectKey, Rendered, Snapshot


@dataclass(frozen=True)
class SnapshotChanges:
    """What a changeset did to the snapshot: objects created, altered, dropped."""

    created: list[ObjectKey] = field(default_factory=list)
    altered: list[ObjectKey] = field(default_factory=list)
    dropped: list[ObjectKey] = field(default_factory=list)
    # Text before and after, for altered objects: what the commit subject describes.
    before: dict[ObjectKey, str] = field(default_factory=dict)
    after: dict[ObjectKey, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.created or self.altered or self.dropped)


FileChanges = dict[str, "bytes | None"]  # path -> new content, or None to delete


class SnapshotState:
    """The current snapshot, which file holds each catalog object, and every file's path."""

    def __init__(self) -> None:
        self.files: Snapshot = {}
        self.owners: dict[CatalogRef, ObjectKey] = {}
        self._owned: dict[ObjectKey, set[CatalogRef]] = {}
        self._parents: dict[ObjectKey, list[ObjectKey]] = {}
        self._children: dict[ObjectKey, set[ObjectKey]] = {}
        self.layout = TreeLayout()

    def children_of(self, keys: Collection[ObjectKey]) -> set[ObjectKey]:
        """Partitions and inheritance children the last render saw under `keys`."""
        return {child for key in keys for child in self._children.get(key, ())}

    def dropped_whole(self, key: ObjectKey, dropped: Collection[CatalogRef]) -> bool:
        """Whether every catalog object the last render put in `key`'s file (the
        object, its indexes and owned sequences, a function's overloads) is in
        `dropped`: then the file is gone, unless something new took its name."""
        owned = self._owned.get(key, set())
        return bool(owned) and all(ref in dropped for ref in owned)

    def apply(
        self, rendered: Rendered, keys: Collection[ObjectKey] | None = None
    ) -> tuple[SnapshotChanges, FileChanges]:
        """Fold a render of `keys` (None: a full render) into the state.

        Every key in `keys` that `rendered` lacks no longer exists. Returns what
        changed, as objects and as file changes.
        """
        if keys is None:
            keys = set(self.files) | set(rendered.files)
        created, altered, dropped = [], [], []
        before: dict[ObjectKey, str] = {}
        after: dict[ObjectKey, str] = {}
        for key in sorted(keys):
            old, new = self.files.get(key), rendered.files.get(key)
            if old is None and new is not None:
                created.append(key)
            elif old is not None and new is None:
                dropped.append(key)
            elif old != new:
                altered.append(key)
                before[key], after[key] = old or "", new or ""
            for ref in self._owned.pop(key, ()):
                if self.owners.get(ref) == key:
                    del self.owners[ref]
            for parent in self._parents.pop(key, ()):
                self._children.get(parent, set()).discard(key)
            if new is None:
                self.files.pop(key, None)
            else:
                self.files[key] = new
        for key, parents in rendered.parents.items():
            self._parents[key] = parents
            for parent in parents:
                self._children.setdefault(parent, set()).add(key)
        for ref, key in rendered.owners.items():
            self.owners[ref] = key
            self._owned.setdefault(key, set()).add(ref)
        changes = SnapshotChanges(
            created=created, altered=altered, dropped=dropped, before=before, after=after
        )
        return changes, self._file_changes(changes)

    def _file_changes(self, changes: SnapshotChanges) -> FileChanges:
        moves = self.layout.update(changes.created, changes.dropped)
        result: FileChanges = {}
        for old, _ in moves.values():
            if old is not None:
                result[old] = None
        # Writes after deletes: a path freed by one object may be taken by another.
        for key, (_, new) in moves.items():
            if new is not None:
                result[new] = self.files[key].encode("utf-8")
        for key in changes.altered:
            if key not in moves:
                result[self.layout.paths[key]] = self.files[key].encode("utf-8")
        return result

    def all_files(self) -> dict[str, bytes]:
        """Every file of the snapshot, by path."""
        return {path: self.files[key].encode("utf-8") for key, path in self.layout.paths.items()}


def diff_files(
    current: Mapping[str, bytes],
    wanted: Mapping[str, bytes],
    blob_id: Callable[[bytes], bytes],
) -> FileChanges:
    """File changes that turn `current` (path -> blob id) into `wanted` (path -> content).

    `blob_id` hashes content the way the repository does (SHA-1 or SHA-256).
    """
    changes: FileChanges = {path: None for path in current if path not in wanted}
    for path, content in wanted.items():
        if current.get(path) != blob_id(content):
            changes[path] = content
    return changes
