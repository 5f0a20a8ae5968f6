"""pggit-export: turn a pgGit v1 schema history into a real Git repository.

The pipeline, one module per stage::

    reader   -> replay   -> snapshot (+ layout) -> gitwriter -> mirror
    (v1 rows)  (shadow)    (one file per object)   (dulwich)    (v2 tables)

Python API::

    from pggit_export import export_history, ExportOptions
    report = export_history("postgresql://me@db/app", "app-schema")
"""

__version__ = "0.1.0"

from .export import ExportOptions, ExportReport, export_history  # noqa: E402

__all__ = ["ExportOptions", "ExportReport", "export_history", "__version__"]
