"""Where the keyring that signs access tokens comes from, and how it changes.

In order: ``HUBBUB_SIGNING_KEYS`` (a keyring file's contents, for secret managers that hand
out environment variables), ``[sessions] signing_keys`` (a keyring file), or, for the embedded
default only, ``signing-keys.json`` in the data directory, generated on first start (and
logged: processes on several hosts must share one keyring, so they need one of the first two).

``hubbub keys rotate-signing`` rewrites the file with a new signing key, the previous one kept
verifying until the access tokens it signed have expired; running servers notice the new file
within seconds (:meth:`KeyringSource.reload`)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from hubbub.auth.tokens import Keyring, dump_keyring, load_keyring
from hubbub.config import Config
from hubbub.errors import ConfigError, ConfigIssue

__all__ = ["ENV_VAR", "GENERATED_NAME", "KeyringSource", "write_keyring"]

logger = logging.getLogger("hubbub.auth")

ENV_VAR = "HUBBUB_SIGNING_KEYS"
"""The environment variable that may hold the keyring."""

GENERATED_NAME = "signing-keys.json"
"""The generated keyring's file name, in the data directory."""


ROTATION_DELAY = 10.0
"""Seconds a rotated-in key verifies before it signs: every server polls the keyring file
every 5 seconds, so by then all of them accept what it signs."""


def write_keyring(path: Path, keyring: Keyring, *, replace: bool = True) -> bool:
    """Write ``keyring`` to ``path`` atomically and durably, readable by its owner only (a
    file replaced keeps its owner and mode). With ``replace=False``, only if ``path`` does
    not exist yet; returns whether it was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(dump_keyring(keyring))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        if not replace:
            try:
                os.link(temporary, path)  # atomic "create if absent", complete when seen
            except FileExistsError:
                return False
            return True
        with contextlib.suppress(FileNotFoundError):
            old = path.stat()
            os.chmod(temporary, old.st_mode & 0o777)
            with contextlib.suppress(PermissionError):
                os.chown(temporary, old.st_uid, old.st_gid)
        os.replace(temporary, path)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _problem(message: str) -> ConfigError:
    return ConfigError([ConfigIssue(path="sessions.signing_keys", message=message)])


class KeyringSource:
    """The configured keyring, and the file it was read from (``None``: the environment)."""

    def __init__(self, config: Config, *, account_store: str = "sqlite") -> None:
        self.config = config
        self.account_store = account_store
        """The registered name of the account store in use: a keyring is generated only
        with the one-host ``sqlite`` store."""
        self.path: Path | None = None
        self.keyring: Keyring | None = None
        self._stamp: tuple[int, int] | None = None

    def file_path(self) -> Path | None:
        """The keyring file in use (``None`` when it comes from the environment)."""
        sessions = self.config.sessions
        if self.config.env.get(ENV_VAR):
            return None
        if sessions.signing_keys:
            path = Path(sessions.signing_keys).expanduser()
            if not path.is_absolute() and self.config.source:
                path = Path(self.config.source).parent / path
            return path
        return self.config.data_dir / GENERATED_NAME

    def load(self) -> Keyring:
        """Read the keyring (generating the data directory's on first use); a
        :class:`ConfigError` saying what is wrong."""
        text = self.config.env.get(ENV_VAR)
        if text:
            self.keyring = self._parse(text.encode(), ENV_VAR)
            return self.keyring
        path = self.file_path()
        assert path is not None
        if not self.config.sessions.signing_keys and not path.exists():
            self._refuse_to_generate_for_a_shared_store()
            self._generate(path)
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            raise _problem(
                f"cannot read the signing keyring {path}: {exc.strerror or exc} "
                "(`hubbub keys rotate-signing` creates one)"
            ) from None
        self.path = path
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self.keyring = self._parse(data, str(path))
        return self.keyring

    def _refuse_to_generate_for_a_shared_store(self) -> None:
        """A keyring generated here would be this host's alone: servers sharing a PostgreSQL
        or Redis account store (several hosts, by design) must share a configured one."""
        backend = self.account_store
        if backend != "sqlite":
            raise _problem(
                f"the account store is {backend!r}, shared by several servers, so they must "
                "share one signing keyring: create it with `hubbub keys rotate-signing` after "
                f"setting [sessions] signing_keys to its path (or pass its contents in {ENV_VAR})"
            )

    def _generate(self, path: Path) -> None:
        if write_keyring(path, Keyring.generate(self.config.sessions.algorithm), replace=False):
            logger.warning(
                "generated a signing keyring in %s: fine for one host; processes on several "
                "hosts must share one (set [sessions] signing_keys or %s)",
                path,
                ENV_VAR,
            )

    @staticmethod
    def _parse(data: bytes, where: str) -> Keyring:
        try:
            return load_keyring(data)
        except ValueError as exc:
            raise _problem(f"the signing keyring in {where} is not valid: {exc}") from None

    def reload(self) -> Keyring | None:
        """The keyring again if its file changed since it was read (``None`` otherwise, or
        when the new file is unreadable: the old keyring stays, and the log says why)."""
        path = self.path
        if path is None:
            return None
        try:
            stat = path.stat()
            if (stat.st_mtime_ns, stat.st_size) == self._stamp:
                return None
            keyring = self._parse(path.read_bytes(), str(path))
        except (OSError, ConfigError) as exc:
            logger.error("keeping the signing keyring in use: cannot reload %s: %s", path, exc)
            return None
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        self.keyring = keyring
        logger.info("signing keyring reloaded from %s (signing key %s)", path, keyring.signing.kid)
        return keyring

    def rotate(self, *, retire_after: float, activate_after: float = ROTATION_DELAY) -> Keyring:
        """Write a keyring with a new key to the file (created when missing): it verifies at
        once and signs after ``activate_after`` seconds; the keys in use verify for
        ``retire_after`` seconds more. Return it."""
        path = self.file_path()
        if path is None:
            raise _problem(
                f"the keyring comes from {ENV_VAR}: rotate a keyring file (set "
                "[sessions] signing_keys) and hand its new contents to the variable"
            )
        if not path.exists():
            keyring = Keyring.generate(self.config.sessions.algorithm)
            write_keyring(path, keyring, replace=False)
            logger.info("signing keyring created in %s", path)
            return self.load()
        current = self.load()
        rotated = current.rotated(retire_after=retire_after, activate_after=activate_after)
        write_keyring(path, rotated)
        logger.info("signing key added in %s", path)
        return rotated
