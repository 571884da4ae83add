"""Configuration: ``hubbub.toml`` (plus environment overrides) decoded into frozen structs.

:func:`load_config` reads it (:mod:`hubbub.config.loading`), the structs say what it may contain
(:mod:`hubbub.config.schema`), errors point at the file and line or the environment variable
(:mod:`hubbub.config.issues`), :func:`encode_config` shows it with secrets redacted, and
:mod:`hubbub.config.reference` renders the documented reference and example file from the structs.
"""

from __future__ import annotations

from hubbub.config.issues import env_var, locate_line, validation_issue
from hubbub.config.loading import decode_settings, load_config
from hubbub.config.output import encode_config
from hubbub.config.schema import (
    AccountsConfig,
    AuthConfig,
    CacheConfig,
    Config,
    ConfigOrigin,
    ContextConfig,
    EventsConfig,
    LLMConfig,
    LoggingConfig,
    McpConfig,
    McpOAuthConfig,
    McpServerConfig,
    MemoryConfig,
    PasswordsConfig,
    PluginsConfig,
    QuotasConfig,
    RetentionConfig,
    RuntimeConfig,
    Secret,
    ServerConfig,
    SessionsConfig,
    ToolFilter,
    ToolRule,
    ToolsConfig,
    default_home,
)

__all__ = [
    "AccountsConfig",
    "AuthConfig",
    "CacheConfig",
    "Config",
    "ConfigOrigin",
    "ContextConfig",
    "EventsConfig",
    "LLMConfig",
    "LoggingConfig",
    "McpConfig",
    "McpOAuthConfig",
    "McpServerConfig",
    "MemoryConfig",
    "PasswordsConfig",
    "PluginsConfig",
    "QuotasConfig",
    "RetentionConfig",
    "RuntimeConfig",
    "Secret",
    "ServerConfig",
    "SessionsConfig",
    "ToolFilter",
    "ToolRule",
    "ToolsConfig",
    "decode_settings",
    "default_home",
    "encode_config",
    "env_var",
    "load_config",
    "locate_line",
    "validation_issue",
]
