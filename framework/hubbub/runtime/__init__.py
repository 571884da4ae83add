"""The runtime: builds the configured components, starts them in declared stages, reports their
health and stops them in reverse (:mod:`hubbub.runtime.runtime`); :mod:`hubbub.runtime.selection`
checks a configuration against the loaded plugins."""

from __future__ import annotations

from hubbub.runtime.runtime import Runtime

__all__ = ["Runtime"]
