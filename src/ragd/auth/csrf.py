"""CSRF protection for the browser session's refresh cookie (signed double submit).

A browser session keeps its refresh token in an ``HttpOnly`` cookie that only the session
routes see, so page scripts never hold it. A cookie is sent by the browser on its own, so the
route that spends it also demands a second value that only a page of this origin can know:
the CSRF token, kept in a script-readable cookie and echoed in the ``X-CSRF-Token`` header.

The token is a one-way digest of the refresh token itself: it needs no server state and no
key (ragd may sign with asymmetric keys), changes with every rotation, and reveals nothing
about the refresh token. A cross-site page can make the browser send both cookies, but it can
neither read the CSRF cookie nor compute its value, so it cannot set the header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

_DOMAIN = b"ragd-csrf\x00"


def csrf_token(refresh_token: str) -> str:
    """The CSRF token bound to ``refresh_token``."""
    digest = hashlib.sha256(_DOMAIN + refresh_token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_matches(refresh_token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``refresh_token`` (constant time)."""
    if not presented:
        return False
    return hmac.compare_digest(csrf_token(refresh_token), presented)
