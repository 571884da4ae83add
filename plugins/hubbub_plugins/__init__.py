"""Hubbub's built-in plugins.

Each module is one plugin, declared under the ``hubbub`` entry-point group exactly as a
third-party plugin would be, and using only :mod:`hubbub`'s public API. Any of them can be turned
off with ``[plugins] disabled = ["<name>"]``.
"""
