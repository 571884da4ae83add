"""One clean structured log stream: with ``[logging] format = "json"`` every line a real
``hubbub serve`` writes is one JSON object, in one process or several (uvicorn's lines too),
with litellm configured (its records once, without the sentinel it attaches to records); a
broken plugin is reported once; log levels are accepted in any case."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_support import RedisServer

from hubbub.config import load_config
from hubbub.errors import ConfigError
from hubbub.log import ContextFilter, JsonFormatter, TextFormatter, configure_logging

HUBBUB = str(Path(sys.executable).parent / "hubbub")
READY_TIMEOUT = 60.0
"""Generous: litellm's import alone takes seconds on a busy machine."""

LITELLM_TOML = """\
[logging]
format = "json"

[[plugins.litellm_provider.models]]
name = "mock"
model = "openai/gpt-4o-mini"
api_key = "sk-not-used"
options = { mock_response = "Hello from the mocked API" }
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBBUB_", "LITELLM_LOG"))}
    env.update(HUBBUB_HOME=str(root / "home"), LITELLM_LOCAL_MODEL_COST_MAP="True", **extra)
    return env


@dataclass
class Output:
    """What a ``hubbub`` process wrote."""

    code: int | None
    stdout: str
    stderr: str

    def records(self) -> list[dict[str, Any]]:
        """Every line of both streams as a JSON object; fails on a line that is not one."""
        records = []
        for stream, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    raise AssertionError(f"not JSON on {stream}: {line!r}") from None
                assert isinstance(record, dict), line
                assert {"ts", "level", "logger", "message"} <= set(record), line
                records.append(record)
        return records


@contextlib.contextmanager
def serving(root: Path, toml: str, *args: str, **env: str) -> Iterator[tuple[str, Output]]:
    """``hubbub serve ARGS`` with ``toml`` on a free port until the block ends (then SIGINT);
    yields its URL and an :class:`Output` filled in once it has stopped."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "hubbub.toml"
    config.write_text(textwrap.dedent(toml))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    out, err = root / "stdout.log", root / "stderr.log"
    output = Output(None, "", "")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [HUBBUB, "serve", "--config", str(config), "--port", str(port), *args],
            env=_env(root, **env),
            cwd=root,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            _wait_ready(process, url, err)
            yield url, output
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                output.code = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                output.code = process.wait(30)
    output.stdout = out.read_text(errors="replace")
    output.stderr = err.read_text(errors="replace")


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"hubbub serve exited early:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/health/ready").status_code == 200:
                    return
            time.sleep(0.1)
    raise AssertionError(f"hubbub serve not ready in {READY_TIMEOUT} s:\n{log.read_text()}")


def _foreign_values(record: dict[str, Any]) -> list[str]:
    """Fields (besides the message a library wrote) that show an object's address, not data."""
    fields = {k: v for k, v in record.items() if k not in ("message", "exception")}
    return [f"{k}={v!r}" for k, v in fields.items() if "object at 0x" in json.dumps(v)]


# -- a real server ----------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_json_log_of_a_server_with_litellm_is_one_clean_object_per_line(tmp_path: Path) -> None:
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    # The level in lower case, from the environment: accepted, and applied.
    with (
        serving(tmp_path, LITELLM_TOML, HUBBUB_LOGGING__LEVEL="debug") as (url, output),
        httpx.Client(base_url=url, trust_env=False, timeout=30) as client,
    ):
        whole = client.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        assert whole.json()["choices"][0]["message"]["content"] == "Hello from the mocked API"
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 200, streamed.text
    assert output.code == 0, output.stderr
    records = output.records()
    assert [r for r in records if _foreign_values(r)] == []
    assert not [r for r in records if "litellm_redacted" in r]
    litellm_records = [r for r in records if r["logger"].startswith("LiteLLM")]
    assert litellm_records, "litellm logged nothing at DEBUG level"
    assert all("\x1b[" not in r["message"] and r["message"].strip() for r in litellm_records)
    assert any(r["level"] == "DEBUG" for r in records)
    started = [r for r in records if r["logger"] == "uvicorn.error"]
    assert any("Application startup complete" in r["message"] for r in started), records
    assert any(r["message"].startswith("hubbub serving on") for r in records)
    assert output.stdout == ""  # litellm's own handler printed its records there


