"""Errors of :mod:`hubbub.net`. Their messages are written for whoever asked for the URL (a
model, through a tool): they name the URL's host and what went wrong, never an address a host
name resolved to."""

from __future__ import annotations

__all__ = ["FetchError", "FetchFailed", "FetchRefused"]


class FetchError(Exception):
    """A URL could not be fetched; the message says why in words fit for the requester."""


class FetchRefused(FetchError):
    """The URL, a redirect target, an address, a port or the response was refused by policy
    (``"refused: 127.0.0.1 is a loopback address"``)."""


class FetchFailed(FetchError):
    """The fetch was allowed but did not succeed (resolution, connection, timeout, HTTP
    error status)."""
