"""The changeset pipeline: the shadow replays changeset N+1 while the tool finishes N.

An export spends its time in two processes, the shadow's server replaying history and this
one rendering files and writing git objects; without an overlap each waits for the other.
This module is the overlap, and the only place that knows about it (git-filter-repo hides
fast-import's latency the same way, behind one small queue with one place that sends and
one that reads). For each changeset, in history order, `ChangesetPipeline`:

1. sends the changeset to the shadow as one message (`Shadow.script`), holding back its
   COMMIT while the changeset before it is still to be taken;
2. meanwhile, on the tool's own connection, starts that previous changeset's *take* (what
   its DDL touched, read and cleared from the tracker), finishes the changeset before that
   one (folds it into the snapshot and writes its commit: this process's CPU), reads the
   take, and runs the previous changeset's render queries. The take and the queries must
   see the shadow as the previous changeset left it: hence the held COMMIT;
3. reads the replay's results and sends the COMMIT; if the script failed, replays the
   changeset statement by statement to name the failing statement.

Work beside a replay never waits for a lock (lock_timeout 1 ms): a lock there is the
uncommitted changeset's, which waits for that very work. It gives up instead
(`LockConflict`), the changeset is rolled back, the work is done alone, and the changeset
replays again. Where the texts make a conflict likely (`may_lock_out`), the work is done
alone first. Both are counted in `PipelineStats`, with where the time went.

The consumer (export.py) hands each changeset in once it is done with it in the shadow
(replayed, repaired) as an immutable `Replayed`, and gives one function, `prepare(item,
queries)`: it runs the queries that need the shadow as the item's changeset left it
(through `queries`, which knows whether they run beside a replay) and returns what is left
to do without the shadow (fold into the snapshot, write the commit). The pipeline calls
`prepare` and the work it returns in history order, one after the other: each `prepare`
runs after the previous changeset's work is done, so it sees the snapshot state of the
commit before.
"""

from __future__ import annotations

import json
import re
import select
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pggit_export.identifiers import IDENTIFIER_PATTERN, catalog_name
from pggit_export.read.history import Changeset
from pggit_export.shadow.heal import Repair
from pggit_export.shadow.replay import (
    DEFAULT_MAX_SQL_BYTES,
    TAKE_STATEMENT,
    ReplayResult,
    Shadow,
    ShadowError,
    TouchedObjects,
)


class LockConflict(RuntimeError):
    """Work beside a changeset's replay needed a lock that the changeset holds.

    The work (the previous changeset's take and render) must see the shadow as it was
    before the changeset, so it may not wait for the changeset's commit, which waits for
    it: it gave up instead, and the changeset is rolled back and replayed again.
    """


@dataclass(frozen=True)
class Replayed:
    """One changeset the export is done with in the shadow, as the pipeline hands it on."""

    changeset: Changeset
    result: ReplayResult
    repairs: tuple[Repair, ...] = ()
    # Why it was not replayed at all (pgGit's own objects), for its commit message.
    skipped_reason: str | None = None
    # Whether the shadow changed (replayed DDL, repairs): what it touched is taken and
    # rendered. False: its commit has no file changes.
    changed: bool = False
    # What it touched, once taken; None when the shadow cannot track it (render all).
    touched: TouchedObjects | None = None


class RenderQueries:
    """How the render of a taken changeset runs its catalog queries on the tool's
    connection: beside the next changeset's replay, in a transaction that gives up on any
    lock (LockConflict), or alone, as they come."""

    def __init__(self, beside: psycopg.Connection[Any] | None = None) -> None:
        self.beside = beside  # the tool's connection, when the queries run beside a replay

    @contextmanager
    def run(self) -> Iterator[None]:
        """Wrap the render's queries (a no-op alone)."""
        conn = self.beside
        if conn is None:
            yield
            return
        conn.pgconn.exec_(_BEGIN_BESIDE)
        try:
            yield
        except psycopg.errors.LockNotAvailable as exc:
            _roll_back_tool(conn)
            raise LockConflict(f"a render beside the next changeset: {exc}") from exc
        except BaseException:
            _roll_back_tool(conn)
            raise
        conn.pgconn.exec_(b"COMMIT")


ALONE = RenderQueries()

