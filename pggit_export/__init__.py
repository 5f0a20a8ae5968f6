"""pggit-export: turn a pgGit v1 schema history into a real Git repository.

The pipeline, one package per stage, in the order data flows::

    read/     -> shadow/          -> render/                -> git/       -> mirror/
    (v1 rows)    (replay, heal)      (one file per object)     (dulwich)     (v2 tables)

``export.py`` wires the stages together; ``check``, ``restore`` and ``drift`` are the other
commands, and ``cli.py`` is a thin layer over the functions exported here.

Python API::

    from pggit_export import export_history, ExportOptions
    report = export_history("postgresql://me@db/app", "app-schema")
    print(report.head)

Every command's library function is exported here; each returns a report with
``format_text()`` and ``exit_code`` (the command line prints the one and exits with the
other). Every error meant for the caller derives from :class:`PggitExportError`; the long
commands take a progress callback, called with a :class:`ProgressEvent`.
"""

__version__ = "0.1.0"

from pggit_export.check import CheckReport, check_history  # noqa: E402
from pggit_export.demo import run_demo  # noqa: E402
from pggit_export.drift import DriftReport, drift_report  # noqa: E402
from pggit_export.errors import (  # noqa: E402
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PggitExportError,
)
from pggit_export.export import ExportOptions, ExportReport, export_history  # noqa: E402
from pggit_export.mirror.verify import VerifyReport, verify_mirror  # noqa: E402
from pggit_export.mirror.write import MirrorOptions, MirrorReport, mirror_repository  # noqa: E402
from pggit_export.progress import Progress, ProgressEvent  # noqa: E402
from pggit_export.restore import (  # noqa: E402
    RestoreReport,
    SnapshotScript,
    restore_snapshot,
    snapshot_script,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CheckReport",
    "DriftReport",
    "ExportOptions",
    "ExportReport",
    "MirrorOptions",
    "MirrorReport",
    "PggitExportError",
    "Progress",
    "ProgressEvent",
    "RestoreReport",
    "SnapshotScript",
    "VerifyReport",
    "__version__",
    "check_history",
    "drift_report",
    "export_history",
    "mirror_repository",
    "restore_snapshot",
    "run_demo",
    "snapshot_script",
    "verify_mirror",
]
