"""Checking a configuration against what the loaded plugins registered.

The structural checks happen when the TOML is decoded (:func:`hubbub.config.load_config`); this
module does the rest, which needs the plugins: every backend, method, provider and sink named in
the configuration exists, and every ``[plugins.<name>]`` table decodes into the settings struct its
plugin declared. All problems are reported at once, each with its path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from hubbub.config import Config, decode_settings
from hubbub.errors import ConfigError, ConfigIssue, PluginError, did_you_mean
from hubbub.kinds import KINDS, KindSpec
from hubbub.plugins import Plugins
from hubbub.registry import Kind, Registry

__all__ = ["check_config", "kind_issues", "selected_names", "settings_types"]


def _one_of(spec: KindSpec, registry: Registry, value: str) -> str:
    names = registry.names()
    if not names:
        return f"no {spec.title} plugin is loaded, so {value!r} cannot be used"
    message = "expected one of " + ", ".join(repr(n) for n in names) + f", got {value!r}"
    return message + did_you_mean(value, names)


def selected_names(
    config: Config, registries: Mapping[Kind, Registry], kinds: Iterable[KindSpec] = KINDS
) -> dict[Kind, list[str]]:
    """The registered names the configuration selects, by kind (valid or not)."""
    return {spec.name: spec.selected(config, registries[spec.name].names()) for spec in kinds}


def kind_issues(
    config: Config, registries: Mapping[Kind, Registry], kinds: Iterable[KindSpec] = KINDS
) -> list[ConfigIssue]:
    """Every name the configuration gives that no plugin registered, each at its path."""
    issues = []
    for spec in kinds:
        registry = registries[spec.name]
        for path, name in spec.config_paths(config):
            if name not in registry:
                issues.append(config.issue(path, _one_of(spec, registry, name)))
        fallback = spec.fallback_name(config)
        if fallback is not None and fallback == spec.configured(config):
            issues.append(config.issue(f"{spec.section}.fallback", "must differ from backend"))
    return issues


def settings_types(registries: Mapping[Kind, Registry]) -> dict[str, type[msgspec.Struct]]:
    """The settings struct each plugin declared, by plugin name."""
    types: dict[str, type[msgspec.Struct]] = {}
    for registry in registries.values():
        for registration in registry:
            if registration.settings is None:
                continue
            known = types.setdefault(registration.plugin, registration.settings)
            if known is not registration.settings:
                raise PluginError(
                    f"plugin {registration.plugin!r} declares two settings types "
                    f"({known.__name__} and {registration.settings.__name__}); a plugin has one"
                )
    return types


def check_config(config: Config, plugins: Plugins) -> dict[str, Any]:
    """Validate ``config`` against the plugins' registrations.

    :returns: the decoded settings struct of each plugin that declares one and is used (or has a
        ``[plugins.<name>]`` table), by plugin name.
    :raises ConfigError: listing every problem.
    """
    registries = plugins.registries()
    issues = kind_issues(config, registries, plugins.kinds)

    types = settings_types(registries)
    used = {
        registration.plugin
        for kind, names in selected_names(config, registries, plugins.kinds).items()
        for name in names
        if (registration := registries[kind].get(name)) is not None
    }
    settings: dict[str, Any] = {}
    for plugin in sorted(set(config.plugins.settings) | (used & set(types))):
        if plugin not in types:
            if plugin in plugins.info:
                message = "this plugin takes no settings"
            else:
                loaded = sorted(name for name, info in plugins.info.items() if not info.error)
                message = "no plugin of this name is loaded" + did_you_mean(plugin, loaded)
            issues.append(config.issue(f"plugins.{plugin}", message))
            continue
        try:
            settings[plugin] = decode_settings(config, plugin, types[plugin])
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return settings
