"""Failing closed: a data directory remembers that credentials were ever set up for it.

Local mode serves callers without credentials only while no credential exists. If "no credential
exists" were judged from the credential stores alone, losing a store (a deleted or unreadable
``api_keys.sqlite3``) would silently re-open a server to anyone while every key stopped working.
So the first time a credential is created (``hubbub keys create``, or any method the server
finds provisioned), a marker file is written in the data directory; from then on, a missing or
empty store is an error (:class:`CredentialsLostError`) that stops the server at startup and
refuses requests while it runs, until the store is restored, or the marker deleted on purpose to
start over without credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from hubbub.errors import ComponentError

__all__ = ["MARKER_NAME", "CredentialsLostError", "ProvisioningMarker"]

logger = logging.getLogger("hubbub.auth")

MARKER_NAME = "credentials-provisioned"
"""The marker's file name, in the data directory."""

_HEADER = """\
# hubbub: credentials were set up for this data directory (one line per auth method below).
# While this file exists the server never falls back to local mode: if a credential store
# listed here is missing or empty, it refuses to start (and to serve) until it is restored.
# To start over without credentials on purpose, delete this file (and the store).
"""


class CredentialsLostError(ComponentError):
    """Credentials were set up for this data directory, but their store is missing, unreadable
    or empty: the server refuses to serve rather than fall back to local mode (HTTP 503)."""

    code = "credentials_lost"
    reported = True  # logged, throttled, where it is found


class ProvisioningMarker:
    """The marker file of one data directory (:data:`MARKER_NAME`): which auth methods have
    had credentials, and where each keeps them. Lines read ``<method>\\t<store>\\t<when>``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / MARKER_NAME
        """Where the marker is (or will be)."""

    def exists(self) -> bool:
        """Whether credentials were ever set up for this data directory."""
        return self.path.exists()

    def methods(self) -> dict[str, str]:
        """The auth methods recorded, each with where it keeps its credentials (empty when
        there is no marker). Raises :class:`OSError` when the marker exists but cannot be
        read."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return {}
        recorded: dict[str, str] = {}
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                method, _, rest = line.partition("\t")
                recorded[method.strip()] = rest.partition("\t")[0].strip()
        return recorded

    def records(self, method: str) -> bool:
        """Whether ``method`` had credentials in this data directory. Also true for a marker
        that lists no method, or that cannot be read: failing closed."""
        if not self.exists():
            return False
        try:
            recorded = self.methods()
        except OSError:
            return True
        return not recorded or method in recorded

    def record(self, method: str, store: str) -> None:
        """Remember that ``method`` has credentials, kept in ``store`` (a path, a URL without
        its password...). Idempotent; written atomically; raises :class:`OSError` when the
        data directory cannot be written (callers creating credentials must then stop)."""
        recorded = self.methods()
        if recorded.get(method) == store:
            return
        recorded[method] = store
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = [_HEADER, *(f"{name}\t{where}\t{when}\n" for name, where in recorded.items())]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{MARKER_NAME}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write("".join(lines))
            os.chmod(temporary, 0o644)  # as readable as the databases beside it
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        logger.info("recorded in %s that %s has credentials", self.path, method)

    def lost(self, what: str) -> CredentialsLostError:
        """The error for a lost store: ``what`` says what is wrong (``the API key database
        /x/api_keys.sqlite3 is missing``), the rest says how to recover."""
        return CredentialsLostError(
            f"{what}, but credentials were set up for this data directory ({self.path} says "
            "so): the server will not fall back to local mode. Restore the credential store "
            "from a backup (then restart the server), or, to start over without credentials "
            f"on purpose, delete {self.path}"
        )
