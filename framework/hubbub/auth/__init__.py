"""Authentication across the enabled auth methods (:mod:`hubbub.auth.authenticator`), the
credentials a request presents (:mod:`hubbub.auth.credentials`), user names
(:mod:`hubbub.auth.users`) and the data directory's memory that credentials exist
(:mod:`hubbub.auth.provisioning`)."""

from __future__ import annotations

from hubbub.auth.authenticator import LOCAL_PRINCIPAL, Authenticator
from hubbub.auth.credentials import AmbiguousCredentialsError, credentials_from_headers
from hubbub.auth.provisioning import MARKER_NAME, CredentialsLostError, ProvisioningMarker
from hubbub.auth.users import USER_NAME_RULE, check_user_name

__all__ = [
    "LOCAL_PRINCIPAL",
    "MARKER_NAME",
    "USER_NAME_RULE",
    "AmbiguousCredentialsError",
    "Authenticator",
    "CredentialsLostError",
    "ProvisioningMarker",
    "check_user_name",
    "credentials_from_headers",
]
