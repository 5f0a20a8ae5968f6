"""The export pipeline: reader -> replay -> snapshot -> git writer.

`export_history()` is what `pggit-export export` runs, and what a Python user
calls. Each stage is a module of its own; this one only wires them and keeps
the account: every history row ends up in exactly one commit, and every row
that could not be replayed is named in the report.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from dulwich.objects import Commit

from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK
from pggit_export.git.authors import Author, default_author
from pggit_export.git.message import (
    build_message,
    format_id_ranges,
    parse_id_ranges,
    read_trailer,
    series,
    without_shadow_oids,
)
from pggit_export.git.writer import GitWriter, RepositoryError, Signature
from pggit_export.identifiers import IDENTIFIER_PATTERN, catalog_name, strip_identifier_quotes
from pggit_export.progress import Progress, ProgressEvent
from pggit_export.read.history import Changeset, HistoryReader, HistoryRow, group_changesets
from pggit_export.render.dialect import Dialect, read_keywords
from pggit_export.render.snapshot import (
    DEFAULT_EXCLUDED_SCHEMAS,
    ObjectKey,
    Prefetched,
    Rendered,
    install_render_function,
    keys_touched,
    prepare_render_session,
    render_objects,
    touched_render_sql,
)
from pggit_export.render.state import FileChanges, SnapshotChanges, SnapshotState, diff_files
from pggit_export.restore import LoadFailure, load_files
from pggit_export.shadow.evidence import (
    RecordedCreations,
    read_later_changes,
    read_oid_clock,
    read_recorded_creations,
    read_unrecorded_objects,
)
from pggit_export.shadow.heal import MAX_ROUNDS, Healer, LiveCatalog, Repair
from pggit_export.shadow.pipeline import (
    ALONE,
    ChangesetPipeline,
    PipelineStats,
    Prepare,
    RenderQueries,
    Replayed,
)
from pggit_export.shadow.prehistory import PrehistoryPlan, load_prehistory, plan_prehistory
from pggit_export.shadow.replay import (
    DEFAULT_MAX_SQL_BYTES,
    DEFAULT_SHADOW_SIZE_LIMIT,
    DEFAULT_STATEMENT_TIMEOUT,
    TRACKER_SCHEMA,
    Action,
    ReplayResult,
    Shadow,
    ShadowError,
    TouchedObjects,
    may_store_data,
    open_shadow,
    split_statements,
)
from pggit_export.shadow.transaction_ids import CommentDates, read_comment_dates

# The reconcile commit is the tool's, not a database user's (an --authors entry may rename it).
RECONCILE_AUTHOR = "pggit-export"


@dataclass
class ExportOptions:
    """Everything `export_history` can be told; the defaults are the CLI's."""

    branch: str = "main"
    bare: bool = False
    shadow_dsn: str | None = None  # None: start a private PostgreSQL
    default_author: str = "unknown"  # for rows whose created_by is NULL
    # Database user -> git identity (authors.read_authors_file); others: user <user@pggit.invalid>
    authors: Mapping[str, Author] = field(default_factory=dict)
    # Schemas whose objects are not exported (pgGit's own by default: their changesets
    # are not even replayed; the others' are, since other objects may need them).
    exclude_schemas: tuple[str, ...] = DEFAULT_EXCLUDED_SCHEMAS
    # Only these schemas' objects are exported (like pg_dump -n); empty: every schema.
    schemas: tuple[str, ...] = ()
    batch_commits: int = 200
    object_format: str = "sha1"  # or "sha256", for a new repository
    # A schema dump (pg_dump --schema-only) loaded before the history: the root commit.
    baseline: Path | None = None
    # "transaction": one commit per transaction (rows sharing created_at and created_by);
    # "statement": one per text the client sent (also sharing sql_executed).
    commit_per: str = "transaction"
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT  # per replayed statement
    # Stop, and say so, when the shadow database grows past this many bytes (it holds a
    # schema: such a size means a history that stores rows, which could fill a disk).
    shadow_size_limit: int = DEFAULT_SHADOW_SIZE_LIMIT
    max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES  # larger texts are refused unparsed
    dry_run: bool = False  # replay and report, write nothing
    # Overwrite uncommitted changes in the exported branch's working tree (git's --force).
    force: bool = False
    # With shadow_dsn: let its own role replay when no throwaway role can (a risk).
    shadow_replay_as_owner: bool = False
    strict: bool = False  # stop at the first changeset that fails to replay
    # Heal failed changesets from the statement and the live catalog, and retry.
    repair: bool = True
    # End with a commit that makes the head equal the live schema.
    reconcile: bool = False
    # Re-render only what each changeset touched (event triggers in the shadow).
    incremental: bool = True
    # Testing aid: after every changeset also render everything and fail loudly
    # if the incremental snapshot differs. Slow.
    verify_incremental: bool = False
    # Called after each changeset (progress.py): history rows done of all, changesets done.
    progress: Progress | None = None


@dataclass
class ReportedChangeset:
    """A changeset the report names: failed, or not replayed, and why."""

    history_ids: list[int]
    commit: str
    reason: str
    statement: str | None = None
    error: str | None = None


