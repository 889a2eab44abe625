"""Typed errors shared by every service; `http.py` maps each to a problem+json status."""

from __future__ import annotations


class TrimtabError(Exception):
    """Base of every error a service raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(TrimtabError):
    status = 404
    title = "Not found"


class Conflict(TrimtabError):
    status = 409
    title = "Conflict"


class Invalid(TrimtabError):
    """The request is well-formed but breaks a business rule."""

    status = 422
    title = "Unprocessable request"


class Busy(TrimtabError):
    """A costly operation of which one runs at a time is already running: try again later."""

    status = 429
    title = "Too many requests"


class Forbidden(TrimtabError):
    status = 403
    title = "Forbidden"


class Unauthorized(TrimtabError):
    status = 401
    title = "Unauthorized"


class PermanentEventError(TrimtabError):
    """An event that can never be processed (bad content): dead-letter it without retrying.

    `park=False`: the event orders nothing after it (an OMS report about orders of one approval:
    a later report about other orders applies the same whether or not this one did), so it is
    dead-lettered with its reason without parking its key; by default the key is parked (later
    events of the key could otherwise be applied past a gap)."""

    def __init__(self, *args: object, park: bool = True, **extra: object) -> None:
        super().__init__(*args, **extra)
        self.park = park
