"""The one base class of every error the library raises for a caller to handle.

Each stage raises its own subclass, named for what could not be done (``SourceError``: the
source could not be read; ``ShadowError``: the shadow could not replay; ``RepositoryError``:
the repository could not be written; ...), so ``except PggitExportError`` catches every
failure that is the input's or the environment's, and nothing that is a bug of ours.
"""

from __future__ import annotations


class PggitExportError(Exception):
    """A failure the caller can act on: bad input, an unreachable server, a refused write."""


# The exit codes of `pggit-export`, here so that each report's `exit_code` (the library's
# verdict on its run) and the command line agree. Each command's --help says what they
# mean for it.
EXIT_OK = 0  # done, nothing to report
EXIT_INCOMPLETE = 1  # done, with something to look at: failed changesets, findings, drift
EXIT_USAGE = 2  # bad usage: an unknown option, a missing argument, a malformed value
EXIT_ERROR = 3  # could not run: a PggitExportError, a database or file system failure
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)
