"""Configuration: ``hubbub.toml`` decoded into structs that reject unknown keys.

Where values come from, later ones winning:

1. the defaults below (``hubbub serve`` with no file runs on them);
2. the TOML file: ``--config``, else ``$HUBBUB_CONFIG``, else ``./hubbub.toml`` if present;
3. environment overrides ``HUBBUB_<SECTION>__<KEY>`` (``__`` separates levels; values are read
   as TOML literals when they parse as one, else as strings), e.g. ``HUBBUB_CACHE__BACKEND=redis``
   or ``HUBBUB_PLUGINS__SQLITE_STORE__PATH=/data/h.db``; ``$HUBBUB_HOME`` sets ``home``.

Secrets are never written in clear: a :class:`Secret` field takes ``{ env = "NAME" }`` or
``{ file = "/run/secrets/name" }`` (a literal string works too, for development), and is shown as
``********`` by ``hubbub config show``.

Every error names the TOML path (and the line, when the key is in the file):
``hubbub.toml:3: cache.fallback: expected one of 'memory', got 'memroy'``.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from hubbub.errors import ConfigError, ConfigIssue, did_you_mean

__all__ = [
    "AuthConfig",
    "CacheConfig",
    "Config",
    "EventsConfig",
    "LLMConfig",
    "LoggingConfig",
    "MemoryConfig",
    "RuntimeConfig",
    "Secret",
    "ServerConfig",
    "ToolsConfig",
    "decode_settings",
    "default_home",
    "encode_config",
    "env_var",
    "load_config",
    "locate_line",
]

ENV_PREFIX = "HUBBUB_"
REDACTED = "********"


class Secret:
    """A configuration value that must not be echoed: ``str(secret)`` and ``repr`` are redacted.

    Call :meth:`reveal` where the clear value is needed (an HTTP header, a connection string).
    """

    __slots__ = ("_origin", "_value")

    def __init__(self, value: str, origin: str = "literal") -> None:
        self._value = value
        self._origin = origin

    def reveal(self) -> str:
        """The clear value."""
        return self._value

    @property
    def origin(self) -> str:
        """Where the value came from (``env:NAME``, ``file:PATH`` or ``literal``)."""
        return self._origin

    def __repr__(self) -> str:
        return f"Secret({REDACTED}, origin={self._origin!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every configuration table: unknown keys are errors."""


class LoggingConfig(_Section):
    """How hubbub logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Lowest level logged."""
    format: Literal["text", "json"] = "text"
    """``text`` for people, ``json`` (one object per line) for log collectors."""


class ServerConfig(_Section):
    """The reference server (``hubbub serve``)."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires authentication to be configured."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    """TCP port to listen on (0: any free port)."""
    workers: int = 1
    """Worker processes. Each has its own runtime: conversations and keys are shared through
    the data directory, events and SSE streams are per worker (until the Redis fan-out)."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted; larger ones get 413."""
    grace_period: float = 10.0
    """Seconds that requests in flight may take to finish after SIGTERM/SIGINT."""
    heartbeat_interval: float = 15.0
    """Seconds between SSE heartbeat comments on idle streams."""


class RuntimeConfig(_Section):
    """Component lifecycle."""

    start_timeout: float = 30.0
    """Seconds a component may take to start before it counts as failed."""
    stop_timeout: float = 5.0
    """Seconds a component may take to stop before it is abandoned (and reported)."""
    health_timeout: float = 2.0
    """Seconds a health check may take before the component counts as down."""
    drain_timeout: float = 10.0
    """Seconds background work that should finish (replies being written) may take when the
    runtime stops, before it is cancelled."""


class EventsConfig(_Section):
    """The event bus and where events go."""

    sinks: list[str] = msgspec.field(default_factory=lambda: ["log"])
    """Event sinks to deliver every event to, by registered name."""
    queue_size: int = 1000
    """Events buffered per subscriber before the oldest are dropped."""
    history_size: int = 1000
    """Recent events kept so an SSE client can resume with ``Last-Event-ID`` (0: none)."""


class CacheConfig(_Section):
    """The cache."""

    backend: str = "memory"
    """Registered cache backend to use."""
    fallback: str | None = None
    """Backend to use when ``backend`` cannot start (health then reports ``degraded``)."""


class MemoryConfig(_Section):
    """Where conversations and messages are stored."""

    backend: str = "sqlite"
    """Registered memory store to use."""
    fallback: str | None = None
    """Store to use when ``backend`` cannot start (health then reports ``degraded``)."""


class AuthConfig(_Section):
    """Authentication."""

    methods: list[str] = msgspec.field(default_factory=lambda: ["api_key"])
    """Auth methods to enable, tried in this order."""
    local_mode: bool = True
    """While no enabled method is provisioned (no API key, user or identity provider yet),
    serve callers without credentials as a local user. The server allows this only when bound
    to loopback, and warns; bound elsewhere it refuses to start instead."""


