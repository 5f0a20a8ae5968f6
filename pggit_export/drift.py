"""`pggit-export drift`: the live schema against the head of the exported history.

What exists live that the history never recorded (untracked commands, manual
hotfixes), and what the history says exists but is gone. The live schema is
rendered exactly as the export renders snapshots, so the comparison is file by
file. `export --reconcile` turns the same difference into a commit.

The live side is any database: pgGit's tables are needed only to write the
history, not to compare with it, so a restored copy or a staging database
compares as well as the source itself. `DriftReport.format_diff` shows the
difference as a unified diff, the history (a/) against live (b/), like `git diff`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from pggit_export.errors import EXIT_INCOMPLETE, EXIT_OK
from pggit_export.read.history import SourceError, with_connect_timeout
from pggit_export.render.layout import snapshot_files
from pggit_export.render.snapshot import DEFAULT_EXCLUDED_SCHEMAS, render_snapshot
from pggit_export.restore import read_snapshot


@dataclass
class DriftReport:
    """Paths that differ between the live schema and the head snapshot."""

    commit: str
    only_live: list[str] = field(default_factory=list)  # never recorded
    only_history: list[str] = field(default_factory=list)  # gone from the database
    changed: list[str] = field(default_factory=list)
    # The texts of the differing files, for `format_diff`; not part of the report.
    live_files: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    history_files: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def clean(self) -> bool:
        return not (self.only_live or self.only_history or self.changed)

    @property
    def exit_code(self) -> int:
        """EXIT_OK when nothing drifted, else EXIT_INCOMPLETE (the differing files are listed)."""
        return EXIT_OK if self.clean else EXIT_INCOMPLETE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["live_files"], data["history_files"]
        return {**data, "clean": self.clean}

    def format_text(self) -> str:
        lines = [f"Live database against commit {self.commit[:12]}:"]
        for title, paths in (
            ("exists live, never recorded in the history", self.only_live),
            ("in the history, gone from the live database", self.only_history),
            ("differs between the live database and the history", self.changed),
        ):
            if paths:
                lines.append(f"  {len(paths)} {title}:")
                lines += [f"    {p}" for p in paths]
        lines.append("  no drift" if self.clean else
                     "  (export --reconcile ends the history with a commit that removes the drift)")
        return "\n".join(lines)


    def format_diff(self) -> str:
        """A unified diff per differing file, the history (a/) against live (b/), as
        `git diff` prints it: a file only live comes from /dev/null, one gone goes to it."""
        out: list[str] = []
        for path in sorted(self.only_live + self.only_history + self.changed):
            old = self.history_files.get(path)
            new = self.live_files.get(path)
            out.append(f"diff --git a/{path} b/{path}")
            if old is None:
                out.append("new file mode 100644")
            elif new is None:
                out.append("deleted file mode 100644")
            out += [
                line.rstrip("\n") for line in difflib.unified_diff(
                    (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
                    fromfile="/dev/null" if old is None else f"a/{path}",
                    tofile="/dev/null" if new is None else f"b/{path}",
                )
            ]
        return "\n".join(out)


def live_files(
    conninfo: str, exclude_schemas: tuple[str, ...] = DEFAULT_EXCLUDED_SCHEMAS,
) -> dict[str, str]:
    """The schema of any database, rendered as the export renders a snapshot; read only."""
    try:
        conn = psycopg.connect(with_connect_timeout(conninfo))
    except psycopg.OperationalError as exc:
        raise SourceError(f"cannot connect to the source database: {exc}".strip()) from exc
    with conn:
        conn.read_only = True
        files = snapshot_files(render_snapshot(conn, exclude_schemas=exclude_schemas))
        conn.rollback()  # read only: nothing to keep
    return files


def drift_report(
    source: str, repository: str | os.PathLike[str], *, branch: str = "main",
    at: str | None = None, exclude_schemas: tuple[str, ...] = DEFAULT_EXCLUDED_SCHEMAS,
) -> DriftReport:
    """Compare the live schema of any database `source` (read only) with the head of
    `branch`, or the commit `at` names (see `restore.resolve_commit`)."""
    commit, history = read_snapshot(repository, at=at, branch=branch)
    live = live_files(source, exclude_schemas)
    only_live = sorted(set(live) - set(history))
    only_history = sorted(set(history) - set(live))
    changed = sorted(p for p in set(live) & set(history) if live[p] != history[p])
    differing = set(only_live + only_history + changed)
    return DriftReport(
        commit=commit.id.decode(), only_live=only_live, only_history=only_history,
        changed=changed,
        live_files={p: t for p, t in live.items() if p in differing},
        history_files={p: t for p, t in history.items() if p in differing},
    )
