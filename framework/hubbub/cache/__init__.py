"""Caching: the typed facade components use (:class:`Cache`, :mod:`hubbub.cache.facade`) and the
cache that falls back while running (:mod:`hubbub.cache.fallback`)."""

from __future__ import annotations

from hubbub.cache.facade import Cache, InvalidCacheKeyError
from hubbub.cache.fallback import FallbackCache

__all__ = ["Cache", "FallbackCache", "InvalidCacheKeyError"]
