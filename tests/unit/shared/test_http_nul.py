"""U+0000 anywhere in a request is refused with a 422 problem before any route runs (PostgreSQL
cannot store it: it reached queries and inserts as a 500 on every service), and a token's subject
must fit the columns that record it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from trimtab.shared.auth import SUBJECT_MAX, decode_token, mint_token
from trimtab.shared.config import ServiceSettings
from trimtab.shared.errors import Unauthorized
from trimtab.shared.http import (
    BULK_BODY,
    RejectNulMiddleware,
    bulk_routes,
    has_lone_surrogate,
    has_nul,
    install_problem_handlers,
)


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(RejectNulMiddleware)

    @app.get("/items/{item_id}")
    async def get_item(item_id: str, q: str = "") -> dict[str, str]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def post_item(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    return app


async def _call(method: str, url: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as c:
        return await c.request(method, url, **kw)


@pytest.mark.parametrize(("method", "url", "kw", "where"), [
    ("GET", "/items/a%00b", {}, "path"),
    ("GET", "/items/a?q=x%00", {}, "query"),
    ("POST", "/items", {"content": b'{"name": "bad\\u0000"}', "headers": {"content-type": "application/json"}}, "body"),
    ("POST", "/items", {"content": b"account_id,name\na1,x\x00y\n", "headers": {"content-type": "text/csv"}}, "body"),
])
async def test_a_nul_anywhere_is_a_422_problem(method: str, url: str, kw: dict, where: str) -> None:  # type: ignore[type-arg]
    r = await _call(method, url, **kw)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert f"request's {where} contains a NUL" in r.json()["detail"]


async def test_json_escapes_are_text_in_a_csv_body_and_nul_in_a_jsonl_import() -> None:
    """A CSV cell may hold the text \\u0000 or C:\\udb12 (no NUL, no surrogate: a review finding);
    a JSON Lines import (format=jsonl, any content type) is JSON, so its escapes count."""
    csv = b"account_id,note\na1,C:\\u0000 and C:\\udb12\n"
    r = await _call("POST", "/items", content=csv, headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    r = await _call("POST", "/items?format=jsonl", content=b'{"note": "x\\u0000"}\n',
                    headers={"content-type": "text/plain"})
    assert r.status_code == 422


async def test_clean_requests_and_escaped_backslashes_pass_unchanged() -> None:
    body = b'{"name": "C:\\\\u0000dir", "note": "' + b"x" * 200_000 + b'"}'
    r = await _call("POST", "/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json() == {"received": len(body)}, "the body reaches the route whole"
    r = await _call("GET", "/items/a%20b?q=100%25")
    assert r.status_code == 200 and r.json() == {"item_id": "a b", "q": "100%"}


async def test_an_unpaired_surrogate_escape_is_a_422_and_a_pair_passes() -> None:
    """Python parses "\\ud800" into a string UTF-8 cannot encode: storing or echoing it was a 500."""
    r = await _call("POST", "/items", content=b'{"name": "x\\ud800y"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unpaired UTF-16 surrogate" in r.json()["detail"]
    r = await _call("POST", "/items", content=b'{"name": "\\ud83d\\ude00"}', headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_has_lone_surrogate_pairs_halves_and_skips_escaped_backslashes() -> None:
    assert has_lone_surrogate(b'"\\ud800"') and has_lone_surrogate(b'"\\ude00"')
    assert has_lone_surrogate(b'"\\ud83d x"') and has_lone_surrogate(b'"\\ud83d\\ud83d\\ude00"')
    assert not has_lone_surrogate(b'"\\ud83d\\ude00"') and not has_lone_surrogate(b'"\\uD83D\\uDE00"')
    assert not has_lone_surrogate(b'"\\\\ud800"'), "an escaped backslash, then text"


def test_has_nul_tells_an_escape_from_an_escaped_backslash() -> None:
    assert has_nul(b'"\\u0000"') and has_nul(b'"\\\\\\u0000"') and has_nul(b"\x00")
    assert not has_nul(b'"\\\\u0000"') and not has_nul(b'"u0000"')


def test_a_token_subject_must_fit_the_columns_that_record_it() -> None:
    s = ServiceSettings()
    assert decode_token(s, mint_token(s, subject="a" * SUBJECT_MAX, tenant_id="f")).subject == "a" * SUBJECT_MAX
    for bad in ("a" * (SUBJECT_MAX + 1), "a\x00b"):
        with pytest.raises(Unauthorized):
            decode_token(s, mint_token(s, subject=bad, tenant_id="f"))
    with pytest.raises(Unauthorized):
        decode_token(s, mint_token(s, subject="a", tenant_id="f\x00"))


@pytest.mark.parametrize("package", ["market_data", "drift_monitor", "optimizer", "risk", "explainer", "audit"])
async def test_every_service_refuses_a_nul_before_its_routes(package: str) -> None:
    """Each service's app (built by the shared factory, not started: the refusal needs neither
    the database nor the broker) answers the fuzzer's 500 case, the operators' dead-letter query
    with a NUL, with a 422 problem."""
    import importlib

    from tests.support import auth, settings

    mod = importlib.import_module(f"trimtab.{package}.app")
    app = mod.create(settings(mod.Settings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/ops/dead-letters", params={"consumer": "\x00"}, headers=auth(scopes=["ops:read"]))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text


async def test_the_openapi_documents_promise_problems_and_405_says_what_is_allowed() -> None:
    """Platform teams generate clients from /v1/openapi.json: every route's errors are documented
    as the problem+json the services send (not FastAPI's default 422 schema), and a wrong
    method's 405 names the allowed ones."""
    from tests.support import settings
    from trimtab.optimizer.app import Settings, create

    app = create(settings(Settings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    spec = app.openapi()
    assert "HTTPValidationError" not in str(spec)
    what_if = spec["paths"]["/v1/rebalance/what-if"]["post"]["responses"]
    assert set(what_if) >= {"200", "422", "4XX", "5XX"}
    assert list(what_if["422"]["content"]) == ["application/problem+json"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.delete("/v1/rebalance/what-if")
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"] == "POST"


async def test_a_body_over_the_limit_is_a_413_problem_and_one_under_it_passes() -> None:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(RejectNulMiddleware, max_body_bytes=1024)

    @app.post("/items")
    async def post_item(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    async def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(4):
            yield b"x" * 400

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.post("/items", content=b"x" * 1024)
        declared = await c.post("/items", content=b"x" * 1025)
        streamed = await c.post("/items", content=chunks())
    assert ok.status_code == 200 and ok.json() == {"received": 1024}
    for r in (declared, streamed):
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json", r.text
        assert "HTTP_MAX_BODY_BYTES" in r.json()["detail"]


async def test_a_route_without_bulk_data_takes_small_bodies_only() -> None:
    """Found by the fuzzing: a 30 MB risk questionnaire was read, validated and stored. Routes
    not marked BULK_BODY take at most HTTP_MAX_REQUEST_BYTES; bulk routes HTTP_MAX_BODY_BYTES."""
    app = FastAPI()
    install_problem_handlers(app)
    bulk: list = []
    app.add_middleware(RejectNulMiddleware, max_body_bytes=4096, max_request_bytes=1024, bulk=bulk)

    @app.post("/decisions")
    async def decide(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.post("/imports/{kind}", openapi_extra=BULK_BODY)
    async def import_(kind: str, request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    bulk.extend(bulk_routes(app.routes))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        small_ok = await c.post("/decisions", content=b"x" * 1024)
        small_big = await c.post("/decisions", content=b"x" * 1025)
        bulk_ok = await c.post("/imports/lots", content=b"x" * 4096)
        bulk_big = await c.post("/imports/lots", content=b"x" * 4097)
    assert small_ok.json() == {"received": 1024} and bulk_ok.json() == {"received": 4096}
    assert small_big.status_code == 413 and "HTTP_MAX_REQUEST_BYTES" in small_big.json()["detail"]
    assert bulk_big.status_code == 413 and "HTTP_MAX_BODY_BYTES" in bulk_big.json()["detail"]
    assert app.openapi()["paths"]["/imports/{kind}"]["post"]["x-trimtab-body"] == "bulk"


async def test_the_services_risk_profile_is_small_and_their_imports_bulk() -> None:
    """On the real apps (not started): a 2 MiB risk profile is a 413 before it is read whole; the
    same size on a bulk route (risk what-if, drift-monitor import) is read and validated (422)."""
    from tests.support import auth, settings
    from trimtab.drift_monitor.app import Settings as DmSettings
    from trimtab.drift_monitor.app import create as create_dm
    from trimtab.risk.app import Settings as RiskSettings
    from trimtab.risk.app import create as create_risk

    big = b'{"answers": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    json_h = {**auth(scopes=["risk:write", "risk:read", "book:write"]), "content-type": "application/json"}
    risk = create_risk(settings(RiskSettings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    dm = create_dm(settings(DmSettings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=risk), base_url="http://t") as c:
        profile = await c.put("/v1/accounts/A1/risk-profile", content=big, headers=json_h)
        what_if = await c.post("/v1/risk/what-if", content=big, headers=json_h)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dm), base_url="http://t") as c:
        imported = await c.post("/v1/accounts/bulk", content=big, headers=json_h)
    assert profile.status_code == 413 and "HTTP_MAX_REQUEST_BYTES" in profile.json()["detail"], profile.text
    assert what_if.status_code == 422, what_if.text
    assert imported.status_code == 422, imported.text


async def test_a_405_names_every_method_of_the_path() -> None:
    """Found by `make fuzz` (allow_header_conformance): a path served by several routes (GET and
    POST /v1/securities) answered a wrong method with `Allow: GET`, the first route the router
    tried; a literal path next to a template (/v1/securities/reference beside {symbol}) named
    the template's methods."""
    from tests.support import settings
    from trimtab.market_data.app import Settings, create

    app = create(settings(Settings, "postgresql://127.0.0.1:1/none", "127.0.0.1:1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        both = await c.request("OPTIONS", "/v1/securities")
        literal = await c.request("OPTIONS", "/v1/securities/reference")
        templated = await c.request("DELETE", "/v1/securities/VTI")
    assert both.status_code == 405 and both.headers["allow"] == "GET, POST"
    assert literal.status_code == 405 and literal.headers["allow"] == "POST"
    assert templated.status_code == 405 and templated.headers["allow"] == "GET"
    assert both.headers["content-type"] == "application/problem+json"