class LLMConfig(_Section):
    """LLM providers and models."""

    default_model: str = "offline/echo"
    """Model used when a request names none."""
    providers: list[str] | None = None
    """Providers to start, by registered name; all registered ones when unset."""
    request_timeout: float = 60.0
    """Seconds to wait for a whole reply, or between two streamed chunks."""
    max_tool_rounds: int = 5
    """Most times one reply may call tools before it must answer."""
    history_messages: int = 200
    """How many of a conversation's latest messages a model is shown."""


class ToolsConfig(_Section):
    """Tools models may call."""

    providers: list[str] | None = None
    """Tool providers to start, by registered name; all registered ones when unset."""
    call_timeout: float = 30.0
    """Seconds a tool call may take before it fails."""


class PluginsConfig(_Section):
    """Which plugins load, and their settings (``[plugins.<name>]`` tables)."""

    disabled: list[str] = msgspec.field(default_factory=list)
    """Plugins not to load, by name (as ``hubbub plugins`` lists them)."""
    settings: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Each ``[plugins.<name>]`` table, decoded later into the struct that plugin declared."""


class Config(_Section, dict=True):
    """The whole configuration."""

    home: str | None = None
    """Data directory (databases, keys). Default: ``$HUBBUB_HOME``, else
    ``$XDG_DATA_HOME/hubbub``, else ``~/.local/share/hubbub``."""
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    """The ``[logging]`` table."""
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    """The ``[server]`` table."""
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    """The ``[runtime]`` table."""
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    """The ``[events]`` table."""
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    """The ``[cache]`` table."""
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    """The ``[memory]`` table."""
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    """The ``[auth]`` table."""
    llm: LLMConfig = msgspec.field(default_factory=LLMConfig)
    """The ``[llm]`` table."""
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    """The ``[tools]`` table."""
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    """The ``[plugins]`` table and its ``[plugins.<name>]`` tables."""

    # Class variables, not fields, so TOML cannot set them; load_config sets them per instance.
    source: ClassVar[str | None] = None
    """The file the configuration was read from, if any."""
    text: ClassVar[str | None] = None
    """That file's text, used to point errors at lines."""
    env: ClassVar[Mapping[str, str] | None] = None
    """The environment the configuration was loaded from; plugin settings read secrets from
    it too (``None``: the process environment)."""

    @property
    def data_dir(self) -> Path:
        """The resolved data directory."""
        return Path(self.home or default_home()).expanduser()

    overrides: ClassVar[tuple[str, ...]] = ()
    """Dotted paths set by ``HUBBUB_*`` environment variables."""

    def issue(self, path: str, message: str) -> ConfigIssue:
        """A :class:`ConfigIssue` at ``path``, naming where the value came from: the environment
        variable that set it, or the file and line."""
        return _issue(path, message, self.text, self.source, self.overrides)


def default_home(env: Mapping[str, str] | None = None) -> str:
    """The data directory when ``home`` is not configured."""
    environ = os.environ if env is None else env
    if environ.get("HUBBUB_HOME"):
        return environ["HUBBUB_HOME"]
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "hubbub")


# -- loading -------------------------------------------------------------------------------


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


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _struct_at(root: type[msgspec.Struct], path: str) -> type[msgspec.Struct] | None:
    current: Any = root
    for part in [p for p in re.split(r"\.|\[\d+\]", path) if p]:
        info = msgspec.inspect.type_info(current)
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        fields = {f.name: f for f in info.fields}
        if part not in fields:
            return None
        field_type = fields[part].type
        if isinstance(field_type, msgspec.inspect.StructType):
            current = field_type.cls
        else:
            return None
    return current if isinstance(current, type) else None


def _choices_at(root: type[msgspec.Struct], path: str) -> list[Any]:
    """The allowed values, in declared order, of the ``Literal`` field at ``path``."""
    parent, _, name = path.rpartition(".")
    struct = _struct_at(root, parent) if parent else root
    for field in msgspec.structs.fields(struct) if struct else ():
        if field.name == name and typing.get_origin(field.type) is Literal:
            return list(typing.get_args(field.type))
    return []


def _fields_of(struct: type[msgspec.Struct]) -> list[str]:
    return [f for f in struct.__struct_fields__ if f != "settings"]


def validation_issue(
    exc: msgspec.ValidationError, root: type[msgspec.Struct], prefix: str = ""
) -> tuple[str, str]:
    """Turn msgspec's message into ``(dotted path, message)``, with valid keys and a suggestion
    for an unknown key."""
    match = _AT.match(str(exc))
    message = match.group("msg") if match else str(exc)
    path = (match.group("path") or "").lstrip(".") if match else ""
    unknown = _UNKNOWN.match(message)
    if unknown:
        key = unknown.group("field")
        struct = _struct_at(root, path)
        valid = _fields_of(struct) if struct else []
        message = "unknown key" + did_you_mean(key, valid)
        if valid:
            message += "; valid keys: " + ", ".join(valid)
        path = f"{path}.{key}" if path else key
    elif message.startswith("Invalid enum value"):
        choices = _choices_at(root, path)
        message = message.replace("Invalid enum value", "got", 1)
        if choices:
            message = "expected one of " + ", ".join(repr(c) for c in choices) + ", " + message
    else:
        message = message.replace("`", "'")
        message = message[0].lower() + message[1:] if message else message
    full = ".".join(p for p in (prefix, path) if p)
    return full, message


