"""The one base class of every error the library raises for a caller to handle.

Each stage raises its own subclass, named for what could not be done (``SourceError``: the
source could not be read; ``ShadowError``: the shadow could not replay; ``RepositoryError``:
the repository could not be written; ...), so ``except PggitExportError`` catches every
failure that is the input's or the environment's, and nothing that is a bug of ours.
"""

from __future__ import annotations


class PggitExportError(Exception):
    """A failure the caller can act on: bad input, an unreachable server, a refused write."""
