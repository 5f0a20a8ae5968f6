"""Stage 4: write real Git objects with dulwich.

Crash safety: objects are buffered and written as one pack per batch; the
branch ref moves (compare-and-swap) only after the pack and its index are in
place. A process killed at any moment leaves the ref at the last complete
batch, plus at worst an unreferenced temporary file that git ignores, so the
repository stays valid and a rerun continues from the ref.

One writer per repository at a time: an flock on `<gitdir>/pggit-export.lock`
(released by the kernel if the process dies, so it never goes stale).
"""

from __future__ import annotations

import binascii
import datetime as dt
import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dulwich.file import GitFile
from dulwich.objects import Blob, Commit, Tree
from dulwich.pack import UnpackedObject, write_pack_data, write_pack_index
from dulwich.repo import Repo

from pggit_export.errors import PggitExportError

FILE_MODE = 0o100644
DIR_MODE = 0o040000


class RepositoryError(PggitExportError, RuntimeError):
    """The target repository cannot be written."""


DEFAULT_BRANCH = "main"


def configured_default_branch() -> str:
    """git's `init.defaultBranch` (system and global configuration), else "main".

    Read with the real git where there is one, else with dulwich's configuration
    stack (the same files). A name git would refuse is ignored.
    """
    name = ""
    git = shutil.which("git")
    if git is not None:
        try:
            result = subprocess.run(  # from "/": no repository's own configuration
                [git, "config", "--get", "init.defaultBranch"], cwd="/",
                capture_output=True, text=True, timeout=30, check=False,
            )
            name = result.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            name = ""
    else:
        from dulwich.config import StackedConfig

        try:
            name = StackedConfig.default().get((b"init",), b"defaultBranch").decode().strip()
        except (KeyError, UnicodeDecodeError):
            name = ""
    from dulwich.refs import check_ref_format

    if name and check_ref_format(f"refs/heads/{name}".encode()):
        return name
    return DEFAULT_BRANCH


def default_branch(repository: str | os.PathLike[str]) -> str:
    """The branch a command works on when no --branch is given.

    A repository that has branches keeps the one it was exported to, whatever the
    configuration says now: "main" if it has one (what every export before
    init.defaultBranch was honoured wrote), else the branch HEAD names (the first
    export points HEAD at the branch it creates). A new or empty repository gets
    git's `init.defaultBranch`, as `git init` would, or "main".
    """
    path = Path(repository)
    if path.is_dir() and any(path.iterdir()):
        try:
            repo = Repo(str(path))
        except Exception:  # noqa: BLE001 - not a repository: the command itself says so
            return DEFAULT_BRANCH
        with repo:
            branches = repo.refs.keys(base=b"refs/heads/")
            if branches:
                if DEFAULT_BRANCH.encode() in branches:
                    return DEFAULT_BRANCH
                head = repo.refs.get_symrefs().get(b"HEAD", b"")
                if head.startswith(b"refs/heads/") and head[len(b"refs/heads/"):] in branches:
                    return head[len(b"refs/heads/"):].decode()
                return DEFAULT_BRANCH
    return configured_default_branch()


@dataclass(frozen=True)
class Signature:
    """An author or committer: `Name <email>` at a UTC time."""

    name: str
    email: str
    when: dt.datetime  # naive = UTC, as pggit.history records it

    def identity(self) -> bytes:
        return f"{self.name} <{self.email}>".encode()

    def timestamp(self) -> int:
        when = self.when if self.when.tzinfo else self.when.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp())


_TYPE_NAMES = {Blob.type_num: b"blob", Tree.type_num: b"tree", Commit.type_num: b"commit"}


def _tree_entry(mode: int, name: bytes, sha: bytes) -> bytes:
    """One entry of a tree object as git serialises it: "<octal mode> <name>\\0<binary id>"."""
    return b"%o %s\0%s" % (mode, name, binascii.unhexlify(sha))


def _tree_raw(entries: Mapping[bytes, bytes], mode: int) -> bytes:
    """A tree of entries of one mode. git orders entries by name, a directory's
    name as if it ended in '/'."""
    names = sorted(entries, key=(lambda n: n + b"/") if mode == DIR_MODE else None)
    return b"".join(_tree_entry(mode, name, entries[name]) for name in names)