def _secret_hook(env: Mapping[str, str]) -> Any:
    def dec_hook(type_: type, obj: Any) -> Any:
        if type_ is Secret:
            return _read_secret(obj, env)
        raise NotImplementedError

    return dec_hook


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    text: str | None = None,
) -> Config:
    """Read, override and validate the configuration.

    :param path: the TOML file; else ``$HUBBUB_CONFIG``; else ``./hubbub.toml`` if it exists;
        else only defaults and environment.
    :param env: environment to read overrides and secrets from (default ``os.environ``).
    :param text: TOML text to use instead of reading ``path`` (``path`` still names it).
    :raises ConfigError: with the path (and line) of the problem.
    """
    environ = os.environ if env is None else env
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
    overridden = _apply_env(raw, environ)

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
        raise ConfigError([_issue(dotted, message, text, source, overridden)]) from None
    config.overrides = tuple(overridden)  # type: ignore[misc]
    config.source = source  # type: ignore[misc]
    config.text = text  # type: ignore[misc]
    config.env = env  # type: ignore[misc]
    return config


def env_var(path: str) -> str:
    """The environment variable that overrides dotted ``path``: ``HUBBUB_SERVER__PORT``."""
    return ENV_PREFIX + path.upper().replace(".", "__")


def _issue(
    path: str, message: str, text: str | None, source: str | None, overridden: Iterable[str]
) -> ConfigIssue:
    from_env = [
        p for p in overridden if path == p or path.startswith(p + ".") or p.startswith(path + ".")
    ]
    if from_env:
        variable = env_var(from_env[0])
        return ConfigIssue(path=path, message=message, source=f"environment variable {variable}")
    line = locate_line(text, path) if text else None
    return ConfigIssue(path=path, message=message, line=line, source=source if line else None)


def decode_settings(config: Config, plugin: str, settings_type: type[msgspec.Struct]) -> Any:
    """Decode ``[plugins.<plugin>]`` into ``settings_type``; errors name ``plugins.<plugin>...``.

    Unknown keys are errors even when ``settings_type`` does not forbid them itself.
    """
    raw = config.plugins.settings.get(plugin, {})
    environ = os.environ if config.env is None else config.env
    known = {f.encode_name for f in msgspec.structs.fields(settings_type)}
    for key in raw:
        if key not in known:
            message = "unknown key" + did_you_mean(key, sorted(known))
            message += "; valid keys: " + (", ".join(sorted(known)) or "none")
            raise ConfigError([config.issue(f"plugins.{plugin}.{key}", message)])
    try:
        return msgspec.convert(raw, settings_type, dec_hook=_secret_hook(environ))
    except msgspec.ValidationError as exc:
        dotted, message = validation_issue(exc, settings_type, prefix=f"plugins.{plugin}")
        raise ConfigError([config.issue(dotted, message)]) from None


def locate_line(text: str | None, path: str) -> int | None:
    """Best-effort 1-based line of the key at dotted ``path`` in TOML ``text``."""
    if not text or not path:
        return None
    target = [p for p in re.split(r"\.|\[\d+\]", path) if p]
    table: list[str] = []
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if table == target:
                best = number
            continue
        if m := key.match(line):
            parts = table + [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if parts == target:
                return number
            if best is None and parts == target[: len(parts)]:
                best = number  # an inline table or array holding the path
    return best


# -- showing -------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return REDACTED
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


def encode_config(
    config: Config, plugin_settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The effective configuration as plain data, secrets redacted; ``plugin_settings`` (decoded
    structs, by plugin) replace the raw ``[plugins.<name>]`` tables when given."""
    data: dict[str, Any] = msgspec.to_builtins(config, enc_hook=_enc_hook)
    plugins = data.setdefault("plugins", {})
    settings = plugins.pop("settings", {})
    if plugin_settings is not None:
        settings = {
            name: msgspec.to_builtins(value, enc_hook=_enc_hook)
            for name, value in plugin_settings.items()
        }
    else:
        settings = _redact_raw(settings)
    plugins.update(settings)
    return data


def _redact_raw(value: Any) -> Any:
    """Redact the values of secret-looking keys (``token``, ``password``, ``api_key``...) in raw
    tables whose plugin declared no settings type."""
    if isinstance(value, dict):
        return {k: REDACTED if _looks_secret(k) else _redact_raw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_raw(v) for v in value]
    return value


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("secret", "password", "token", "api_key", "apikey"))
