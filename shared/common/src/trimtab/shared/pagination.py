"""Keyset pagination of list endpoints: opaque cursors and the next page's headers.

A cursor is the sort key of a page's last row, URL-safe base64 of its parts joined by "|" (only
the last part may contain "|"). A list endpoint fetches one row more than its page to know whether
another page follows, and then names it in `X-Next-Cursor` and a `Link` header (rel="next").
"""

from __future__ import annotations

import base64
import binascii

from fastapi import Request, Response

from .errors import Invalid


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n_parts: int) -> list[str]:
    """The cursor's parts; `Invalid` (422) if it is not a cursor of `n_parts` non-empty parts."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    parts = raw.split("|", n_parts - 1)
    if not raw or len(parts) != n_parts or not all(parts):
        raise Invalid("invalid cursor", cursor=cursor)
    return parts


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """Name the next page (nothing on the last page)."""
    if cursor is not None:
        response.headers["X-Next-Cursor"] = cursor
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
