"""One progress event for every long command: export, demo, mirror and restore.

A command's library function takes an optional callback, called with a `ProgressEvent`
after each unit of work (a changeset replayed, a commit mirrored, a statement restored);
the CLI turns the events into a progress bar. A callback that raises stops the command
(the repository stays as intact as after any interruption)::

    from pggit_export import ExportOptions, ProgressEvent, export_history

    def show(event: ProgressEvent) -> None:
        print(f"{event.done}/{event.total} {event.unit}", end="\\r")

    export_history("dbname=app", "app-schema", ExportOptions(progress=show))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """Where a long command stands: `done` of `total` `unit`s of its `task`."""

    task: str  # "export", "mirror", "restore"
    done: int
    total: int | None  # None: not known in advance
    unit: str  # "history rows", "commits", "statements"
    # Export only: changesets (commits-to-be) done so far, besides the rows.
    changesets: int | None = None


Progress = Callable[[ProgressEvent], None]