def _commit_raw(tree: bytes, parent: bytes | None, signature: Signature, message: bytes) -> bytes:
    """A commit object as git serialises it (author = committer, UTC, no encoding header)."""
    person = b"%s %d +0000" % (signature.identity(), signature.timestamp())
    parents = b"parent %s\n" % parent if parent is not None else b""
    return (b"tree %s\n%sauthor %s\ncommitter %s\n\n" % (tree, parents, person, person)
            + message)


def tree_files(repo: Repo, tree_id: bytes) -> dict[str, bytes]:
    """Every file of an exported tree (`schema/file.sql`), by path."""
    files: dict[str, bytes] = {}
    root = repo[tree_id]
    assert isinstance(root, Tree)
    for entry in root.items():
        sub = repo[entry.sha]
        if isinstance(sub, Tree):
            for item in sub.items():
                blob = repo[item.sha]
                assert isinstance(blob, Blob)
                files[f"{entry.path.decode()}/{item.path.decode()}"] = blob.data
    return files


class GitWriter:
    """Writes commits of complete snapshots onto one branch of a repository.

    Use as a context manager; it holds the repository lock while open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        branch: str = "main",
        bare: bool = False,
        batch_commits: int = 200,
        batch_bytes: int = 64 * 1024 * 1024,
        dry_run: bool = False,
        object_format: str = "sha1",
        force: bool = False,
    ) -> None:
        self.path = Path(path)
        # Overwrite uncommitted changes in the working tree of the exported branch.
        self.force = force
        # Whether the working tree shows this branch, read when the repository is opened.
        self._branch_checked_out = False
        self.branch = branch
        self.bare = bare
        self.ref = f"refs/heads/{branch}".encode()
        self.batch_commits = batch_commits
        self.batch_bytes = batch_bytes
        # Dry run: commits are built (so ids and costs are real) but nothing touches the disk.
        self.dry_run = dry_run
        # For a new repository; an existing one keeps its own (sha1 or sha256).
        self.object_format_name = object_format
        self._format: Any = None  # dulwich ObjectFormat, set on open
        self.repo: Repo | None = None
        self._lock_file: IO[bytes] | None = None
        # Objects not yet in a pack: id -> (type number, raw content).
        self._pending: dict[bytes, tuple[int, bytes]] = {}
        self._pending_bytes = 0
        self._pending_commits = 0
        self._written: set[bytes] = set()  # ids packed by this writer: never packed twice
        # The batch being written in the background (its objects stay readable meanwhile).
        self._persisting: threading.Thread | None = None
        self._persisting_objects: dict[bytes, tuple[int, bytes]] = {}
        self._persist_error: BaseException | None = None
        self._on_disk_tip: bytes | None = None
        self.tip: bytes | None = None  # newest commit, written or pending
        # The tip's tree, by directory: a commit rebuilds only the directories it
        # changes, so its cost does not grow with the number of schemas or files.
        # directory -> file name -> the file's entry in the directory's tree, serialised
        # (it ends with the blob's binary id)
        self._dir_entries: dict[str, dict[bytes, bytes]] = {}
        self._dir_trees: dict[str, bytes] = {}  # directory -> tree id
        # Git notes (refs/notes/pggit): a fan-out tree "ab/cdef..." -> note blob, per commit.
        self.notes_ref = b"refs/notes/pggit"
        self._notes_tip: bytes | None = None
        self._notes_on_disk: bytes | None = None
        self._notes: dict[bytes, dict[bytes, bytes]] = {}  # fan-out dir -> name -> blob id
        self._notes_trees: dict[bytes, bytes] = {}
        self._notes_dirty: set[bytes] = set()
        self._last_signature: Signature | None = None

    # -- opening -------------------------------------------------------------------------

    def __enter__(self) -> GitWriter:
        if self.dry_run:
            self.repo = self._open_existing() if self._has_content() else None
        else:
            self.repo = self._open_or_create()
            self._lock()
            self._remove_stale_ref_locks()
        if self.repo is not None:
            self._format = self.repo.object_format
            self.object_format_name = self._format.name
        else:
            from dulwich.object_format import get_object_format

            self._format = get_object_format(self.object_format_name)
        refs = self.repo.refs.as_dict() if self.repo is not None else {}
        tip = refs.get(self.ref)
        self._on_disk_tip = self.tip = tip
        if self.repo is not None and not self.bare and not self.dry_run:
            self._check_working_tree(tip)
        if tip is not None:
            self._load_tree_state()
        self._notes_on_disk = self._notes_tip = refs.get(self.notes_ref)
        if self._notes_tip is not None:
            self._load_notes_state()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:
                self._wait_for_batch(raise_error=False)  # a finished batch is worth keeping
        finally:
            self._unlock()
            if self.repo is not None:
                self.repo.close()

    def _has_content(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def _open_existing(self) -> Repo:
        try:
            repo = Repo(str(self.path))
        except Exception as exc:  # noqa: BLE001 - dulwich raises several kinds
            raise RepositoryError(
                f"{self.path} exists and is not a git repository: "
                "give a new or empty directory, or an existing export"
            ) from exc
        self.bare = repo.bare  # an existing repository stays as it is
        return repo

    def _open_or_create(self) -> Repo:
        if self._has_content():
            return self._open_existing()
        return self._init_atomically()

    def _init_atomically(self) -> Repo:
        """Create the repository in a temporary directory and rename it into place.

        A process killed half-way through `init` then leaves no half-made
        repository that the next run would refuse, only the temporary directory,
        which the next run removes (its name is ours).
        """
        if self.bare:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            final = self.path
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            final = self.path / ".git"
        staging = final.parent / f".{final.name}.pggit-export-init"
        if staging.exists():
            shutil.rmtree(staging)
        repo = Repo.init_bare(str(staging), mkdir=True, object_format=self.object_format_name)
        repo.refs.set_symbolic_ref(b"HEAD", self.ref)
        if not self.bare:
            config = repo.get_config()
            config.set((b"core",), b"bare", False)
            config.write_to_path()
        repo.close()
        os.replace(staging, final)  # replaces an empty directory the user made for a bare repo
        return Repo(str(self.path))

    def _lock(self) -> None:
        assert self.repo is not None
        lock_path = Path(self.repo.controldir()) / "pggit-export.lock"
        self._lock_file = open(lock_path, "wb")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RepositoryError(
                f"another pggit-export is writing to {self.path} (lock {lock_path}); "
                "wait for it to finish"
            ) from None

    def _remove_stale_ref_locks(self) -> None:
        """Remove lock files a killed export left on the refs, the pack indexes and the
        index it writes.

        A process killed while moving a ref leaves `<ref>.lock`, which would make
        every later compare-and-swap fail; killed while writing a pack's index, it
        leaves `pack-<sum>.idx.lock`, and the rerun, writing the same objects into a
        pack of the same name, could not take it; killed during the final checkout, it
        leaves `index.lock`, which would make every later checkout fail. We hold the
        repository's export lock, so no other export can own them: they are stale.
        (git itself writes pack indexes under other names, `tmp_idx_*`. A git command
        of the user's running in the working tree right now would lose its index
        update, as with git's own advice to delete a stale lock.)
        """
        assert self.repo is not None
        control = Path(self.repo.controldir())
        for ref in (self.ref, self.notes_ref):
            (control / (ref.decode() + ".lock")).unlink(missing_ok=True)
        for stale in Path(self.repo.object_store.pack_dir).glob("pack-*.idx.lock"):
            stale.unlink(missing_ok=True)
        if not self.bare:
            (control / "index.lock").unlink(missing_ok=True)

    def _unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- reading -------------------------------------------------------------------------

    def tip_commit(self) -> Commit | None:
        """The branch's newest written commit, if any."""
        if self.tip is None:
            return None
        assert self.repo is not None
        pending = self._pending.get(self.tip) or self._persisting_objects.get(self.tip)
        obj = (Commit.from_raw_string(Commit.type_num, pending[1], object_format=self._format)
               if pending is not None else self.repo[self.tip])
        assert isinstance(obj, Commit)
        return obj

    def files_at(self, commit: Commit) -> dict[str, bytes]:
        """Every file of a commit's tree, by path."""
        assert self.repo is not None
        return tree_files(self.repo, commit.tree)

    # -- writing -------------------------------------------------------------------------

    def blob_id(self, content: bytes) -> bytes:
        """The id `content` has as a blob in this repository's object format."""
        return self._hash(Blob.type_num, content)

    def _hash(self, type_num: int, raw: bytes) -> bytes:
        """The hex id of an object, as git computes it: hash of "<type> <size>\\0" + raw."""
        digest = self._format.new_hash()
        digest.update(b"%s %d\0" % (_TYPE_NAMES[type_num], len(raw)))
        digest.update(raw)
        return digest.hexdigest().encode("ascii")

    def _add_raw(self, type_num: int, raw: bytes) -> bytes:
        """Queue an object for the next pack; return its id.

        Objects are serialised here, not built as dulwich objects: an export
        makes several per changeset, and dulwich would parse each tree again.
        """
        oid = self._hash(type_num, raw)
        if oid not in self._pending:
            self._pending[oid] = (type_num, raw)
            self._pending_bytes += len(raw)
        return oid

    def _load_tree_state(self) -> None:
        assert self.repo is not None
        commit = self.tip_commit()
        assert commit is not None
        root = self.repo[commit.tree]
        assert isinstance(root, Tree)
        for entry in root.items():
            sub = self.repo[entry.sha]
            if not isinstance(sub, Tree):
                raise RepositoryError(
                    f"{self.path}: {entry.path.decode()} at the top of the tree is not a "
                    "directory: this branch was not written by pggit-export"
                )
            directory = entry.path.decode("utf-8")
            self._dir_entries[directory] = {
                item.path: _tree_entry(item.mode, item.path, item.sha) for item in sub.items()
            }
            self._dir_trees[directory] = entry.sha

    def _load_notes_state(self) -> None:
        assert self.repo is not None and self._notes_tip is not None
        notes_commit = self.repo[self._notes_tip]
        assert isinstance(notes_commit, Commit)
        root = self.repo[notes_commit.tree]
        assert isinstance(root, Tree)
        for entry in root.items():
            sub = self.repo[entry.sha]
            if isinstance(sub, Tree):
                self._notes[entry.path] = {item.path: item.sha for item in sub.items()}
                self._notes_trees[entry.path] = entry.sha

    def add_note(self, commit_id: bytes, text: bytes) -> None:
        """Attach a note to a commit (written, with its own notes commit, at the next flush)."""
        fanout = self._notes.setdefault(commit_id[:2], {})
        blob_id = self._add_raw(Blob.type_num, text)
        if fanout.get(commit_id[2:]) != blob_id:  # a rerun re-adding the same note changes nothing
            fanout[commit_id[2:]] = blob_id
            self._notes_dirty.add(commit_id[:2])

    def _commit_notes(self) -> None:
        if not self._notes_dirty:
            return
        for fanout in self._notes_dirty:
            self._notes_trees[fanout] = self._add_raw(
                Tree.type_num, _tree_raw(self._notes[fanout], FILE_MODE)
            )
        self._notes_dirty.clear()
        signature = self._last_signature
        assert signature is not None
        self._notes_tip = self._add_raw(Commit.type_num, _commit_raw(
            self._add_raw(Tree.type_num, _tree_raw(self._notes_trees, DIR_MODE)),
            self._notes_tip, signature,
            b"Notes added by pggit-export: the pggit.history rows of each commit\n",
        ))

    def current_files(self) -> dict[str, bytes]:
        """Path -> blob id of every file in the tip's tree (pending commits included)."""
        size = self._format.oid_length
        return {
            f"{directory}/{name.decode('utf-8')}": binascii.hexlify(entry[-size:])
            for directory, entries in self._dir_entries.items()
            for name, entry in entries.items()
        }

    def _apply(self, changes: Mapping[str, bytes | None]) -> bytes:
        """Apply file changes (None deletes) to the tip's tree; return the new root tree id.

        Only the directories a change touches get a new tree, and each keeps its
        entries serialised, so a commit costs what it changes, not the schema's size.
        """
        dirty: set[str] = set()
        for path, content in changes.items():
            directory, _, name = path.partition("/")
            if not directory or not name or "/" in name:
                raise RepositoryError(f"unexpected path in snapshot: {path!r}")
            entries = self._dir_entries.setdefault(directory, {})
            raw_name = name.encode("utf-8")
            if content is None:
                entries.pop(raw_name, None)
            else:
                blob_id = self._add_raw(Blob.type_num, content)
                entries[raw_name] = _tree_entry(FILE_MODE, raw_name, blob_id)
            dirty.add(directory)
        for directory in dirty:
            entries = self._dir_entries[directory]
            if not entries:
                del self._dir_entries[directory]
                self._dir_trees.pop(directory, None)
                continue
            raw = b"".join(entries[name] for name in sorted(entries))
            self._dir_trees[directory] = self._add_raw(Tree.type_num, raw)
        root = {d.encode("utf-8"): sha for d, sha in self._dir_trees.items()}
        return self._add_raw(Tree.type_num, _tree_raw(root, DIR_MODE))

    def write_commit(
        self,
        changes: Mapping[str, bytes | None],
        author: Signature,
        message: str,
        note: bytes | None = None,
    ) -> bytes:
        """Commit the tip's tree with `changes` applied ({path: content, or None to delete}).

        The branch moves at the next flush.
        """
        tree = self._apply(changes)
        self.tip = self._add_raw(
            Commit.type_num, _commit_raw(tree, self.tip, author, message.encode("utf-8"))
        )
        self._last_signature = author
        if note is not None:
            self.add_note(self.tip, note)
        self._pending_commits += 1
        if self._pending_commits >= self.batch_commits or self._pending_bytes >= self.batch_bytes:
            self._start_batch()
        return self.tip

    def flush(self) -> None:
        """Write pending objects as one pack, then move the branch to the tip; wait for it."""
        self._start_batch()
        self._wait_for_batch()

    def _start_batch(self) -> None:
        """Hand the pending objects and the refs to move to a thread that writes them.

        Writing a pack (zlib, which releases the GIL) then overlaps the next
        changesets' replay and rendering. One batch at a time, in order: a batch
        starts only when the previous one has landed, so the branch always moves
        from the ref the previous batch wrote.
        """
        self._commit_notes()
        self._wait_for_batch()
        objects = {oid: obj for oid, obj in self._pending.items() if oid not in self._written}
        self._written.update(objects)
        self._pending = {}
        self._pending_bytes = 0
        self._pending_commits = 0
        if self.dry_run:
            self._on_disk_tip = self.tip
            return
        self._persisting_objects = objects
        self._persisting = threading.Thread(
            target=self._persist, args=(objects, self._notes_tip, self.tip),
            name="pggit-export-pack-writer", daemon=True,
        )
        self._persisting.start()

    def _wait_for_batch(self, *, raise_error: bool = True) -> None:
        if self._persisting is not None:
            self._persisting.join()
            self._persisting = None
            self._persisting_objects = {}
        error, self._persist_error = self._persist_error, None
        if error is not None and raise_error:
            raise error

    def _persist(
        self, objects: dict[bytes, tuple[int, bytes]], notes_tip: bytes | None, tip: bytes | None
    ) -> None:
        try:
            self._write_refs_after_pack(objects, notes_tip, tip)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._persist_error = exc

    def _write_refs_after_pack(
        self, objects: dict[bytes, tuple[int, bytes]], notes_tip: bytes | None, tip: bytes | None
    ) -> None:
        assert self.repo is not None
        if objects:
            self._write_pack(list(objects.items()))
        if notes_tip is not None and notes_tip != self._notes_on_disk:
            # Before the branch: a kill in between leaves notes on commits the branch does
            # not show yet, which the rerun makes again, identical.
            if self._notes_on_disk is None:
                self.repo.refs.add_if_new(self.notes_ref, notes_tip, message=b"pggit-export")
            else:
                self.repo.refs.set_if_equals(
                    self.notes_ref, self._notes_on_disk, notes_tip, message=b"pggit-export"
                )
            self._notes_on_disk = notes_tip
        if tip is not None and tip != self._on_disk_tip:
            # Compare-and-swap: fail rather than overwrite a ref someone else moved.
            if self._on_disk_tip is None:
                moved = self.repo.refs.add_if_new(self.ref, tip, message=b"pggit-export")
            else:
                moved = self.repo.refs.set_if_equals(
                    self.ref, self._on_disk_tip, tip, message=b"pggit-export"
                )
            if not moved:
                raise RepositoryError(
                    f"{self.ref.decode()} changed while exporting: something else wrote to it"
                )
            self._on_disk_tip = tip

    def _write_pack(self, objects: list[tuple[bytes, tuple[int, bytes]]]) -> None:
        """Write `objects` as one pack and its index into the repository.

        Written here rather than with dulwich's add_objects, which reads every
        pack back to index it (half the cost of a flush): the ids, offsets and
        CRCs are known while writing. As git does, the pack is renamed into place
        first and its index last (atomically): git and dulwich only see a pack
        whose index exists, so a kill in between leaves an ignored file, never a
        broken pack. An object the repository already holds (a resumed export)
        may be packed again: git allows an object in several packs.
        """
        assert self.repo is not None
        pack_dir = Path(self.repo.object_store.pack_dir)
        pack_dir.mkdir(parents=True, exist_ok=True)
        records = (
            UnpackedObject(type_num, sha=binascii.unhexlify(oid), decomp_chunks=[raw])
            for oid, (type_num, raw) in objects
        )
        fd, temporary = tempfile.mkstemp(prefix="tmp_pack_", dir=pack_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                entries, checksum = write_pack_data(
                    out.write, records, self._format, num_records=len(objects)
                )
            base = pack_dir / f"pack-{checksum.hex()}"
            os.chmod(temporary, 0o444)
            os.replace(temporary, base.with_suffix(".pack"))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        with GitFile(base.with_suffix(".idx"), "wb", mask=0o444) as index:
            write_pack_index(
                index, sorted((sha, offset, crc) for sha, (offset, crc) in entries.items()),
                checksum,
            )

    def _check_working_tree(self, tip: bytes | None) -> None:
        """Git's manners: the working tree is the user's. Only when it shows this branch is
        it updated, and then only if it holds no uncommitted change (or `force`)."""
        assert self.repo is not None
        head = self.repo.refs.read_ref(b"HEAD") or b""
        self._branch_checked_out = head == b"ref: " + self.ref
        if not self._branch_checked_out or tip is None or self.force:
            return
        from dulwich import porcelain

        # The user's changes: the working tree against the index, and the index against the
        # tree the last export checked out. Not the index against the branch: an export
        # interrupted after a batch moved the branch leaves the index behind it, and that is
        # the export's own state, which the rerun brings up to date.
        checked_out = self._checked_out_tree()
        if checked_out == b"":
            return  # our own checkout was interrupted: the rerun finishes it
        status = porcelain.status(self.repo, untracked_files="no")
        names: list[Any] = list(status.unstaged)
        # Without a record (an export killed before its first checkout, or an older
        # version's), index changes cannot be told from the export's own: only the working
        # tree against the index counts.
        if checked_out is not None:
            for (old, new), _, _ in self.repo.open_index().changes_from_tree(
                self.repo.object_store, checked_out
            ):
                names.append(new or old)
        changed = sorted({
            (name.decode(errors="replace") if isinstance(name, bytes) else str(name))
            for name in names
        })
        if changed:
            shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            raise RepositoryError(
                f"{self.path} has uncommitted changes that the export would overwrite: "
                f"{shown}; commit or stash them, or pass --force"
            )

    def checkout(self) -> str | None:
        """Make the working tree and index show the tip, if the working tree shows this
        branch (normal repositories only). Returns what it did not do, for the report."""
        if self.dry_run or self.bare or self.tip is None:
            return None
        assert self.repo is not None
        self.flush()
        if not self._branch_checked_out:
            head = (self.repo.refs.read_ref(b"HEAD") or b"").decode(errors="replace")
            return (f"updated branch {self.branch} only: the working tree shows "
                    f"{head.removeprefix('ref: refs/heads/')}, which is left as it was")
        from dulwich import porcelain

        record = self._checkout_record()
        record.write_text("checking out\n")  # a kill from here on leaves our own half-state
        porcelain.reset(self.repo, "hard", self.tip)
        record.write_text(self.repo[self.tip].tree.decode() + "\n")
        return None

    def _checkout_record(self) -> Path:
        """Where the tree id of the last checkout is kept (inside .git: not the user's)."""
        assert self.repo is not None
        return Path(self.repo.controldir()) / "pggit-export-checkout"

    def _checked_out_tree(self) -> bytes | None:
        """The tree the last export checked out, if it said (older exports did not); b""
        while a checkout was under way."""
        try:
            text = self._checkout_record().read_text().strip()
        except OSError:
            return None
        if text == "checking out":
            return b""
        assert self.repo is not None
        tree = text.encode()
        return tree if tree in self.repo.object_store else None
