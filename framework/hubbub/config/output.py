"""Showing a configuration: plain data with every secret redacted (``hubbub config show``).

Redacted, at any depth of the core tables and of every ``[plugins.<name>]`` table (decoded into
its plugin's settings struct or left raw): :class:`~hubbub.config.Secret` values, the values of
keys that name credentials (``api_key``, ``client_secret``, ``Authorization``, ``x-api-key``,
``cookie``...), the credentials of URLs (``https://user:password@host``, ``?key=...``), and
``Bearer``/``Basic`` tokens inside strings (see :mod:`hubbub.redaction`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from hubbub.config.schema import Config, ConfigOrigin, Secret
from hubbub.redaction import REDACTED, redact

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
    plugins.update(settings)
    redacted: dict[str, Any] = redact(data)
    return redacted
