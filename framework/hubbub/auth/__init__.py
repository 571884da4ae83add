"""Authentication across the enabled auth methods (:mod:`hubbub.auth.authenticator`)."""

from __future__ import annotations

from hubbub.auth.authenticator import LOCAL_PRINCIPAL, Authenticator

__all__ = ["LOCAL_PRINCIPAL", "Authenticator"]