@pytest.mark.timeout(180)
def test_json_log_of_several_workers_is_one_object_per_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Several workers need a shared event log and cache.
    toml = (
        f'[logging]\nformat = "json"\n[redis]\nurl = "{redis_server.url}"\n'
        '[events]\nbackend = "redis"\n[cache]\nbackend = "redis"\n'
    )
    with (
        serving(tmp_path, toml, "--workers", "2", "--log-level", "info") as (url, output),
        httpx.Client(base_url=url, trust_env=False, timeout=30) as client,
    ):
        assert client.get("/health/live").status_code == 200
    records = output.records()
    messages = [r["message"] for r in records if r["logger"].startswith("uvicorn")]
    assert any(m.startswith("Started parent process") for m in messages), messages
    workers = {m for m in messages if m.startswith("Started server process")}
    assert len(workers) == 2, messages  # one line from each worker process, each in JSON
    assert [r for r in records if _foreign_values(r)] == []


# -- a broken plugin --------------------------------------------------------------------------


def _run(root: Path, *args: str, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [HUBBUB, *args],
        env=_env(root, PYTHONPATH=str(pythonpath)),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", "0"),
        ("config", "check"),
        ("plugins",),
    ],
    ids=["serve", "config check", "plugins"],
)
def test_a_broken_plugin_is_reported_once(
    broken_site: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = _run(tmp_path, *args, pythonpath=broken_site)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("libfrobnicate") == 1, output
    assert "broken-hubbub 0.0.1" in output or "broken 0.0.1 (broken-hubbub)" in output


# -- levels in any case -----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["debug", "DEBUG", "warning", "ERROR"])
def test_the_configured_level_is_accepted_in_either_case(level: str, tmp_path: Path) -> None:
    config = load_config(text=f'[logging]\nlevel = "{level}"\n', env={"HUBBUB_HOME": "x"})
    assert config.logging.level == level
    env_config = load_config(env={"HUBBUB_HOME": "x", "HUBBUB_LOGGING__LEVEL": level})
    assert env_config.logging.level == level


def test_an_unknown_level_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match=r"logging\.level: expected one of 'DEBUG'"):
        load_config(text='[logging]\nlevel = "verbose"\n', env={"HUBBUB_HOME": "x"})


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_takes_a_level_in_either_case() -> None:
    configure_logging("debug", "json")
    assert logging.getLogger().level == logging.DEBUG
    configure_logging("Warning")
    assert logging.getLogger().level == logging.WARNING
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_routes_uvicorn_through_hubbub() -> None:
    import uvicorn.config

    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # what uvicorn does by default
    configure_logging("INFO", "json")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).handlers == [], name
        assert logging.getLogger(name).propagate, name


# -- the formatters ---------------------------------------------------------------------------


class _Opaque:
    """An object without a text of its own (its repr is its address)."""


def _format(formatter: logging.Formatter, **attributes: Any) -> str | None:
    record = logging.makeLogRecord(
        {"name": "demo", "levelno": logging.INFO, "levelname": "INFO", **attributes}
    )
    if not ContextFilter().filter(record):
        return None
    return formatter.format(record)


def test_fields_that_are_not_data_are_left_out() -> None:
    line = _format(
        JsonFormatter(),
        msg="hello",
        litellm_redacted=object(),
        opaque=_Opaque(),
        path=Path("/srv/hubbub"),
        count=3,
        tags=["a", object(), 2],
        nested={"ok": True, "sentinel": object()},
    )
    assert line is not None
    record = json.loads(line)
    assert record["message"] == "hello"
    assert "litellm_redacted" not in record
    assert "opaque" not in record
    assert record["path"] == "/srv/hubbub"
    assert record["count"] == 3
    assert record["tags"] == ["a", 2]
    assert record["nested"] == {"ok": True}
    text = _format(TextFormatter(), msg="hello", litellm_redacted=object(), count=3)
    assert text is not None
    assert text.endswith("INFO demo: hello count=3")


def test_colour_codes_and_blank_lines_are_removed() -> None:
    line = _format(JsonFormatter(), msg="\x1b[92m\nRequest to litellm:\x1b[0m\n")
    assert line is not None
    assert json.loads(line)["message"] == "Request to litellm:"
    assert _format(JsonFormatter(), msg="\n") is None  # a spacer line says nothing
    try:
        raise RuntimeError("kept")
    except RuntimeError:
        failed = _format(JsonFormatter(), msg="", exc_info=sys.exc_info())
    assert failed is not None
    assert "RuntimeError: kept" in json.loads(failed)["exception"]