# What is left of a changeset once its queries ran: fold and commit, no shadow.
Finish = Callable[[], None]
Prepare = Callable[[Replayed, RenderQueries], Finish]


@dataclass
class PipelineStats:
    """What the pipeline did: for tests, `bench/stages.py` and the curious."""

    replays: int = 0  # scripts sent (first replays and retries)
    beside: int = 0  # replays with the previous changeset's take and render beside them
    foreseen: int = 0  # takes done alone first, because the texts foretold a conflict
    conflicts: list[str] = field(default_factory=list)  # replays rolled back and sent again
    statement_by_statement: int = 0  # scripts that failed, replayed again to name the statement
    # Wall seconds by phase: "replay" (waiting for the server's replay results), "take"
    # (waiting for a take), "prepare" (render queries), "finish" (fold and commit),
    # "statement by statement".
    seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, phase: str, started: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


class ChangesetPipeline:
    """Replays changesets and finishes each (render, commit) while the next one replays."""

    def __init__(
        self,
        shadow: Shadow,
        prepare: Prepare,
        *,
        max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
    ) -> None:
        self.shadow = shadow
        self.max_sql_bytes = max_sql_bytes
        self.stats = PipelineStats()
        self._prepare = prepare
        # The queue, in history order: at most one changeset of each state.
        self._untaken: Replayed | None = None  # handed in, to be taken beside the next replay
        self._unprepared: Replayed | None = None  # taken, its render queries still to run
        self._unfinished: Finish | None = None  # prepared, its fold and commit still to run

    def replay(
        self, changeset: Changeset, overrides: Mapping[int, str | None] | None = None
    ) -> ReplayResult:
        """Replay `changeset` in one transaction of its own; roll it back on failure.

        `overrides` replaces statements (1-based index -> new text, or None to skip):
        repairs. On return nothing handed in is left to take: the shadow may be repaired.
        """
        plan = self.shadow.plan(changeset, max_sql_bytes=self.max_sql_bytes,
                                overrides=overrides)
        if not plan.to_run:
            self.settle()
            return plan.outcome()
        if self._untaken is not None and may_lock_out(changeset, self._untaken.changeset):
            self.stats.foreseen += 1
            self.settle()  # cheaper than a LockConflict
        ok = False
        if self._untaken is not None:
            try:
                ok = self._run_script(self.shadow.script(plan, commit=False),
                                      beside=self._take_and_prepare, hold_commit=True)
                self.stats.beside += 1
            except LockConflict as conflict:
                self.stats.conflicts.append(str(conflict))
                self.settle()  # and replay it again, as if nothing were untaken
                ok = self._run_script(self.shadow.script(plan), beside=self._finish)
        else:
            ok = self._run_script(self.shadow.script(plan), beside=self._finish)
        if ok:
            return plan.outcome(replayed=len(plan.to_run))
        self.stats.statement_by_statement += 1
        started = time.perf_counter()
        result = self.shadow.replay_statement_by_statement(plan)
        self.stats.add_time("statement by statement", started)
        return result

    def hand_in(self, item: Replayed) -> None:
        """The export is done with `item`'s changeset in the shadow: take what it touched
        (beside the next replay, when possible), render it, and commit it, in order."""
        self.settle()  # normally nothing: the replay took the changeset before
        # Beside the next replay only with a tracker to take from, on the tool's connection;
        # otherwise taken and prepared now.
        if item.changed and self.shadow.tracking and self.shadow.admin is not None:
            self._untaken = item
            return
        if item.changed:
            item = replace(item, touched=self.shadow.take_touched())
        self._unprepared = item
        self.settle()

    def settle(self) -> None:
        """Take and prepare, alone, what is handed in and still untaken: before the shadow
        changes outside a changeset (a repair), whose changes must not be taken as the
        previous changeset's."""
        if self._untaken is not None:
            self._unprepared = replace(self._untaken, touched=self.shadow.take_touched())
            self._untaken = None
        if self._unprepared is not None:
            self._finish()
            item, self._unprepared = self._unprepared, None
            self._unfinished = self._timed_prepare(item, ALONE)

    def close(self) -> None:
        """Finish everything handed in: the last commits are written."""
        self.settle()
        self._finish()

    def _timed_prepare(self, item: Replayed, queries: RenderQueries) -> Finish:
        started = time.perf_counter()
        try:
            return self._prepare(item, queries)
        finally:
            self.stats.add_time("prepare", started)

    def _finish(self) -> None:
        """Run the fold and commit of the last prepared changeset, if any."""
        unfinished, self._unfinished = self._unfinished, None
        if unfinished is not None:
            started = time.perf_counter()
            unfinished()
            self.stats.add_time("finish", started)

    def _take_and_prepare(self) -> None:
        """Beside the next changeset's replay: take the untaken changeset, finish the one
        before it, and prepare it. Raises LockConflict on any lock; what was done stays
        done (a take received is kept), and settle() does the rest alone."""
        assert self._untaken is not None and self.shadow.admin is not None
        admin = self.shadow.admin
        admin.pgconn.send_query(_BEGIN_BESIDE + b"; EXECUTE " + TAKE_STATEMENT.encode()
                                + b"; COMMIT")
        self._finish()  # this process's work, while both connections' servers work
        started = time.perf_counter()
        touched = self._receive_take(admin)
        self.stats.add_time("take", started)
        item, self._untaken = self._untaken, None
        self._unprepared = replace(item, touched=touched)
        self._unfinished = self._timed_prepare(self._unprepared, RenderQueries(admin))
        self._unprepared = None

    def _receive_take(self, admin: psycopg.Connection[Any]) -> TouchedObjects | None:
        """The take's outcome. Raises LockConflict (rolled back, nothing taken) if it
        failed: on a lock, or for any other reason, which the take alone (settle) will
        meet again and handle."""
        results = _results(admin.pgconn)
        failed = [r for r in results if r.status == psycopg.pq.ExecStatus.FATAL_ERROR]
        if failed or len(results) != 4:
            sqlstate = failed[0].error_field(psycopg.pq.DiagnosticField.SQLSTATE) if failed else None
            message = failed[0].error_message.decode(errors="replace") if failed else "no result"
            _roll_back_tool(admin)
            if sqlstate == b"26000":  # gone: psycopg deallocates all after a DROP or ALTER
                self.shadow.prepare_take()
            raise LockConflict(
                f"the take beside the next changeset failed ({(sqlstate or b'').decode()}): "
                f"{message.strip()}"
            )
        triggers, taken, resolved = (results[2].get_value(0, column) for column in range(3))
        return self.shadow.touched_from(
            int(triggers or b"0"),
            json.loads(taken) if taken is not None else [],
            json.loads(resolved) if resolved is not None else None,
        )

    def _run_script(
        self, script: bytes, *, beside: Callable[[], None], hold_commit: bool = False
    ) -> bool:
        """Send a changeset's script, run `beside` while the server works, read the results.

        With `hold_commit` (a script without COMMIT), COMMIT is sent only once `beside`
        has returned. False, with everything rolled back, if anything failed; a
        LockConflict from `beside` is raised once the changeset is rolled back.
        """
        self.stats.replays += 1
        pgconn = self.shadow.conn.pgconn
        failed = False
        conflict: LockConflict | None = None
        try:
            with self.shadow.watched():
                pgconn.send_query(script)
                try:
                    beside()
                except LockConflict as exc:
                    conflict = exc
                finally:
                    started = time.perf_counter()
                    failed = not _all_results_ok(pgconn)
                    self.stats.add_time("replay", started)
                if hold_commit and not failed and conflict is None:
                    pgconn.send_query(b"COMMIT")  # may fail: a deferred constraint trigger
                    failed = not _all_results_ok(pgconn)
        except psycopg.Error as exc:
            raise ShadowError(f"the shadow connection is unusable: {exc}") from exc
        if failed or conflict is not None:
            self.shadow.roll_back()
            if conflict is not None:
                raise conflict
            return False
        return True


