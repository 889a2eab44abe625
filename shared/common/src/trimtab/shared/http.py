"""The FastAPI app factory every service uses: problem+json errors, health, readiness, metrics.

Routes stay thin; this module gives every service the same error shape (RFC 9457
`application/problem+json`), the same `/livez`, `/readyz` and `/metrics`, and the runtime's
lifespan (migrations, producer, relay, consumers) around the app.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import TrimtabError
from .runtime import ServiceRuntime
from .telemetry import instrument_app, setup_telemetry

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"

#: `openapi_extra` of a route that takes bulk bodies (imports, batches, whole books): its bodies
#: may be as large as HTTP_MAX_BODY_BYTES; every other route's are limited to
#: HTTP_MAX_REQUEST_BYTES. The mark shows in the OpenAPI document as `x-trimtab-body: bulk`.
BULK_BODY: dict[str, Any] = {"x-trimtab-body": "bulk"}


def problem(status: int, title: str, detail: str, request: Request | None = None, *,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


#: What every route may answer besides its success, as the OpenAPI documents say it: an RFC 9457
#: problem (FastAPI's default 422 schema is not what the services send).
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Problem", "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "422 from schema validation: where and what"},
    },
    "additionalProperties": True,
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid request (problem+json; `errors` lists schema violations)",
          "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}}},
    "4XX": {"description": "Refused: unauthenticated, forbidden, not found, conflict... (problem+json)",
            "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}}},
    "5XX": {"description": "Internal error or a dependency unavailable (problem+json)",
            "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}}},
}


def _jsonable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))})
    return out


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(TrimtabError)
    async def _domain(request: Request, exc: TrimtabError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, request, **{k: v for k, v in exc.extra.items()})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "Invalid request", "the request does not match the schema", request,
                       errors=_jsonable_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers (405's `Allow`), with every method the path serves: the
        # router names only the first route of the path it tried (GET of a path that also takes
        # POST), found by fuzzing (schemathesis' allow_header_conformance).
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.url.path)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return problem(exc.status_code, str(exc.detail) if exc.status_code < 500 else "Error", str(exc.detail), request,
                       headers=headers or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged", request)


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods the OpenAPI document gives `path`: those of the path template spelled exactly
    like it if there is one (`/v1/securities/reference`, not `/v1/securities/{symbol}`), else
    of every template it matches."""
    table = getattr(app.state, "_allow_table", None)
    if table is None:
        table = []
        for template, ops in (app.openapi().get("paths") or {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            methods = sorted(m.upper() for m in ops if m.lower() in
                             {"get", "put", "post", "delete", "patch", "head", "options"})
            table.append((template, pattern, methods))
        app.state._allow_table = table
    exact = [m for template, _, methods in table if template == path for m in methods]
    if exact:
        return sorted(set(exact))
    return sorted({m for _, pattern, methods in table if pattern.match(path) for m in methods})


#: A JSON escape of U+0000: "\\u0000" preceded by an even number of other backslashes.
_NUL_ESCAPE = re.compile(rb"(\\+)u0000")
_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


def has_nul(body: bytes) -> bool:
    """Whether a request body carries U+0000: as a raw byte (CSV, text) or as a JSON escape
    (an escaped backslash followed by "u0000" is text, not a NUL)."""
    if b"\x00" in body:
        return True
    return any(len(m.group(1)) % 2 == 1 for m in _NUL_ESCAPE.finditer(body))


#: A JSON escape of a UTF-16 surrogate ("\\ud800" to "\\udfff"), with the backslashes before it.
_SURROGATE_ESCAPE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def has_lone_surrogate(body: bytes) -> bool:
    """Whether a JSON body escapes a surrogate that is not half of a pair ("\\ud800" alone):
    Python parses it into a string that cannot be encoded as UTF-8, so storing or echoing it
    failed as a 500."""
    pending_low_at = -1  # where the low half of the last high surrogate must start
    for m in _SURROGATE_ESCAPE.finditer(body):
        if len(m.group(1)) % 2 == 0:
            continue  # an escaped backslash, then text
        value = int(m.group(2), 16)
        start = m.start() + len(m.group(1)) - 1
        if pending_low_at >= 0:
            if start != pending_low_at or value < 0xDC00:
                return True
            pending_low_at = -1
        elif value < 0xDC00:
            pending_low_at = m.end()
        else:
            return True  # a low half without its high half
    return pending_low_at >= 0


class RejectNulMiddleware:
    """Refuse U+0000 anywhere in a request (path, query, body: a raw byte in any body, its escape
    in a JSON one, i.e. a JSON content type or a `format=jsonl` import), and an unpaired surrogate
    escape in a JSON body, with a 422 problem.

    PostgreSQL cannot store NUL in text (nor in JSONB), so a NUL that reached a query or an
    insert failed there as a 500, on every service and route that takes a string. Refused here,
    once, before any route runs. The body is read whole (FastAPI reads it whole anyway) and
    handed on unchanged.

    It also bounds the body: `max_body_bytes` for routes marked `BULK_BODY`, `max_request_bytes`
    (when given, and smaller) for every other route, so that a 30 MB risk questionnaire is not
    read, validated and stored. A larger body is a 413 problem, refused as soon as its declared
    length or the bytes read pass the limit."""

    def __init__(self, app: Any, max_body_bytes: int | None = None, max_request_bytes: int | None = None,
                 bulk: Sequence[tuple[frozenset[str], re.Pattern[str]]] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_request_bytes = max_request_bytes
        #: (methods, path pattern) of the routes marked BULK_BODY (`bulk_routes`); a list the app
        #: factory fills once the routers are included.
        self.bulk = bulk

    def _limit(self, scope: dict[str, Any]) -> tuple[int | None, str]:
        """The body limit of the route `scope` reaches, and the setting that sets it."""
        if self.max_request_bytes is None or (self.max_body_bytes is not None
                                              and self.max_request_bytes >= self.max_body_bytes):
            return self.max_body_bytes, "HTTP_MAX_BODY_BYTES"
        method, path = scope.get("method", ""), scope.get("path", "")
        if any(method in methods and pattern.match(path) for methods, pattern in self.bulk):
            return self.max_body_bytes, "HTTP_MAX_BODY_BYTES"
        return self.max_request_bytes, "HTTP_MAX_REQUEST_BYTES"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where, what = None, "a NUL character (U+0000)"
        if "\x00" in scope.get("path", ""):
            where = "path"
        elif b"%00" in scope.get("query_string", b"") or b"\x00" in scope.get("query_string", b""):
            where = "query"
        body_messages: list[dict[str, Any]] = []
        limit, setting = self._limit(scope)
        if where is None and limit is not None:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(scope, send, limit, setting)
                return
        if where is None and scope.get("method") in _WITH_BODY:
            chunks, more, size = [], True, 0
            while more:
                message = await receive()
                body_messages.append(message)
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if limit is not None and size > limit:
                    await self._too_large(scope, send, limit, setting)
                    return
                more = message.get("more_body", False)
            raw = b"".join(chunks)
            # JSON escapes mean something only in JSON: a CSV cell may hold the text "\u0000".
            headers = dict(scope.get("headers") or [])
            is_json = (b"json" in headers.get(b"content-type", b"").lower()
                       or b"format=jsonl" in scope.get("query_string", b""))
            if b"\x00" in raw or (is_json and has_nul(raw)):
                where = "body"
            elif is_json and has_lone_surrogate(raw):
                where, what = "body", "an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
        if where is not None:
            await _send_problem(scope, send, 422, "Invalid request",
                                f"the request's {where} contains {what}, which is not accepted")
            return
        if not body_messages:
            await self.app(scope, receive, send)
            return

        async def replay() -> dict[str, Any]:
            if body_messages:
                return body_messages.pop(0)
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(scope: dict[str, Any], send: Any, limit: int, setting: str) -> None:
        advice = ("send bulk data in several requests" if setting == "HTTP_MAX_BODY_BYTES"
                  else "this route takes no bulk data")
        await _send_problem(scope, send, 413, "Request body too large",
                            f"the request body is larger than {limit:,} bytes ({setting}); {advice}")


def bulk_routes(routes: Iterable[Any]) -> list[tuple[frozenset[str], re.Pattern[str]]]:
    """(methods, path pattern) of the routes marked `BULK_BODY`, for `RejectNulMiddleware`."""
    return [(frozenset(r.methods or ()), r.path_regex) for r in routes
            if (getattr(r, "openapi_extra", None) or {}).get("x-trimtab-body") == "bulk"]


async def _send_problem(scope: dict[str, Any], send: Any, status: int, title: str, detail: str) -> None:
    """A problem+json response sent from ASGI middleware (before any route, so without FastAPI's
    handlers); the same body as `problem`."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                       "instance": scope.get("path", "").replace("\x00", "\\0")}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(
    runtime: ServiceRuntime, routers: Sequence[APIRouter], *, title: str, description: str = "",
    version: str = "0.1.0",
) -> FastAPI:
    settings = runtime.settings
    setup_telemetry(settings.service_name, settings.otel_exporter_otlp_endpoint, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  openapi_url="/v1/openapi.json", docs_url="/v1/docs", redoc_url=None)
    app.state.settings = settings
    app.state.runtime = runtime
    install_problem_handlers(app)
    bulk: list[tuple[frozenset[str], re.Pattern[str]]] = []  # filled below, once the routes exist
    app.add_middleware(RejectNulMiddleware, max_body_bytes=settings.http_max_body_bytes,
                       max_request_bytes=settings.http_max_request_bytes, bulk=bulk)

    @app.get("/livez", tags=["health"], summary="The process is alive")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The broker and the database answer")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks,
                             "consumer_lag": runtime.consumer_lag()},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    from .ops import router as ops_router

    for r in [*routers, ops_router]:
        app.include_router(r, responses=PROBLEM_RESPONSES)
    bulk.extend(bulk_routes(route for r in routers for route in r.routes))
    instrument_app(app)
    return app
