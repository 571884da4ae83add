"""Showing a configuration: plain data with every secret redacted (``hubbub config show``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from hubbub.config.schema import REDACTED, Config, ConfigOrigin, Secret

__all__ = ["encode_config"]


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return REDACTED
    if isinstance(obj, ConfigOrigin):
        return None  # where it came from, not what it says: dropped below
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


def encode_config(
    config: Config, plugin_settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The effective configuration as plain data, secrets redacted; ``plugin_settings`` (decoded
    structs, by plugin) replace the raw ``[plugins.<name>]`` tables when given."""
    data: dict[str, Any] = msgspec.to_builtins(config, enc_hook=_enc_hook)
    data.pop("origin", None)  # where it came from, not what it says
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
