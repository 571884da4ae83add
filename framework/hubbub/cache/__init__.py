"""Caching: the cache that falls back while running (:mod:`hubbub.cache.fallback`)."""

from __future__ import annotations

from hubbub.cache.fallback import FallbackCache

__all__ = ["FallbackCache"]