# How work beside an uncommitted changeset starts: it must never wait for a lock.
_BEGIN_BESIDE = b"BEGIN; SET LOCAL lock_timeout = '1ms'"


def _roll_back_tool(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        # Not through psycopg, which deallocates every prepared statement after a
        # ROLLBACK: the render queries' plans are worth keeping.
        conn.pgconn.exec_(b"ROLLBACK")


def _results(pgconn: psycopg.pq.abc.PGconn) -> list[psycopg.pq.abc.PGresult]:
    """Wait for the results of a query sent with send_query, and return them.

    A failure ends a simple-query message: the server skips the rest of it, so a failed
    result is the last.
    """
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        select.select([pgconn.socket], [], [])
    results = []
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    return results


def _all_results_ok(pgconn: psycopg.pq.abc.PGconn) -> bool:
    """Wait for the results of a query sent with send_query; False if one failed."""
    return all(r.status != psycopg.pq.ExecStatus.FATAL_ERROR for r in _results(pgconn))


def may_lock_out(changeset: Changeset, before: Changeset) -> bool:
    """Whether `changeset` likely locks ACCESS EXCLUSIVE a relation that the take of
    `before` will render (or a view's render will read): a take beside its replay would
    then end in a LockConflict, which costs a replay more than taking first. A guess from
    the texts: it alters, drops or replaces a relation that `before`'s text names, or a
    view (which the take renders if `before` altered a relation under it) after `before`
    altered a relation."""
    text, before_text = changeset.sql or "", before.sql or ""
    locked = relations_locked_exclusive(text)
    if not locked:
        return False
    if not locked.isdisjoint(identifiers(before_text)):
        return True
    return locks_a_view(text) and bool(relations_locked_exclusive(before_text))


# Which relations a text's statements lock ACCESS EXCLUSIVE, roughly: a heuristic
# (see relations_locked_exclusive), so plain patterns over the whole text.
_NAME = IDENTIFIER_PATTERN
_QUALIFIED = rf"{_NAME}(?:\s*\.\s*{_NAME})*"
_EXCLUSIVE_STATEMENT = re.compile(
    r"(?:^|;)\s*(?:--[^\n]*\n\s*)*"
    r"(?:(?:ALTER|DROP)\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW|INDEX|SEQUENCE|FOREIGN\s+TABLE)"
    r"|CREATE\s+OR\s+REPLACE\s+(?:VIEW|RULE)|CREATE\s+(?:RULE|POLICY)"
    r"|(?:DROP|ALTER)\s+(?:POLICY|TRIGGER|RULE)"
    r"|TRUNCATE(?:\s+TABLE)?|REFRESH\s+MATERIALIZED\s+VIEW|LOCK(?:\s+TABLE)?|CLUSTER"
    r"|REINDEX\s+(?:TABLE|INDEX))\b"
    r"(?:\s+IF\s+EXISTS|\s+ONLY|\s+CONCURRENTLY)*\s+"
    rf"(?P<names>{_QUALIFIED}(?:\s*,\s*{_QUALIFIED})*)"
    rf"(?:[^;]*?\b(?:ON\s+(?:SELECT|INSERT|UPDATE|DELETE)\s+TO|ON|TO)\s+(?P<on>{_QUALIFIED}))?",
    re.I,
)
_IDENTIFIER = re.compile(_NAME)


def relations_locked_exclusive(text: str) -> set[str]:
    """The names (last part, catalog spelling) of the relations that the text's
    ALTER TABLE, DROP VIEW, CREATE OR REPLACE VIEW, TRUNCATE and the like name:
    what they lock ACCESS EXCLUSIVE. A heuristic over the text, for deciding
    whether to run a take beside the text's replay; never used for correctness."""
    found = set()
    for match in _EXCLUSIVE_STATEMENT.finditer(text):
        for group in (match["names"], match["on"]):
            for qualified in (group or "").split(","):
                parts = _IDENTIFIER.findall(qualified)
                if parts:
                    found.add(catalog_name(parts[-1]))
    return found


_VIEW_STATEMENT = re.compile(
    r"(?:^|;)\s*(?:--[^\n]*\n\s*)*(?:(?:ALTER|DROP)\s+(?:MATERIALIZED\s+)?VIEW"
    r"|CREATE\s+OR\s+REPLACE\s+VIEW|REFRESH\s+MATERIALIZED\s+VIEW)\b",
    re.I,
)


def locks_a_view(text: str) -> bool:
    """Whether the text alters, drops, replaces or refreshes a view (heuristic)."""
    return _VIEW_STATEMENT.search(text) is not None


def identifiers(text: str) -> set[str]:
    """Every word of the text that could be a name, in catalog spelling."""
    return {catalog_name(word) for word in _IDENTIFIER.findall(text)}

