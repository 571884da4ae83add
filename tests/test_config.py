"""Configuration: errors carry the TOML path (and line), environment overrides, secrets, plugin
settings, and names checked against what plugins registered."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import echo_tool, toml

from hubbub import hookimpl
from hubbub.config import Config, Secret, decode_settings, encode_config, load_config
from hubbub.errors import ConfigError
from hubbub.plugins import load_plugins
from hubbub.runtime.selection import check_config
from hubbub.tools import function_tools


def config_error(text: str, env: dict[str, str] | None = None, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(text=textwrap.dedent(text), env=env or {}, **kwargs)
    return caught.value


# -- structural errors ----------------------------------------------------------------------


def test_unknown_key_names_path_line_and_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.toml"
    path.write_text('[server]\nport = 9000\n\n[cache]\nbackend = "memory"\nfallbak = "memory"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (issue,) = caught.value.issues
    assert issue.path == "cache.fallbak"
    assert issue.line == 6
    assert issue.source == str(path)
    assert "did you mean 'fallback'" in issue.message
    assert str(caught.value) == (
        f"{path}:6: cache.fallbak: unknown key (did you mean 'fallback'?); "
        "valid keys: backend, fallback, timeout"
    )


def test_unknown_key_from_text_still_knows_the_line() -> None:
    error = config_error(
        """
        [logging]
        level = "INFO"
        colour = true
        """
    )
    (issue,) = error.issues
    assert (issue.path, issue.line) == ("logging.colour", 4)
    assert "valid keys: level, format" in issue.message


def test_unknown_table() -> None:
    error = config_error('[cahce]\nbackend = "memory"\n')
    (issue,) = error.issues
    assert issue.path == "cahce"
    assert issue.line == 1
    assert "did you mean 'cache'" in issue.message


def test_unknown_key_in_plugins_table() -> None:
    error = config_error('[plugins]\ndisabeld = ["log_sink"]\n')
    (issue,) = error.issues
    assert issue.path == "plugins.disabeld"
    assert issue.line == 2
    assert "did you mean 'disabled'" in issue.message


def test_wrong_type_names_path_and_types() -> None:
    error = config_error('[server]\nhost = "0.0.0.0"\nport = "eighty"\n')
    (issue,) = error.issues
    assert issue.path == "server.port"
    assert issue.line == 3
    assert issue.message == "expected 'int', got 'str'"


def test_wrong_type_in_a_list_names_the_element() -> None:
    error = config_error('[events]\nsinks = ["log", 3]\n')
    (issue,) = error.issues
    assert issue.path == "events.sinks[1]"
    assert issue.line == 2
    assert "expected 'str', got 'int'" in issue.message


def test_bad_enum_names_path_and_value() -> None:
    error = config_error('[logging]\nlevel = "LOUD"\n')
    (issue,) = error.issues
    assert (issue.path, issue.line) == ("logging.level", 2)
    assert "'LOUD'" in issue.message


def test_bad_enum_lists_the_choices() -> None:
    error = config_error('[logging]\nformat = "yaml"\n')
    (issue,) = error.issues
    assert issue.message == "expected one of 'text', 'json', got 'yaml'"


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[cache\nbackend = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 1" in message


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_config_file_from_hubbub_config_variable(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[server]\nport = 9123\n")
    config = load_config(env={"HUBBUB_CONFIG": str(path)})
    assert config.server.port == 9123
    assert config.source == str(path)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./hubbub.toml here
    config = load_config(env={"HUBBUB_HOME": str(tmp_path / "data")})
    assert config.source is None
    assert config.cache.backend == "memory"
    assert config.memory.backend == "sqlite"
    assert config.data_dir == tmp_path / "data"


# -- environment overrides ------------------------------------------------------------------


def test_env_overrides_a_section_key() -> None:
    config = load_config(
        text='[cache]\nbackend = "memory"\n',
        env={"HUBBUB_CACHE__BACKEND": "redis", "HUBBUB_SERVER__PORT": "9001"},
    )
    assert config.cache.backend == "redis"
    assert config.server.port == 9001  # read as a TOML literal: an int


def test_env_values_are_toml_literals_or_strings() -> None:
    config = load_config(
        env={
            "HUBBUB_EVENTS__SINKS": '["log", "other"]',
            "HUBBUB_RUNTIME__STOP_TIMEOUT": "0.5",
            "HUBBUB_SERVER__HOST": "0.0.0.0",
        }
    )
    assert config.events.sinks == ["log", "other"]
    assert config.runtime.stop_timeout == 0.5
    assert config.server.host == "0.0.0.0"


def test_nested_env_override_reaches_plugin_settings() -> None:
    config = load_config(
        text="[plugins.sqlite_store]\nbusy_timeout = 1.0\n",
        env={"HUBBUB_PLUGINS__SQLITE_STORE__PATH": "/data/h.db"},
    )
    assert config.plugins.settings["sqlite_store"] == {"busy_timeout": 1.0, "path": "/data/h.db"}


def test_env_error_names_the_variable() -> None:
    error = config_error("", env={"HUBBUB_SERVER__PORT": "lots"})
    (issue,) = error.issues
    assert issue.path == "server.port"
    assert issue.source == "environment variable HUBBUB_SERVER__PORT"
    assert issue.line is None
    assert str(error).startswith("environment variable HUBBUB_SERVER__PORT: server.port:")


def test_env_unknown_key_names_the_variable() -> None:
    error = config_error("", env={"HUBBUB_CACHE__BACKEDN": "memory"})
    (issue,) = error.issues
    assert issue.path == "cache.backedn"
    assert issue.source == "environment variable HUBBUB_CACHE__BACKEDN"
    assert "did you mean 'backend'" in issue.message


def test_hubbub_home_sets_home_unless_configured() -> None:
    assert load_config(env={"HUBBUB_HOME": "/srv/h"}).home == "/srv/h"
    config = load_config(text='home = "/from/file"\n', env={"HUBBUB_HOME": "/srv/h"})
    assert config.home == "/from/file"


# -- plugins' settings and secrets ------------------------------------------------------------


class GreeterSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    greeting: str = "hello"
    repeat: int = 1
    token: Secret | None = None


class Greeter:
    """A plugin declaring settings (registered as plugin ``greeter``)."""

    __name__ = "greeter"

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register("greeter", lambda context: function_tools(echo_tool), settings=GreeterSettings)


def checked(text: str, env: dict[str, str] | None = None) -> tuple[Config, dict[str, Any]]:
    config = load_config(text=toml(text), env=env or {})
    return config, check_config(config, load_plugins(extra=[Greeter()], env={}))


def test_plugin_table_is_decoded_into_the_declared_struct() -> None:
    _, settings = checked('[plugins.greeter]\ngreeting = "hi"\nrepeat = 3\n')
    assert settings["greeter"] == GreeterSettings(greeting="hi", repeat=3)


def test_declared_settings_default_when_the_table_is_absent() -> None:
    _, settings = checked("")
    assert settings["greeter"] == GreeterSettings()
    # built-ins declare settings too
    assert settings["sqlite_store"].busy_timeout == 5.0


def test_typo_in_plugin_table_names_the_path_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        checked('[plugins.greeter]\ngreeting = "hi"\ngreetting = "hey"\n')
    (issue,) = caught.value.issues
    assert issue.path == "plugins.greeter.greetting"
    assert issue.line == 5  # two lines of BASE_TOML come first
    assert "did you mean 'greeting'" in issue.message


def test_wrong_type_in_plugin_table() -> None:
    with pytest.raises(ConfigError) as caught:
        checked("[plugins.greeter]\nrepeat = 'twice'\n")
    assert [i.path for i in caught.value.issues] == ["plugins.greeter.repeat"]


def test_table_for_unknown_plugin_suggests_a_loaded_one() -> None:
    with pytest.raises(ConfigError) as caught:
        checked('[plugins.greter]\ngreeting = "hi"\n')
    (issue,) = caught.value.issues
    assert issue.path == "plugins.greter"
    assert issue.message == "no plugin of this name is loaded (did you mean 'greeter'?)"


def test_secret_from_environment() -> None:
    _, settings = checked(
        '[plugins.greeter]\ntoken = { env = "GREETER_TOKEN" }\n',
        env={"GREETER_TOKEN": "s3cr3t-from-env"},
    )
    token = settings["greeter"].token
    assert token.reveal() == "s3cr3t-from-env"
    assert token.origin == "env:GREETER_TOKEN"
    assert "s3cr3t" not in str(token)
    assert "s3cr3t" not in repr(token)


def test_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret\n")
    _, settings = checked(f'[plugins.greeter]\ntoken = {{ file = "{secret_file}" }}\n')
    assert settings["greeter"].token.reveal() == "file-secret"
    assert settings["greeter"].token.origin == f"file:{secret_file}"


def test_missing_secret_env_var_is_an_error_with_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREETER_MISSING", "only in the process environment")
    with pytest.raises(ConfigError) as caught:
        checked('[plugins.greeter]\ntoken = { env = "GREETER_MISSING" }\n', env={})
    (issue,) = caught.value.issues
    assert issue.path == "plugins.greeter.token"
    assert "GREETER_MISSING is not set" in issue.message


def test_unreadable_secret_file_and_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        checked(f'[plugins.greeter]\ntoken = {{ file = "{tmp_path / "absent"}" }}\n')
    assert "cannot read secret file" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        checked('[plugins.greeter]\ntoken = { vault = "x" }\n')
    assert 'expected a string, { env = "NAME" } or { file = "PATH" }' in str(caught.value)


def test_encode_config_redacts_secrets() -> None:
    config, settings = checked(
        '[plugins.greeter]\ntoken = { env = "GREETER_TOKEN" }\n',
        env={"GREETER_TOKEN": "never-show-me"},
    )
    shown = encode_config(config, settings)
    assert shown["plugins"]["greeter"]["token"] == "********"
    assert "never-show-me" not in msgspec.json.encode(shown).decode()
    assert shown["cache"] == {"backend": "memory", "fallback": None, "timeout": 0.25}


def test_encode_config_redacts_secret_looking_raw_values() -> None:
    config = load_config(
        text='[plugins.someone]\napi_key = "literal-key"\nurl = "http://x"\n', env={}
    )
    shown = encode_config(config)
    assert shown["plugins"]["someone"] == {"api_key": "********", "url": "http://x"}


def test_decode_settings_directly(make_config: Callable[..., Config]) -> None:
    config = make_config("[plugins.greeter]\nrepeat = 2\n")
    assert decode_settings(config, "greeter", GreeterSettings).repeat == 2


def test_env_error_in_plugin_settings_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        checked("", env={"HUBBUB_PLUGINS__GREETER__REPEET": "2"})
    (issue,) = caught.value.issues
    assert issue.path == "plugins.greeter.repeet"
    assert issue.source == "environment variable HUBBUB_PLUGINS__GREETER__REPEET"


# -- names checked against the registries ---------------------------------------------------


def test_unregistered_backend_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        checked('[cache]\nbackend = "memory"\nfallback = "memroy"\n')
    (issue,) = caught.value.issues
    assert issue.path == "cache.fallback"
    assert issue.line == 5
    assert re.fullmatch(
        r"cache\.fallback: expected one of ('[a-z_]+', )*'memory'(, '[a-z_]+')*, "
        r"got 'memroy' \(did you mean 'memory'\?\)",
        str(issue),
    )


def test_every_unregistered_name_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        checked(
            """
            [events]
            sinks = ["log", "kafka"]
            [memory]
            backend = "mongodb"
            [llm]
            providers = ["offline", "anthropic"]
            """
        )
    paths = [issue.path for issue in caught.value.issues]
    assert sorted(paths) == ["events.sinks[1]", "llm.providers[1]", "memory.backend"]


def test_fallback_must_differ_from_backend() -> None:
    with pytest.raises(ConfigError) as caught:
        checked('[cache]\nbackend = "memory"\nfallback = "memory"\n')
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("cache.fallback", "must differ from backend")
    ]


def test_unregistered_auth_method() -> None:
    config = load_config(text='[auth]\nmethods = ["nonesuch"]\n', env={})
    with pytest.raises(ConfigError) as caught:
        check_config(config, load_plugins(env={}))
    (issue,) = caught.value.issues
    assert (issue.path, issue.line) == ("auth.methods[0]", 2)
    assert "'nonesuch'" in issue.message
