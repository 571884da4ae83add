"""``hubbub keys`` run as a real subprocess: what it makes and lists (scopes, models, expiry), and
when things are wrong: a damaged account store or one that cannot be written gives one line and
exit code 1 (never a traceback), and user names, scopes and models are checked (a usage error,
exit code 2, naming the option)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_cli

TRACE_MARKERS = ("Traceback", 'File "', '.py", line')


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    output = result.stdout + result.stderr
    for marker in TRACE_MARKERS:
        assert marker not in output, output
    assert result.returncode == code, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


def create(tmp_path: Path, user: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["keys", "create", "--user", user, *extra], cwd=tmp_path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the directory ``path`` read-only for this user, root included (a read-only tmpfs
    mounted over it, keeping what it held), or skip when this machine cannot."""
    kept = {child.name: child.read_bytes() for child in path.iterdir() if child.is_file()}
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("root without mount: no way to make a directory read-only")

    def mount(*args: str) -> bool:
        done = subprocess.run(["mount", *args], capture_output=True, check=False)
        return done.returncode == 0

    if not mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        for name, content in kept.items():
            (path / name).write_bytes(content)
        assert mount("-o", "remount,ro", str(path))
        yield
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)


@pytest.fixture
def keys_elsewhere(tmp_path: Path) -> Path:
    """A configuration (``./hubbub.toml``) that keeps the account store (where keys are) in
    ``./keys``."""
    directory = tmp_path / "keys"
    directory.mkdir()
    (tmp_path / "hubbub.toml").write_text(
        f'[plugins.sqlite_store]\naccounts_path = "{directory / "accounts.sqlite3"}"\n'
    )
    return directory


# -- what the commands make and show ---------------------------------------------------------


def test_a_restricted_key_is_made_and_listed_with_its_restrictions(tmp_path: Path) -> None:
    made = create(
        tmp_path,
        "alice",
        "--name",
        "ci",
        "--scope",
        "chat",
        "--scope",
        "memory",
        "--model",
        "offline/echo",
        "--expires-in",
        "2",
        "--admin",
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"hbk_[0-9a-f]{16}_[A-Za-z0-9_\-]{43}", key)
    key_id = key.split("_")[1]
    listed = run_cli(["keys", "list"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"{key_id}  alice  active  ci  ")
    for needle in ("models=offline/echo", "scopes=chat,memory", "admin", "expires="):
        assert needle in line
    assert key.split("_", 2)[2] not in listed.stdout + listed.stderr
    revoked = run_cli(["keys", "revoke", key_id], cwd=tmp_path)
    assert revoked.stdout.strip() == f"revoked API key {key_id}"
    assert f"{key_id}  alice  revoked" in run_cli(["keys", "list"], cwd=tmp_path).stdout
    assert_one_line(run_cli(["keys", "revoke", key_id], cwd=tmp_path), 1, key_id)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--scope", "has space"], "--scope"),
        (["--scope", "model:offline/echo"], "--scope"),
        (["--model", ""], "--model"),
        (["--expires-in", "0"], "--expires-in"),
        (["--expires-in", "-1"], "--expires-in"),
    ],
)
def test_bad_restrictions_are_usage_errors(tmp_path: Path, args: list[str], option: str) -> None:
    result = create(tmp_path, "alice", *args)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr
    assert not (tmp_path / "home").exists()  # nothing was touched


def test_a_model_no_provider_serves_is_one_line(tmp_path: Path) -> None:
    assert_one_line(
        create(tmp_path, "alice", "--model", "offline/nope"), 1, "offline/nope", "offline/echo"
    )
    assert run_cli(["keys", "list"], cwd=tmp_path).stdout == ""


# -- a damaged or read-only account store ---------------------------------------------------


def test_a_garbled_account_store_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "accounts.sqlite3").write_bytes(b"garbage " * 1000)
    for args in (["keys", "list"], ["keys", "create", "--user", "alice"], ["keys", "revoke", "x"]):
        assert_one_line(
            run_cli(args, cwd=tmp_path), 1, "accounts 'sqlite'", "file is not a database"
        )


def test_damaged_pages_are_one_line(tmp_path: Path) -> None:
    for user in ("alice", "bob", "carol"):
        assert create(tmp_path, user, "--name", "x" * 90).returncode == 0
    path = tmp_path / "home" / "accounts.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = bytearray(path.read_bytes())
    damaged[4096:] = b"Z" * (len(damaged) - 4096)  # every page but the first
    path.write_bytes(bytes(damaged))
    assert_one_line(run_cli(["keys", "list"], cwd=tmp_path), 1, "malformed")


def test_an_account_store_that_cannot_be_created_is_one_line(
    tmp_path: Path, keys_elsewhere: Path
) -> None:
    with read_only(keys_elsewhere):
        for result in (create(tmp_path, "alice"), run_cli(["keys", "list"], cwd=tmp_path)):
            assert_one_line(result, 1, "accounts 'sqlite'", "unable to open")
    assert not (tmp_path / "home" / "credentials-provisioned").exists()


def test_an_account_store_on_a_read_only_disk_is_one_line(
    tmp_path: Path, keys_elsewhere: Path
) -> None:
    assert create(tmp_path, "alice").returncode == 0
    with read_only(keys_elsewhere):
        for args in (
            ["keys", "list"],
            ["keys", "create", "--user", "bob"],
            ["keys", "revoke", "0123456789abcdef"],
        ):
            assert_one_line(run_cli(args, cwd=tmp_path), 1, "accounts 'sqlite'")


def test_a_read_only_home_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with read_only(home):
        for args in (["keys", "list"], ["keys", "create", "--user", "alice"]):
            result = run_cli(args, cwd=tmp_path)
            assert result.returncode != 0
            assert_one_line(result, result.returncode, str(home))


# -- user names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        (" alice", "spaces"),
        ("alice ", "spaces"),
        ("al ice", "not valid"),
        ("al\tice", "not valid"),
        ("-alice", "not valid"),
        ("x" * 65, "not valid"),
        ("alice/../bob", "not valid"),
    ],
)
def test_an_invalid_user_name_is_a_usage_error(tmp_path: Path, user: str, says: str) -> None:
    assert_one_line(create(tmp_path, user), 2, "--user", says)
    assert_one_line(run_cli(["keys", "list", "--user", user], cwd=tmp_path), 2, "--user")
    assert not (tmp_path / "home").exists()  # nothing was touched


@pytest.mark.parametrize("user", ["local", "alice@example.com", "a.b-c_d+e", "x" * 64, "Bob42"])
def test_valid_user_names_are_accepted(tmp_path: Path, user: str) -> None:
    made = create(tmp_path, user)
    assert made.returncode == 0, made.stderr
    listed = run_cli(["keys", "list", "--user", user], cwd=tmp_path)
    assert f"  {user}  active" in listed.stdout


def test_a_label_with_control_characters_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line(create(tmp_path, "alice", "--name", "lap\x1b[2Jtop"), 2, "--name")
