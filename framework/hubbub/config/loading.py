"""Loading the configuration: ``hubbub.toml`` decoded into structs that reject unknown keys.

Where values come from, later ones winning:

1. the defaults of :mod:`hubbub.config.schema` (``hubbub serve`` with no file runs on them);
2. the TOML file: ``--config``, else ``$HUBBUB_CONFIG``, else ``./hubbub.toml`` if present;
3. environment overrides ``HUBBUB_<SECTION>__<KEY>`` (``__`` separates levels; values are read
   as TOML literals when they parse as one, else as strings), e.g. ``HUBBUB_CACHE__BACKEND=redis``
   or ``HUBBUB_PLUGINS__SQLITE_STORE__PATH=/data/h.db``; ``$HUBBUB_HOME`` sets ``home``;
4. ``overrides`` given by the caller (command-line options such as ``serve --port``).

The environment is read once, into the configuration's :class:`~hubbub.config.ConfigOrigin`;
nothing here writes to the process environment.

Secrets are never written in clear: a :class:`~hubbub.config.Secret` field takes
``{ env = "NAME" }`` or ``{ file = "/run/secrets/name" }`` (a literal string works too, for
development), and is shown as ``********`` by ``hubbub config show``.

Every error names the TOML path (and the line, when the key is in the file):
``hubbub.toml:3: cache.fallback: expected one of 'memory', got 'memroy'``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from hubbub.config.issues import ENV_PREFIX, make_issue, validation_issue
from hubbub.config.paths import directory_problem
from hubbub.config.schema import Config, ConfigOrigin, Secret
from hubbub.errors import ConfigError, ConfigIssue, did_you_mean

__all__ = ["decode_settings", "load_config"]


def _read_secret(obj: Any, env: Mapping[str, str]) -> Secret:
    if isinstance(obj, str):
        return Secret(obj)
    if isinstance(obj, dict) and len(obj) == 1:
        ((key, value),) = obj.items()
        if key == "env" and isinstance(value, str):
            if value not in env:
                raise ValueError(f"environment variable {value} is not set")
            return Secret(env[value], f"env:{value}")
        if key == "file" and isinstance(value, str):
            try:
                return Secret(Path(value).read_text().strip(), f"file:{value}")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {value}: {exc.strerror}") from None
    raise ValueError('expected a string, { env = "NAME" } or { file = "PATH" }')


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply ``HUBBUB_A__B=...`` overrides to ``raw``; return the dotted paths set."""
    applied = []
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX) :]:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            continue
        target = raw
        for part in parts[:-1]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                node = target[part] = {}
            target = node
        target[parts[-1]] = _parse_env_value(value)
        applied.append(".".join(parts))
    if env.get("HUBBUB_HOME") and "home" not in raw:
        raw["home"] = env["HUBBUB_HOME"]
    return applied


def _secret_hook(env: Mapping[str, str]) -> Any:
    def dec_hook(type_: type, obj: Any) -> Any:
        if type_ is Secret:
            return _read_secret(obj, env)
        raise NotImplementedError

    return dec_hook


def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Apply ``{"server.port": 8001}`` style overrides to ``raw``; return the dotted paths set."""
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        target = raw
        for part in parents:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                node = target[part] = {}
            target = node
        target[last] = value
    return list(overrides)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    text: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, override and validate the configuration.

    :param path: the TOML file; else ``$HUBBUB_CONFIG``; else ``./hubbub.toml`` if it exists;
        else only defaults and environment.
    :param env: environment to read overrides and secrets from (default: a copy of
        ``os.environ`` taken now; the configuration never reads the live environment again).
    :param text: TOML text to use instead of reading ``path`` (``path`` still names it).
    :param overrides: values by dotted path (``{"server.port": 8001}``), applied last: what
        command-line options set.
    :raises ConfigError: with the path (and line) of the problem.
    """
    environ = dict(os.environ if env is None else env)
    source: str | None = None
    if path is not None:
        source = os.fspath(path)
    elif environ.get("HUBBUB_CONFIG"):
        source = environ["HUBBUB_CONFIG"]
    elif text is None and Path("hubbub.toml").is_file():
        source = "hubbub.toml"
    if text is None and source is not None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                [ConfigIssue(path="", source=source, message=f"cannot read: {exc.strerror}")]
            ) from None
    raw: dict[str, Any] = {}
    if text is not None:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                [
                    ConfigIssue(
                        path="", source=source or "<config>", message=f"not valid TOML: {exc}"
                    )
                ]
            ) from None
    if "origin" in raw:  # a field of Config, but not a key of the file
        raise ConfigError([make_issue("origin", "unknown key", text, source, ())])
    home_in_file = "home" in raw
    overridden = _apply_env(raw, environ) + _apply_overrides(raw, overrides or {})

    plugins_raw = raw.get("plugins")
    if isinstance(plugins_raw, dict):
        settings = {k: v for k, v in plugins_raw.items() if isinstance(v, dict)}
        rest = {k: v for k, v in plugins_raw.items() if not isinstance(v, dict)}
        raw["plugins"] = {**rest, "settings": settings}
    try:
        config = msgspec.convert(raw, Config, dec_hook=_secret_hook(environ))
    except msgspec.ValidationError as exc:
        dotted, message = validation_issue(exc, Config)
        dotted = dotted.replace("plugins.settings.", "plugins.")
        raise ConfigError([make_issue(dotted, message, text, source, overridden)]) from None
    origin = ConfigOrigin(path=source, text=text, env=environ, overrides=tuple(overridden))
    config = msgspec.structs.replace(config, origin=origin)
    _check_home(config, from_home_variable=not home_in_file and "home" not in overridden)
    return config


def _check_home(config: Config, *, from_home_variable: bool) -> None:
    """Refuse a data directory that is a file, or that cannot be created, naming where it was
    set: the file and line, ``$HUBBUB_HOME``, or the default."""
    problem = directory_problem(config.data_dir)
    if problem is None:
        return
    if config.home is None:
        problem += " (the default data directory: set home or $HUBBUB_HOME)"
        raise ConfigError([ConfigIssue(path="home", message=problem)])
    if from_home_variable:
        raise ConfigError(
            [ConfigIssue(path="home", message=problem, source="environment variable HUBBUB_HOME")]
        )
    raise ConfigError([config.issue("home", problem)])


def decode_settings(config: Config, plugin: str, settings_type: type[msgspec.Struct]) -> Any:
    """Decode ``[plugins.<plugin>]`` into ``settings_type``; errors name ``plugins.<plugin>...``.

    Unknown keys are errors even when ``settings_type`` does not forbid them itself.
    """
    raw = config.plugins.settings.get(plugin, {})
    known = {f.encode_name for f in msgspec.structs.fields(settings_type)}
    for key in raw:
        if key not in known:
            message = "unknown key" + did_you_mean(key, sorted(known))
            message += "; valid keys: " + (", ".join(sorted(known)) or "none")
            raise ConfigError([config.issue(f"plugins.{plugin}.{key}", message)])
    try:
        return msgspec.convert(raw, settings_type, dec_hook=_secret_hook(config.env))
    except msgspec.ValidationError as exc:
        dotted, message = validation_issue(exc, settings_type, prefix=f"plugins.{plugin}")
        raise ConfigError([config.issue(dotted, message)]) from None
