"""When a stored item may be set to expire: a time in the future, and a calendar's.

Conversations and memories take an ``expires_at`` from callers (Unix seconds). Infinity (which
a lenient JSON decoder makes of the string ``"inf"``, and which JSON itself can only write as
``null``) and numbers past any calendar are refused with the same clear error by every store,
rather than kept by some, refused by others, or echoed back as "no expiry".
"""

from __future__ import annotations

import math

from hubbub.errors import InvalidRequestError

__all__ = ["LATEST_EXPIRY", "checked_expiry"]

LATEST_EXPIRY = 253_402_300_800.0
"""The first second of the year 10000 (Unix seconds): every expiry is before it."""


def checked_expiry(expires_at: float | None, moment: float) -> float | None:
    """``expires_at`` when it is ``None`` or a time after ``moment`` and before
    :data:`LATEST_EXPIRY`; otherwise :class:`InvalidRequestError` naming ``expires_at``."""
    if expires_at is None:
        return None
    if not math.isfinite(expires_at) or expires_at >= LATEST_EXPIRY:
        raise InvalidRequestError(
            "expires_at must be a time before the year 10000 (Unix seconds below "
            f"{LATEST_EXPIRY:.0f})",
            field="expires_at",
        )
    if expires_at <= moment:
        raise InvalidRequestError("expires_at is in the past", field="expires_at")
    return expires_at