@dataclass
class ExportReport:
    """What an export did; `to_dict()` is the `--json` summary."""

    repository: str
    branch: str
    head: str | None = None
    commits_written: int = 0
    history_rows: int = 0
    rows_exported: int = 0
    resumed_after_id: int | None = None
    # How the shadow was rebuilt to continue: "replayed" (the history again, up to the
    # head) or "loaded" (the head's files, after a reconcile commit); None: a first run.
    resumed_by: str | None = None
    source_server_version: int = 0
    shadow: str = ""
    shadow_server_version: int = 0
    # When the shadow's major is not the source's: what the files are rewritten in to read
    # as the source's server writes them (render/dialect.py).
    dialect_rewrites: list[str] = field(default_factory=list)
    failed: list[ReportedChangeset] = field(default_factory=list)
    repairs: list[ReportedChangeset] = field(default_factory=list)
    reconciled: dict[str, list[str]] | None = None  # added/changed/removed paths
    baseline: dict[str, Any] | None = None  # file, statements loaded, failures
    not_replayed: list[ReportedChangeset] = field(default_factory=list)
    refused_statements: list[ReportedChangeset] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The session settings replay applied, as read from the source (read.environment).
    environment: list[str] = field(default_factory=list)
    # Which evidence the healer could use, and why not (shadow/evidence.py).
    evidence: list[str] = field(default_factory=list)
    incremental: bool = False  # whether the export could re-render only what changed
    dry_run: bool = False
    stopped_early: bool = False  # --strict stopped at a failure
    # What the changeset pipeline did and where its time went (timings: not in to_dict,
    # whose output is deterministic).
    pipeline: PipelineStats = field(default_factory=PipelineStats)

    @property
    def clean(self) -> bool:
        return not (self.failed or self.refused_statements)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` summary: these fields, `clean`, and the tool's `version`."""
        from pggit_export import __version__

        data = asdict(self)
        del data["pipeline"]
        data["clean"] = self.clean
        data["version"] = __version__
        return data

    @property
    def exit_code(self) -> int:
        """`pggit-export export`'s exit code for this run: EXIT_OK when every changeset
        replayed and the export ran to the end, else EXIT_INCOMPLETE (the repository holds
        every commit; the report names what did not replay)."""
        return EXIT_OK if self.clean and not self.stopped_early else EXIT_INCOMPLETE

    def format_stderr(self, quiet: bool = False) -> str:
        """What the command line prints on stderr ("" for nothing): the warnings, and with
        `quiet` the changesets that did not make it (quiet drops the summary, never them)."""
        lines = [f"warning: {warning}" for warning in self.warnings]
        if quiet:
            lines += [
                f"pggit-export: history ids {format_id_ranges(item.history_ids)} failed to replay: {item.error}"
                for item in self.failed
            ]
            lines += [
                f"pggit-export: history ids {format_id_ranges(item.history_ids)}: statement refused, not run"
                for item in self.refused_statements
            ]
        return "\n".join(lines)

    def format_text(self, quiet: bool = False) -> str:
        """The summary the command line prints on stdout ("" when `quiet`); the warnings
        are in `format_stderr`."""
        if quiet:
            return ""
        how = {
            "replayed": "; the shadow rebuilt by replaying the history up to it",
            "loaded": "; the shadow rebuilt from the head's files",
        }.get(self.resumed_by or "", "")
        resumed = (
            f" (continued after history id {self.resumed_after_id}{how})"
            if self.resumed_after_id is not None
            else ""
        )
        verb = "Dry run, nothing written: would export" if self.dry_run else "Exported"
        lines = [
            f"{verb} {_n(self.rows_exported, 'history row')} as "
            f"{_n(self.commits_written, 'commit')} into {self.repository}, branch "
            f"{self.branch}{resumed}"
        ]
        if self.stopped_early:
            lines.append("  --strict: stopped at the first changeset that failed to replay")
        lines.append(f"  head:   {self.head or '(no commits)'}")
        source_major = self.source_server_version // 10000
        shadow_major = self.shadow_server_version // 10000
        dialect = (f"files in PostgreSQL {shadow_major}'s dialect" if shadow_major == source_major
                   else f"files in PostgreSQL {source_major}'s dialect for "
                        f"{series(self.dialect_rewrites)}, {shadow_major}'s for other "
                        "deparsed expressions")
        lines.append(f"  shadow: {self.shadow}; source: PostgreSQL {source_major}; {dialect}")
        lines += [f"  replayed under the source's {setting}" for setting in self.environment]
        lines += [f"  {line}" for line in self.evidence]
        if self.not_replayed:
            lines.append(
                f"  {_n(len(self.not_replayed), 'changeset')} not replayed (kept as commits):")
            lines += [f"    history ids {format_id_ranges(item.history_ids)}: {item.reason}"
                      for item in self.not_replayed]
        if self.failed:
            lines.append(
                f"  {_n(len(self.failed), 'changeset')} failed to replay (kept as commits):")
            lines += [f"    history ids {format_id_ranges(item.history_ids)} (commit {item.commit[:12]}): "
                      f"{item.error}" for item in self.failed]
        if self.repairs:
            lines.append(f"  {_n(len(self.repairs), 'repair')} healed the replay "
                         "(Pggit-Repaired trailers):")
            lines += [f"    history ids {format_id_ranges(item.history_ids)}: {item.reason}"
                      for item in self.repairs[:REPAIRS_LISTED]]
            if len(self.repairs) > REPAIRS_LISTED:
                lines.append(f"    ... and {len(self.repairs) - REPAIRS_LISTED} more "
                             "(--json lists them all)")
        if self.baseline is not None:
            failures = len(self.baseline["failures"])
            lines.append(
                f"  baseline {self.baseline['file']}: {self.baseline['objects']} objects"
                + (f", {_n(failures, 'statement')} could not be loaded" if failures else "")
            )
        if self.reconciled is not None:
            counts = {k: len(v) for k, v in self.reconciled.items()}
            lines.append(
                "  reconciled with the live database: "
                f"{counts['added']} added, {counts['changed']} changed, {counts['removed']} removed"
            )
        if self.refused_statements:
            lines.append(f"  {_n(len(self.refused_statements), 'statement')} refused, not run:")
            for item in self.refused_statements:
                text = " ".join((item.statement or "").split())[:100]
                lines.append(f"    history ids {format_id_ranges(item.history_ids)}: {text}")
        if self.clean and not self.stopped_early:
            lines.append("  every changeset replayed")
        return "\n".join(lines)


REPAIRS_LISTED = 50  # repairs ExportReport.format_text lists; --json has them all


def _n(count: int, noun: str) -> str:
    """`1 changeset`, `2 changesets`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _author(changeset: Changeset, options: ExportOptions) -> tuple[Signature, bool, str | None]:
    """The commit's author; whether the user was missing; a note if it had to be cleaned."""
    user = changeset.created_by
    missing = not (user and user.strip())
    raw = options.default_author if missing else str(user)
    if raw in options.authors:
        mapped = options.authors[raw]
        return Signature(mapped.name, mapped.email, changeset.time), missing, None
    # git's author line cannot hold '<', '>' or line breaks; control characters confuse it.
    name = " ".join("".join(" " if c in "<>" or not c.isprintable() else c for c in raw).split())
    note = None
    if not name:
        name = options.default_author
    if name != raw and not missing:
        note = f"pggit.history recorded the user {raw!r}; git cannot carry it as is: {name!r}."
    author = default_author(name)
    return Signature(author.name, author.email, changeset.time), missing, note


def _note(changeset: Changeset) -> bytes:
    """The commit's git note: its pggit.history rows, whole, as a JSON array."""
    rows = [row.row_json or "null" for row in changeset.rows]
    return ("[\n" + ",\n".join(rows) + "\n]\n").encode("utf-8", "replace")


def _pggit_own(changeset: Changeset, options: ExportOptions) -> bool:
    """True when every row names an object of pgGit itself (its install, for one) in a
    schema not exported, however v1 spelled the name: `pggit_v2`, `"pggit_v2"`, or a
    qualified `"pggit_v2"."HEAD"` as the object's name. Such a changeset is not replayed;
    one of a schema the user excludes is (objects exported may need its objects)."""
    own = _own_schemas(options)
    return all(_row_schema(row.schema_name, row.object_name) in own for row in changeset.rows)


def _own_schemas(options: ExportOptions) -> tuple[str, ...]:
    """pgGit's own schemas among those not exported: left out of the replay, the evidence
    and the baseline too. A schema the user leaves out (--exclude-schema, or not named
    by --schema) is only not rendered: what is exported may need its objects."""
    return tuple(s for s in DEFAULT_EXCLUDED_SCHEMAS if s in options.exclude_schemas)


_QUALIFIED_NAME = re.compile(rf"^\s*({IDENTIFIER_PATTERN})\s*\.")


def _row_schema(schema_name: str | None, object_name: str | None) -> str | None:
    """The schema a history row's object is in, as the catalog spells it (v1 stores catalog
    spellings, sometimes quoted; a qualified object name is SQL, folded as PostgreSQL does)."""
    if schema_name and schema_name != "public":
        return strip_identifier_quotes(schema_name.strip())
    if object_name and (m := _QUALIFIED_NAME.match(object_name)):
        return catalog_name(m.group(1))
    return schema_name


def _resume_point(writer: GitWriter) -> int | None:
    head = writer.tip_commit()
    if head is None:
        return None
    message = head.message.decode("utf-8", "replace")
    ids = read_trailer(message, "Pggit-History-Ids")
    if not ids and read_trailer(message, "Pggit-Baseline"):
        return None  # only the baseline so far: the whole history is still to come
    # A reconcile commit records no history: continue after its parent's rows.
    while not ids and read_trailer(message, "Pggit-Reconcile") and head.parents:
        assert writer.repo is not None
        head = writer.repo[head.parents[0]]  # type: ignore[assignment]
        message = head.message.decode("utf-8", "replace")
        ids = read_trailer(message, "Pggit-History-Ids")
    if not ids:
        raise RepositoryError(
            f"branch {writer.branch} of {writer.path} has commits that pggit-export did not "
            "write (no Pggit-History-Ids trailer): export into a new branch or repository"
        )
    return parse_id_ranges(ids)[-1]


def _load_commit(shadow: Shadow, writer: GitWriter, commit: Commit, report: ExportReport) -> None:
    """Load a commit's snapshot into the fresh shadow of a resumed export: the head after a
    reconcile commit, or the baseline root before the history replays again."""
    files = {path: data.decode("utf-8") for path, data in writer.files_at(commit).items()}
    with shadow.conn.transaction():
        result = load_files(shadow.conn, files)
    shadow.conn.execute("DISCARD ALL")  # a load's settings are its own
    shadow.take_touched()  # the load is not a change
    for failure in result.failures:
        report.warnings.append(
            f"resuming: could not load {failure.path} into the shadow: {failure.error}"
        )


class IncrementalRenderError(AssertionError):
    """verify_incremental found the incremental snapshot differing from a full render."""


@dataclass
class _Exporter:
    """One export run: the shadow, the writer, and the snapshot state between changesets."""

    shadow: Shadow
    writer: GitWriter
    options: ExportOptions
    report: ExportReport
    healer: Healer
    state: SnapshotState = field(default_factory=SnapshotState)
    pending: FileChanges = field(default_factory=dict)  # goes into the next commit
    last_time: dt.datetime | None = None
    # SQL and repairs since the last look for due triggers (None: look at the next changeset).
    since_triggers: str | None = None
    # The source's dialect, when the shadow runs another major (render/dialect.py).
    dialect: Dialect | None = None

    def pipeline(self, prepare: Prepare | None = None) -> ChangesetPipeline:
        """The changeset pipeline of this run: it renders and commits each changeset
        handed in (prepare_commit), while the next one replays."""
        return ChangesetPipeline(
            self.shadow, prepare or self.prepare_commit,
            max_sql_bytes=self.options.max_sql_bytes,
        )

    @property
    def excluded(self) -> tuple[str, ...]:
        return _excluded(self.options)

    def render(
        self,
        keys: set[ObjectKey] | None = None,
        prefetched: Prefetched | None = None,
        queries: RenderQueries = ALONE,
    ) -> Rendered:
        """Render on the tool's own connection: it never runs history, so its output
        settings are set once. Beside a replay (`queries`), the queries run in a
        transaction that will not wait for the replay's locks."""
        admin = self.shadow.admin
        if admin is None:
            rendered = render_objects(self.shadow.conn, keys, exclude_schemas=self.excluded,
                                      dialect=self.dialect)
        else:
            if prefetched and keys is not None and all(map(prefetched.covers, keys)):
                queries = ALONE  # no query to make
            with queries.run():
                rendered = render_objects(admin, keys, exclude_schemas=self.excluded,
                                          stable_session=True, prefetched=prefetched,
                                          dialect=self.dialect)
        return rendered.in_schemas(self.options.schemas) if self.options.schemas else rendered

    def start(self) -> None:
        """Render the shadow as it is and line the writer's tree up with it."""
        _, _ = self.state.apply(self.render())
        self.pending = diff_files(
            self.writer.current_files(), self.state.all_files(), self.writer.blob_id
        )
        if self.pending and self.writer.tip is not None:
            self.report.warnings.append(
                "resuming: the head snapshot, loaded into a new shadow, renders differently "
                f"({len(self.pending)} files); the differences go into the next commit"
            )

    def render_now(self, touched: TouchedObjects | None) -> tuple[SnapshotChanges, FileChanges]:
        """Render what was touched into the state; its changes, as objects and files."""
        return self.render_touched(touched, ALONE)()

    def render_touched(
        self, touched: TouchedObjects | None, queries: RenderQueries
    ) -> Callable[[], tuple[SnapshotChanges, FileChanges]]:
        """Render what `touched` names (everything when None): what needs the shadow as it
        is now runs now, through `queries`, and the rest (rendering the rows the take
        fetched, folding them into the state) is returned, to run later (the pipeline
        runs it while the next changeset replays).
        """
        # Every query runs before the state changes: a LockConflict beside a replay makes
        # the pipeline run this again, alone.
        if touched is None:  # no change tracking: render everything
            everything = self.render(queries=queries)
            return lambda: self.state.apply(everything)
        prefetched = Prefetched.from_json(touched.resolved)
        keys = keys_touched(touched.altered, touched.dropped, prefetched.files,
                            self.state.owners)
        keys |= self.state.children_of(keys)
        # Beyond what the take rendered, only files that exist and keep an object
        # need a query: a new object, or one renamed or moved into a name, is
        # reported and so rendered by the take. (Dropped parts of a relation name
        # all three relation kinds, of which one at most exists.)
        dropped = {(classid, objid) for classid, objid, _, _ in touched.dropped}
        to_render = {
            key for key in keys
            if prefetched.covers(key)
            or (key in self.state.files and not self.state.dropped_whole(key, dropped))
        }
        if self.options.verify_incremental:
            # The full render runs here, where the shadow is as the changeset left it:
            # beside the next changeset's replay when the pipeline overlaps, the path
            # this proves.
            rendered = self.render(to_render, prefetched, queries)
            full = self.render(queries=queries).files

            def apply_and_verify() -> tuple[SnapshotChanges, FileChanges]:
                changes = self.state.apply(rendered, keys)
                self.verify_state(full)
                return changes

            return apply_and_verify
        if all(prefetched.covers(key) for key in to_render):  # no query left to make
            return lambda: self.state.apply(self.render(to_render, prefetched), keys)
        rendered = self.render(to_render, prefetched, queries)
        return lambda: self.state.apply(rendered, keys)

    def verify_state(self, full: Mapping[ObjectKey, str]) -> None:
        """With verify_incremental: fail unless the state equals `full`, a full render."""
        if full != self.state.files:
            wrong = sorted(
                k for k in set(full) | set(self.state.files)
                if full.get(k) != self.state.files.get(k)
            )
            raise IncrementalRenderError(f"incremental snapshot differs for {wrong}")

    def prepare_commit(
        self, item: Replayed, queries: RenderQueries
    ) -> Callable[[], None]:
        """The pipeline's `prepare`: run the render queries of a changeset handed in;
        return the writing of its commit."""
        rendered = self.render_touched(item.touched, queries) if item.changed else _nothing_rendered
        return functools.partial(self.write_changeset, item, rendered)

    def replay_with_repairs(
        self, pipeline: ChangesetPipeline, changeset: Changeset
    ) -> tuple[ReplayResult, list[Repair]]:
        """Replay; while it fails and repairs apply, repair and retry (bounded)."""
        overrides: dict[int, str | None] = {}
        repairs: list[Repair] = []
        seen: set[tuple[str | None, str, int, str | None]] = set()
        healer = self.healer
        healer.start(changeset)
        before = healer.environment_repairs(changeset)
        if self.options.repair:
            before += (healer.due_objects(changeset) + healer.due_triggers(self.since_triggers)
                       + healer.replaced_overloads(changeset) + healer.due_superseded(changeset)
                       + healer.due_labels(changeset)
                       + healer.due_comments(changeset, replayed=False))
        if before:
            pipeline.settle()  # the changeset before is taken without these repairs
        for repair in before:
            if healer.apply(repair) is None:
                repairs.append(repair)
        result = pipeline.replay(changeset)
        for _ in range(MAX_ROUNDS):
            failure = result.failure
            if failure is None or not self.options.repair:
                break
            # The detail too: "cannot alter type of a column used in a trigger definition"
            # names one trigger at a time, and each is progress.
            signature = (failure.sqlstate, failure.message, failure.statement_index,
                         failure.detail)
            if signature in seen:
                break  # no progress: the same failure again
            seen.add(signature)
            progress = False
            for repair in self.healer.repairs_for(failure, result.statements):
                if repair.override is not None:
                    overrides[repair.override[0]] = repair.override[1]
                elif self.healer.apply(repair) is not None:
                    continue  # could not be applied: not evidence of anything
                repairs += self.healer.extra  # what that repair needed first
                self.healer.extra = []
                repairs.append(repair)
                progress = True
            if not progress:
                break
            result = pipeline.replay(changeset, overrides)
        if result.replayed and may_store_data(result.statements):
            self.check_shadow_size(pipeline, changeset)
        # What the next due_triggers must look at: this changeset's SQL and repairs.
        self.since_triggers = "\n".join([changeset.sql or "", *(r.description for r in repairs)])
        if self.options.repair:
            # Applied before the changeset is handed in: its take includes them.
            repairs += [r for r in (healer.postcondition_repairs(changeset, result.ok)
                                    + healer.due_comments(changeset, replayed=True))
                        if healer.apply(r) is None]
            if result.ok:
                healer.note_superseded(changeset)
        return result, repairs

    def check_shadow_size(self, pipeline: ChangesetPipeline, changeset: Changeset) -> None:
        """Stop the export when the changeset left the shadow over its size limit: replay
        skips every data command, but a DO block or a function can still insert rows, and
        a history doing that over and over would fill the disk. Checked after the
        changesets that can (may_store_data); every commit before this changeset is
        written first."""
        size, limit = self.shadow.size_bytes(), self.options.shadow_size_limit
        if size > limit:
            pipeline.close()
            raise ShadowError(
                f"the shadow database holds {size // 2**20} MB after history ids "
                f"{format_id_ranges(changeset.history_ids)}, over the shadow size limit "
                f"({limit // 2**20} MB): the history stores rows (a DO block or a function "
                "inserting them?). Raise --shadow-size-limit to go on; a rerun continues"
            )

    def replay_to_head(self, reader: HistoryReader, last_id: int) -> None:
        """Rebuild the shadow for a resumed export by doing what the first run did: load
        the root commit if it is a baseline, then replay every changeset up to history id
        `last_id`, repairs included, rendering and writing nothing. Loading the head's
        files instead does not give the same shadow (the order and names PostgreSQL
        picks, repairs that depend on what exists, OIDs), and a resumed export then wrote
        a history a clean one would not."""
        writer = self.writer
        root = writer.tip_commit()
        assert root is not None and writer.repo is not None
        while root.parents:
            root = writer.repo[root.parents[0]]  # type: ignore[assignment]
        if read_trailer(root.message.decode("utf-8", "replace"), "Pggit-Baseline"):
            _load_commit(self.shadow, writer, root, self.report)

        def up_to_head() -> Generator[HistoryRow, None, None]:
            for row in reader.rows():
                yield row
                if row.id == last_id:
                    return

        rows = up_to_head()
        # Nothing is rendered or written, so nothing is handed in, and the tracker is
        # paused: its take and render were most of a changeset's cost.
        pipeline = self.pipeline(prepare=lambda item, queries: _write_nothing)
        try:
            with self.shadow.tracker_paused():
                for changeset in group_changesets(rows, reader.environment(),
                                                  self.options.commit_per):
                    if not _pggit_own(changeset, self.options):
                        self.replay_with_repairs(pipeline, changeset)
        finally:
            rows.close()  # the history cursor, before the export opens it again
        self.shadow.take_touched()  # the rebuild is no change

    def commit_baseline(self, path: Path, when: dt.datetime) -> None:
        """Load a schema dump into the shadow and commit it as the root commit."""
        raw = path.read_bytes()
        text = raw.decode("utf-8", "replace")
        # Only what replay would run: no psql meta-commands, owners, grants, SET TRANSACTION.
        lines = [line for line in text.splitlines() if not line.startswith("\\")]
        statements = [
            s.text for s in split_statements("\n".join(lines)) if s.action is Action.REPLAY
        ]
        with self.shadow.conn.transaction():
            result = load_files(self.shadow.conn, {path.name: ";\n".join(statements)})
        self.shadow.conn.execute("DISCARD ALL")  # a dump's set_config(..., false) is per session
        digest = hashlib.sha256(raw).hexdigest()
        objects = self.commit_root(
            when,
            lambda count: f"Baseline from {path.name}\n\n"
            f"The schema as it was before the recorded history: {count} objects "
            f"from {result.statements} statements of {path.name}.\n",
            result.failures,
            f"Pggit-Baseline: {path.name} sha256:{digest}\n",
        )
        self.report.baseline = {
            "file": str(path), "sha256": digest, "statements": result.statements,
            "objects": objects,
            "failures": [{"statement": f.statement, "error": f.error} for f in result.failures],
        }

    def commit_prehistory(self, plan: PrehistoryPlan, live: psycopg.Connection[Any],
                          recorded: RecordedCreations, when: dt.datetime) -> None:
        """Load the live objects no history row creates and commit them as the root
        commit: the schema before the history (shadow/prehistory.py)."""
        self.healer.start_before_history()
        result = load_prehistory(self.healer, live, plan, recorded, _own_schemas(self.options))
        sections = [
            ("Objects", [f"{key.kind} {key.schema}.{key.name}" for key in plan.objects]),
            ("Dated before the history by their OIDs (kinds v1 never records)",
             [f"{key.kind} {key.schema}.{key.name}" for key in plan.dated]),
            ("Left out, because a later history row adds it", [i.describe() for i in plan.left_out]),
            ("Created first, because they need it (never created in the recorded history)",
             result.needed),
            ("Kept, although a later history row adds it (other objects depend on it)",
             result.kept),
        ]
        body = "".join(f"\n{title}:\n" + "".join(f"  {line}\n" for line in lines)
                       for title, lines in sections if lines)
        one = len(plan.objects) == 1
        objects = self.commit_root(
            when,
            lambda count: "Baseline from the live database\n\n"
            "The schema as it was before the recorded history: "
            + (f"{plan.describe()} that\n{'exists' if one else 'exist'} in the live database "
               "and that no history row creates. v1 records every\nCREATE TABLE, CREATE VIEW "
               f"and CREATE FUNCTION it sees, so {'it' if one else 'they'} existed before\n"
               "pgGit was installed"
               if plan.objects else "objects of kinds v1 never records")
            + (f"; {plan.describe(plan.dated)} whose OIDs are older than every object the "
               "history records as created" if plan.dated else "")
            + f" ({count} objects with what they need).\n" + body,
            result.failures,
            "Pggit-Baseline: live database\n",
        )
        self.report.baseline = {
            "file": "live database", "sha256": None, "statements": result.statements,
            "objects": objects,
            "left_out": [i.describe() for i in plan.left_out],
            "needed": result.needed, "kept": result.kept,
            "failures": [{"statement": f.statement, "error": f.error} for f in result.failures],
        }

    def commit_root(self, when: dt.datetime, summary: Callable[[int], str],
                    failures: list[LoadFailure], trailer: str) -> int:
        """Commit what was loaded into the shadow as the root commit; the number of objects.
        `summary` writes the message's subject and text from that number."""
        changes, files = self.render_now(self.shadow.take_touched())
        files = {**self.pending, **files}
        self.pending = {}
        failed = [f"  {without_shadow_oids(f.error.splitlines()[0])}\n"
                  f"    {' '.join(f.statement.split())[:200]}" for f in failures]
        message = (
            summary(len(changes.created))
            + (f"\n{len(failed)} statements of it could not be loaded:\n" + "\n".join(failed)
               + "\n" if failed else "")
            + "\n" + trailer
        )
        identity = self.options.authors.get(RECONCILE_AUTHOR) or default_author(RECONCILE_AUTHOR)
        self.writer.write_commit(files, Signature(identity.name, identity.email, when), message)
        self.report.commits_written += 1
        return len(changes.created)

    def reconcile(self, live: psycopg.Connection[Any]) -> None:
        """Commit what it takes to make the head equal the live schema, if anything."""
        rendered = render_objects(live, exclude_schemas=self.options.exclude_schemas)
        if self.options.schemas:
            rendered = rendered.in_schemas(self.options.schemas)
        changes, files = self.state.apply(rendered)
        files = {**self.pending, **files}
        self.pending = {}
        if not files:
            self.report.reconciled = {"added": [], "changed": [], "removed": []}
            return
        paths = self.state.layout.paths
        added = sorted(paths[k] for k in changes.created)
        changed = sorted(paths[k] for k in changes.altered)
        removed = sorted(p for p, content in files.items() if content is None)
        self.report.reconciled = {"added": added, "changed": changed, "removed": removed}
        body = [f"{title}:\n" + "\n".join(f"  {p}" for p in items)
                for title, items in (("Added", added), ("Changed", changed), ("Removed", removed))
                if items]
        message = (
            "Reconcile with live database\n\n"
            "The live database differs from where the recorded history leads: changes\n"
            "pgGit never recorded. This commit makes the head equal the live schema.\n\n"
            + "\n\n".join(body)
            + "\n\nPggit-Reconcile: live database\n"
        )
        # Dated like the newest history change (no clock: reproducible), so that
        # restore --at <date> never takes it for a point in the past.
        head = self.writer.tip_commit()
        when = self.last_time or (
            dt.datetime.fromtimestamp(head.commit_time, dt.timezone.utc).replace(tzinfo=None)
            if head is not None else dt.datetime(1970, 1, 1)
        )
        identity = self.options.authors.get(RECONCILE_AUTHOR) or default_author(RECONCILE_AUTHOR)
        author = Signature(identity.name, identity.email, when)
        self.writer.write_commit(files, author, message)
        self.report.commits_written += 1

    def export_changeset(self, pipeline: ChangesetPipeline, changeset: Changeset) -> bool:
        """Replay one changeset (and its repairs) and hand it to the pipeline, which
        renders and commits it while the next changeset replays.

        Returns False when --strict stops at its failure.
        """
        options, report = self.options, self.report
        self.last_time = changeset.time
        if _pggit_own(changeset, options):
            skipped_reason = "pgGit's own objects (schema " + ", ".join(
                sorted({_row_schema(row.schema_name, row.object_name) or ""
                        for row in changeset.rows})
            ) + ")"
            pipeline.hand_in(Replayed(changeset, ReplayResult(statements=[]),
                                      skipped_reason=skipped_reason))
            return True
        result, repairs = self.replay_with_repairs(pipeline, changeset)
        if options.strict and result.failure is not None:
            report.failed.append(
                ReportedChangeset(
                    history_ids=changeset.history_ids,
                    commit="",
                    reason="replay failed; --strict stopped the export before it",
                    statement=result.failure.statement,
                    error=result.failure.describe(),
                )
            )
            return False
        pipeline.hand_in(Replayed(changeset, result, tuple(repairs),
                                  changed=_changed_shadow(result, repairs)))
        return True

    def write_changeset(
        self,
        item: Replayed,
        rendered: Callable[[], tuple[SnapshotChanges, FileChanges]],
    ) -> None:
        """Commit one replayed changeset, and account for its rows in the report.

        `rendered` finishes the render of the snapshot after it (render_touched).
        """
        report = self.report
        changeset, result, repairs = item.changeset, item.result, item.repairs
        changes, files = rendered()
        if self.pending:
            files = {**self.pending, **files}
            self.pending = {}
        author, author_missing, author_note = _author(changeset, self.options)
        message = build_message(
            changeset, result, changes, skipped_reason=item.skipped_reason,
            author_missing=author_missing, repairs=[r.description for r in repairs],
            author_note=author_note,
        )
        commit_id = self.writer.write_commit(files, author, message, _note(changeset)).decode()
        report.commits_written += 1
        ids = changeset.history_ids
        if result.failure is not None:
            report.failed.append(
                ReportedChangeset(
                    history_ids=ids,
                    commit=commit_id,
                    reason="replay failed",
                    statement=result.failure.statement,
                    error=result.failure.describe(),
                )
            )
        if item.skipped_reason:
            report.not_replayed.append(ReportedChangeset(ids, commit_id, item.skipped_reason))
        for repair in repairs:
            report.repairs.append(ReportedChangeset(ids, commit_id, repair.description))
        for statement in result.refused:
            report.refused_statements.append(
                ReportedChangeset(ids, commit_id, statement.action.value, _excerpt(statement.text))
            )


def _changed_shadow(result: ReplayResult, repairs: list[Repair]) -> bool:
    """Whether a changeset's replay and repairs changed the shadow: its take is rendered.
    A failed changeset is rolled back, but repairs made for it stay (overrides change
    only what is sent)."""
    if result.failure is not None:
        return any(not r.override for r in repairs)
    return bool(result.replayed or repairs)


def _write_nothing() -> None:
    pass


def _nothing_rendered() -> tuple[SnapshotChanges, FileChanges]:
    return SnapshotChanges(), {}


def _install_tracker(shadow: Shadow, options: ExportOptions) -> bool:
    """Track what each changeset touches; its take also renders what was touched."""
    admin = shadow.admin
    if admin is None:  # the tool's own connection renders: none, no tracking
        return False
    return shadow.install_tracker(
        touched_render_sql(shadow.server_version, TRACKER_SCHEMA, "altered"),
        setup=lambda: install_render_function(admin, TRACKER_SCHEMA, _excluded(options)),
    )


def _excluded(options: ExportOptions) -> tuple[str, ...]:
    """Schemas no snapshot renders: the user's exclusions and the tracker's own."""
    return (*options.exclude_schemas, TRACKER_SCHEMA)


def export_history(
    source: str, repository: str | os.PathLike[str], options: ExportOptions | None = None
) -> ExportReport:
    """Export the v1 history of `source` into the git repository at `repository`.

    `source` is a libpq connection string or URI ("" uses the PG* environment
    variables, as psql does). A repository that already holds an export is
    continued after the last history row it contains.
    """
    options = options or ExportOptions()
    report = ExportReport(
        repository=str(Path(repository)), branch=options.branch, dry_run=options.dry_run
    )
    with HistoryReader(source) as reader, GitWriter(
        repository,
        branch=options.branch,
        bare=options.bare,
        batch_commits=options.batch_commits,
        dry_run=options.dry_run,
        object_format=options.object_format,
        force=options.force,
    ) as writer:
        info = reader.info()
        report.history_rows = info.history_rows
        report.source_server_version = info.server_version
        report.environment = reader.environment().describe()
        last_id = _resume_point(writer)
        after = reader.position_of(last_id) if last_id is not None else None
        report.resumed_after_id = last_id

        # The source's major: the files then read as the source's server prints them.
        with open_shadow(
            options.shadow_dsn,
            statement_timeout=options.statement_timeout,
            major=info.server_version // 10000,
            replay_as_owner=options.shadow_replay_as_owner,
        ) as shadow:
            report.shadow = shadow.description
            report.shadow_server_version = shadow.server_version
            report.warnings += shadow.warnings
            shadow.watch_statements(shadow.statement_timeout_seconds())
            shadow_major, source_major = shadow.server_version // 10000, info.server_version // 10000
            if shadow_major < source_major:
                report.warnings.append(
                    f"the shadow runs PostgreSQL {shadow_major}, older than "
                    f"the source's {source_major}: newer syntax may fail to replay"
                )
            dialect = None
            if shadow_major != source_major:
                dialect = Dialect.between(
                    source_major, read_keywords(reader.conn),
                    shadow_major, read_keywords(shadow.admin or shadow.conn))
                if dialect.qualifies_view_columns:
                    dialect = replace(dialect, parser=shadow.raw_parser())
                report.dialect_rewrites = dialect.rewrites
            if shadow_major > source_major:
                assert dialect is not None
                views = ("" if dialect.parser is not None or not dialect.qualifies_view_columns
                         else " (a view reading one table has unqualified columns from "
                              "PostgreSQL 16 on)")
                report.warnings.append(
                    f"the shadow runs PostgreSQL {shadow_major}, not the source's "
                    f"{source_major}: {series(dialect.rewrites)} are written as PostgreSQL "
                    f"{source_major} writes them, but other expressions as PostgreSQL "
                    f"{shadow_major} prints them{views}, so restore into PostgreSQL "
                    f"{source_major} and drift may see differences; install PostgreSQL "
                    f"{source_major} or point PGGIT_EXPORT_PG_BIN at its binaries"
                )
            if shadow.admin is not None:
                prepare_render_session(shadow.admin)
            if options.incremental and not _install_tracker(shadow, options):
                report.warnings.append(
                    "the shadow's user may not create event triggers: every change is "
                    "rendered in full (slower, same result)"
                )
            report.incremental = shadow.tracking
            if writer.tip is not None and options.baseline is not None:
                report.warnings.append(
                    "--baseline ignored: the repository already has its root commit"
                )
            live = LiveCatalog(reader.conn, _own_schemas(options))
            clock = read_oid_clock(reader.conn, reader.columns)
            if clock.oids:  # the history records OIDs: say whether they can be trusted
                report.evidence.append(f"OID chronology: {clock.reason}")
            report.evidence += reader.columns.unusable()  # an older pgGit's tables
            # Always: the session environment is reproduced even with --no-repair, which
            # only turns off the healing of failures (options.repair).
            later = read_later_changes(reader.conn)
            recorded = (read_recorded_creations(reader.conn, reader.columns) if options.repair
                        else RecordedCreations())
            healer = Healer(live, shadow, later, clock, dialect, recorded)
            exporter = _Exporter(shadow, writer, options, report, healer=healer,
                                 dialect=dialect)
            # Read once: the healer dates them inside the history, the pre-history before it.
            unrecorded = (read_unrecorded_objects(reader.conn, _own_schemas(options))
                          if options.repair else [])
            dates = (read_comment_dates(reader.conn, _own_schemas(options), recorded,
                                        reader.columns) if options.repair else CommentDates())
            comments = dates.dated
            if dates.clock is not None:  # comments no text sets: may their ids date them?
                report.evidence.append(f"transaction id chronology: {dates.clock.reason}")
            if options.repair:
                healer.schedule_triggers()
                healer.schedule_labels()
                healer.schedule_objects(unrecorded)
                healer.schedule_comments(comments)
            if writer.tip is not None:
                tip = writer.tip_commit()
                assert tip is not None
                if last_id is None or read_trailer(tip.message.decode("utf-8", "replace"),
                                                   "Pggit-Reconcile"):
                    # After a reconcile commit the head is the live schema, which no
                    # replay reaches: continue from its files.
                    _load_commit(shadow, writer, tip, report)
                    report.resumed_by = "loaded"
                else:
                    exporter.replay_to_head(reader, last_id)
                    report.resumed_by = "replayed"
            exporter.start()
            changesets_done = 0
            changesets = reader.changesets(after, options.commit_per)
            prehistory = PrehistoryPlan()
            if writer.tip is None and options.baseline is None and options.repair:
                prehistory = plan_prehistory(reader.conn, recorded, later,
                                             _own_schemas(options), clock,
                                             unrecorded=unrecorded, comments=comments)
            if writer.tip is None and (options.baseline is not None or prehistory.keys):
                first = next(changesets, None)
                # Dated like the first change, so it sorts before it and needs no clock.
                when = first.time if first else dt.datetime(1970, 1, 1)
                if options.baseline is not None:
                    exporter.commit_baseline(options.baseline, when)
                else:
                    exporter.commit_prehistory(prehistory, reader.conn, recorded, when)
                if first is not None:
                    changesets = itertools.chain([first], changesets)
            pipeline = exporter.pipeline()
            for changeset in changesets:
                if not exporter.export_changeset(pipeline, changeset):
                    report.stopped_early = True
                    break
                changesets_done += 1
                report.rows_exported += len(changeset.rows)
                if options.progress:
                    options.progress(ProgressEvent("export", report.rows_exported,
                                                   info.history_rows, "history rows",
                                                   changesets=changesets_done))
            pipeline.close()
            report.pipeline = pipeline.stats
            if options.reconcile and not report.stopped_early:
                exporter.reconcile(reader.conn)
        writer.flush()
        if (not_done := writer.checkout()) is not None:
            report.warnings.append(not_done)
        report.head = writer.tip.decode() if writer.tip else None
    return report


def _excerpt(text: str, limit: int = 2000) -> str:
    """A statement for the report: hostile texts can be megabytes long."""
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text)} characters]"
