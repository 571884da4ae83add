"""Ranges in the configuration: every number and path is checked when the file loads, and
``hubbub config check`` runs what ``hubbub serve`` checks before it listens, each problem with
its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest
from support import BASE_TOML, run_cli

from hubbub.config import Config, load_config
from hubbub.config.reference import render_markdown
from hubbub.errors import ConfigError
from hubbub.runtime import Runtime

# (table, key, bad value, what the message says): the values `config check` used to accept.
BAD_NUMBERS = [
    ("server", "max_body_bytes", "-1", ">= 1024"),
    ("server", "heartbeat_interval", "0", ">= 0.1"),
    ("llm", "max_tool_rounds", "-1", ">= 0"),
    ("events", "retention_events", "99", ">= 100"),
    ("events", "retention_seconds", "1", ">= 10"),
    ("events", "publish_buffer", "0", ">= 100"),
    ("redis", "timeout", "0", "> 0"),
    ("server", "workers", "-3", ">= 1"),
    ("llm", "request_timeout", "-1", "> 0"),
    ("events", "queue_size", "0", ">= 1"),
    ("runtime", "health_timeout", "0", "> 0"),
    ("tools", "call_timeout", "-5", "> 0"),
    ("llm", "history_messages", "0", ">= 1"),
    ("server", "workers", "100000", "<= 256"),
]
IDS = [f"{table}.{key}={value}" for table, key, value, _ in BAD_NUMBERS]


def _file(table: str, key: str, value: str) -> str:
    # BASE_TOML holds two lines ([auth] methods = []): the key is on line 4.
    return BASE_TOML + f"[{table}]\n{key} = {value}\n"


@pytest.mark.parametrize(("table", "key", "value", "expected"), BAD_NUMBERS, ids=IDS)
def test_load_config_refuses_out_of_range_numbers(
    table: str, key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("hubbub.toml", text=_file(table, key, value), env={})
    (issue,) = caught.value.issues
    assert (issue.path, issue.line, issue.source) == (f"{table}.{key}", 4, "hubbub.toml")
    assert expected in issue.message


@pytest.mark.parametrize(("table", "key", "value", "expected"), BAD_NUMBERS[:8], ids=IDS[:8])
def test_config_check_refuses_out_of_range_numbers(
    tmp_path: Path, table: str, key: str, value: str, expected: str
) -> None:
    (tmp_path / "hubbub.toml").write_text(_file(table, key, value))
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: hubbub.toml:4: {table}.{key}: expected ")
    assert expected in line


def test_an_out_of_range_environment_value_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(BASE_TOML)
    result = run_cli(["config", "check"], cwd=tmp_path, env={"HUBBUB_EVENTS__QUEUE_SIZE": "0"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: environment variable HUBBUB_EVENTS__QUEUE_SIZE: events.queue_size: "
        "expected 'int' >= 1"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_tool_rounds", 0), ("history_messages", 1)],
)
def test_the_edges_of_the_ranges_are_accepted(key: str, value: int) -> None:
    config = load_config(text=f"[llm]\n{key} = {value}\n", env={})
    assert getattr(config.llm, key) == value
    events = load_config(text="[events]\nretention_events = 100\nqueue_size = 1\n", env={}).events
    assert (events.retention_events, events.queue_size) == (100, 1)


def _numeric_fields() -> list[tuple[str, mi.Field]]:
    found = []
    for field in mi.type_info(Config).fields:  # type: ignore[attr-defined]
        if isinstance(field.type, mi.StructType):
            for inner in field.type.fields:
                found.append((f"{field.name}.{inner.name}", inner))
        else:
            found.append((field.name, field))
    return [(path, f) for path, f in found if isinstance(f.type, mi.IntType | mi.FloatType)]


def test_every_numeric_setting_declares_its_range() -> None:
    fields = _numeric_fields()
    assert len(fields) >= 15
    for path, field in fields:
        assert isinstance(field.type, mi.IntType | mi.FloatType)
        low = field.type.ge if field.type.ge is not None else field.type.gt
        assert low is not None, f"{path} has no lower bound"
        default = field.default
        assert default is not msgspec.NODEFAULT
        assert low <= default, f"{path}'s default is out of its range"
        high = field.type.le if field.type.le is not None else field.type.lt
        assert high is None or default <= high, f"{path}'s default is out of its range"


def test_the_reference_shows_the_ranges() -> None:
    markdown = render_markdown()
    assert "| `workers` | integer (1 to 256) |" in markdown
    assert "| `request_timeout` | float (> 0, ≤ 86\u2009400) |" in markdown
    assert "| `default_model` | string (not empty) |" in markdown


# -- the data directory ----------------------------------------------------------------------


def test_home_that_is_a_file_is_refused_with_its_line(tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0::/root:/bin/sh\n")
    text = f'# where the data goes\n\nhome = "{a_file}"\n' + BASE_TOML
    with pytest.raises(ConfigError) as caught:
        load_config("hubbub.toml", text=text, env={})
    (issue,) = caught.value.issues
    assert (issue.path, issue.line, issue.source) == ("home", 3, "hubbub.toml")
    assert "is not a directory" in issue.message


def test_home_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(text=f'home = "{a_file / "hubbub"}"\n', env={})
    assert "cannot be created" in str(caught.value)
    assert "is not a directory" in str(caught.value)


def test_home_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(text="", env={"HUBBUB_HOME": str(a_file)})
    (issue,) = caught.value.issues
    assert issue.source == "environment variable HUBBUB_HOME"


def test_home_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    config = load_config(text=f'home = "{tmp_path / "a" / "b"}"\n', env={})
    assert config.data_dir == tmp_path / "a" / "b"
    assert not config.data_dir.exists()  # loading writes nothing


def test_config_check_refuses_a_home_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "hubbub.toml").write_text(f'home = "{a_file}"\n' + BASE_TOML)
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: hubbub.toml:1: home: {a_file} exists and is not a directory"
    )


# -- what serve checks before it listens -------------------------------------------------------


def test_config_check_reports_an_unserved_default_model_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(
        BASE_TOML
        + textwrap.dedent(
            """
            [llm]
            default_model = "gpt-nowhere"
            """
        )
    )
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "error: hubbub.toml:5: llm.default_model: no provider serves 'gpt-nowhere'"
    )
    # and serve refuses it the same way, before listening
    serve = run_cli(["serve", "--port", "0"], cwd=tmp_path)
    assert serve.returncode == 2
    assert line in serve.stderr


async def test_a_component_s_config_error_points_at_the_line(tmp_path: Path) -> None:
    config = load_config(
        "hubbub.toml",
        text=BASE_TOML + '[llm]\ndefault_model = "gpt-nowhere"\n',
        env={"HUBBUB_HOME": str(tmp_path)},
    )
    with pytest.raises(ConfigError) as caught:
        async with Runtime.from_config(config):
            pass
    (issue,) = caught.value.issues
    assert (issue.path, issue.line, issue.source) == ("llm.default_model", 4, "hubbub.toml")


def test_config_check_applies_the_exposure_rule_of_serve(tmp_path: Path) -> None:
    # No credentials exist: serve refuses to listen beyond loopback, and so does the check.
    (tmp_path / "hubbub.toml").write_text('[server]\nhost = "0.0.0.0"\n')
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_still_accepts_a_valid_file_quietly(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(BASE_TOML + "[llm]\nmax_tool_rounds = 0\n")
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: hubbub.toml is valid"
    assert result.stderr == ""
