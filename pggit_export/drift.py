"""`pggit-export drift`: the live schema against the head of the exported history.

What exists live that the history never recorded (untracked commands, manual
hotfixes), and what the history says exists but is gone. The live schema is
rendered exactly as the export renders snapshots, so the comparison is file by
file. `export --reconcile` turns the same difference into a commit.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from pggit_export.read.history import HistoryReader
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

    @property
    def clean(self) -> bool:
        return not (self.only_live or self.only_history or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}

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


def drift_report(
    source: str, repository: str | os.PathLike[str], *, branch: str = "main",
    exclude_schemas: tuple[str, ...] = DEFAULT_EXCLUDED_SCHEMAS,
) -> DriftReport:
    """Compare the live schema of `source` (read only) with the head of `branch`."""
    commit, history = read_snapshot(repository, branch=branch)
    with HistoryReader(source) as reader:
        live = snapshot_files(render_snapshot(reader.conn, exclude_schemas=exclude_schemas))
    return DriftReport(
        commit=commit.id.decode(),
        only_live=sorted(set(live) - set(history)),
        only_history=sorted(set(history) - set(live)),
        changed=sorted(p for p in set(live) & set(history) if live[p] != history[p]),
    )
