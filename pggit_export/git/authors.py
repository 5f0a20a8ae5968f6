"""Who a database user is in git: the git-svn authors-file format.

    # comments and blank lines are ignored
    alice = Alice Liddell <alice@example.com>
    deploy_bot = Deploy Bot <ops@example.com>

A user missing from the file (or every user, without one) becomes
`user <user@pggit.invalid>`: `.invalid` is the top-level domain reserved for
addresses that cannot exist, so nobody mistakes it for a real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pggit_export.errors import PggitExportError

DEFAULT_EMAIL_DOMAIN = "pggit.invalid"

_LINE = re.compile(r"^\s*(?P<user>[^=]+?)\s*=\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]*)>\s*$")


class AuthorsFileError(PggitExportError, ValueError):
    """The authors file has a line that is not `user = Name <email>`."""


@dataclass(frozen=True)
class Author:
    name: str
    email: str


def read_authors_file(path: str | Path) -> dict[str, Author]:
    """Parse an authors file; raises AuthorsFileError naming the bad line."""
    authors: dict[str, Author] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthorsFileError(f"cannot read the authors file {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise AuthorsFileError(
                f"{path}:{number}: expected 'dbuser = Full Name <email>', got {line.strip()!r}"
            )
        authors[match["user"]] = Author(match["name"], match["email"])
    return authors


def default_author(user: str) -> Author:
    """The documented mapping for a user the authors file does not name."""
    local = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in user)
    return Author(user, f"{local or 'unknown'}@{DEFAULT_EMAIL_DOMAIN}")
