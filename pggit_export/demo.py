"""`pggit-export demo`: export a bundled, realistic v1 history with no setup at all."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pggit_export.export import ExportOptions, ExportReport, export_history
from pggit_export.progress import Progress
from pggit_export.shadow.server import EmbeddedServer, connect_shadow


def demo_history_sql() -> str:
    """The bundled demo source database (fixtures/demo_history.sql) as SQL text."""
    return resources.files("pggit_export").joinpath("data/demo_history.sql").read_text("utf-8")


def run_demo(
    directory: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> ExportReport:
    """Load the demo history into a private PostgreSQL and export it to `directory`.

    One server holds both the demo source database and the shadow's scratch
    database, so the demo starts a single server.
    """
    with EmbeddedServer() as server:
        with connect_shadow(server.conninfo("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop TEMPLATE template0 ENCODING 'UTF8'")
        with connect_shadow(server.conninfo("shop")) as conn:
            conn.execute(demo_history_sql())  # type: ignore[arg-type]
        return export_history(
            server.conninfo("shop"),
            Path(directory),
            ExportOptions(shadow_dsn=server.conninfo("postgres"), progress=progress),
        )
