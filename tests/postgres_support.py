"""Real PostgreSQL servers for tests: throwaway clusters on free loopback ports.

``PostgresServer`` runs a cluster of Debian's ``postgresql`` package (the newest
``/usr/lib/postgresql/*/bin``) in a temporary directory (under ``/dev/shm`` when there is
one). ``initdb`` refuses to run as root, so as root every PostgreSQL command runs as the
``postgres`` user (``runuser``) in a directory it owns. ``initdb`` runs once per process, into a
template that each server copies; the servers are tuned for tests (no fsync, small buffers), so
they start in a fraction of a second; a crash of the machine would lose data, a crash of the
server does not (:meth:`PostgresServer.kill` is a crash PostgreSQL recovers from, with every
acknowledged commit).

The fixtures (in ``conftest.py``): ``postgres_server`` gives a test its own server (for tests
that stop or kill it); ``postgres_session`` is one server for the whole session (create a
database of your own on it with :meth:`PostgresServer.create_database`). Every server still
running when the process exits is stopped (an ``atexit`` guard), so a failed test leaves none
behind.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from redis_support import free_port

__all__ = ["PostgresServer", "postgres_bin"]

TEST_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "200",
    "max_wal_size": "256MB",
    "dynamic_shared_memory_type": "mmap",  # in the data directory: a crash leaves none behind
    "log_min_messages": "warning",
    "log_checkpoints": "off",
}
"""Appended to the template's ``postgresql.conf``: speed over durability, for tests only. A
commit is still written (not flushed) before it is acknowledged (``synchronous_commit`` stays
on), so a crash of the server loses nothing acknowledged; only a crash of the machine would."""

_LIVE: set[PostgresServer] = set()
_TEMPLATE: list[Path] = []


def postgres_bin() -> Path:
    """The ``bin`` directory of the newest PostgreSQL installed from Debian's packages."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql)")
    return Path(found[-1]).parent


def _as_postgres() -> list[str]:
    """The prefix that runs a command as ``postgres`` when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


_MEMORY = "/dev/shm"
"""Where clusters live when it exists: a memory file system (copying a cluster there takes
milliseconds, on disk most of a second)."""


def _owned_directory(prefix: str) -> Path:
    """A new temporary directory that PostgreSQL's user owns (and nobody else can read)."""
    base = _MEMORY if os.access(_MEMORY, os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (directory / "made-by.pid").write_text(str(os.getpid()))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
    return directory


def _run(*command: str | Path, timeout: float = 60) -> None:
    result = subprocess.run(
        [*_as_postgres(), *map(str, command)], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(str(command[0])).name} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def _reap_orphans() -> None:
    """Stop the servers, and remove the directories, that a test process killed before it
    could clean up left behind (its ``made-by.pid`` names a process that is gone)."""
    base = Path(_MEMORY if os.access(_MEMORY, os.W_OK) else tempfile.gettempdir())
    for directory in base.glob("hubbub-pg-*"):
        try:
            maker = int((directory / "made-by.pid").read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{maker}").exists():
            continue
        pid_file = directory / "data" / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(Exception):
                _run(postgres_bin() / "pg_ctl", "-D", pid_file.parent, "-m", "immediate", "stop")
        shutil.rmtree(directory, ignore_errors=True)


def _template() -> Path:
    """The data directory ``initdb`` made for this process (made on first use)."""
    if not _TEMPLATE:
        _reap_orphans()
        directory = _owned_directory("hubbub-pg-template-")
        atexit.register(shutil.rmtree, directory, True)
        data = directory / "data"
        _run(
            postgres_bin() / "initdb",
            "-D", data,
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--wal-segsize=1",
            "--no-instructions",
        )  # fmt: skip
        settings = "".join(f"{key} = {value}\n" for key, value in TEST_SETTINGS.items())
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# hubbub tests\n" + settings)
        _TEMPLATE.append(data)
    return _TEMPLATE[0]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's backends and workers)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(Path(stat).parent.name))
    return found


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] in "ZX"


class PostgresServer:
    """One throwaway PostgreSQL cluster on 127.0.0.1, restartable on the same port.

    :param directory: where the cluster lives (its data in ``data/``, its socket and log beside
        it); it must be reachable by the ``postgres`` user. Default: a new temporary directory,
        removed by :meth:`stop`.
    """

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self._own_directory = directory is None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                os.chown(directory, user.pw_uid, user.pw_gid)
        self.directory = directory or _owned_directory("hubbub-pg-")
        self.data = self.directory / "data"
        self.port = port or free_port()
        self.bin = postgres_bin()
        self.pid: int | None = None
        """The postmaster's process id while the server runs."""

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust: no password needed)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Start the server (a copy of the template cluster on first start) and wait until it
        accepts connections."""
        if not self.data.exists():
            subprocess.run(["cp", "-a", str(_template()), str(self.data)], check=True)
        log = self.directory / "log"
        try:
            _run(
                self.bin / "pg_ctl",
                "-D", self.data,
                "-l", log,
                "-o", f"-p {self.port} -k {self.directory}",
                "-w", "-t", "60",
                "start",
            )  # fmt: skip
        except RuntimeError as exc:
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise RuntimeError("\n".join([str(exc), *tail])) from None
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        _LIVE.add(self)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m <mode>``, killed if that fails), keeping its
        files: ``immediate`` is a crash PostgreSQL recovers from at the next :meth:`start`."""
        if self.pid is not None:
            try:
                _run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.kill()
            self.pid = None

    def close(self) -> None:
        """Stop the server for good (nothing is kept) and remove its directory when it made
        one. What the fixtures call after a test."""
        self.stop("immediate")
        _LIVE.discard(self)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every process it started, at once.
        Clients see their connections drop; the next :meth:`start` recovers the cluster."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # no new backend while we list them
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not all(_gone(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {victims} did not die")
            time.sleep(0.01)
        # Nobody may reap the dead postmaster (it is not our child): its zombie would look
        # alive to the next postmaster, which reads its pid from these lock files.
        socket = self.directory / f".s.PGSQL.{self.port}"
        for lock in (self.data / "postmaster.pid", socket, Path(f"{socket}.lock")):
            lock.unlink(missing_ok=True)

    def restart(self) -> None:
        """Crash the server (:meth:`kill`) and start it again on the same port."""
        self.kill()
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``name`` or a fresh one) and return its URL."""
        import psycopg

        name = name or f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, pid={self.pid})"


@atexit.register
def _stop_every_server() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()
