"""Thin HTTP routes of drift-monitor (`/v1`): advisors, model portfolios (with sleeves), households,
accounts with their lots and cash (paged, by household or advisor), cash flows and withdrawal requests, bulk import / export (JSON, CSV, JSON Lines),
and each account's and household's drift. Scopes book:read / book:write; every query
is scoped to the caller's tenant, so another tenant's resource is simply not found."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.responses import PlainTextResponse

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import Invalid
from trimtab.shared.http import BULK_BODY
from trimtab.shared.pagination import link_next
from trimtab.shared.runtime import ServiceRuntime

from . import advisors, service, transfer
from .schemas import (
    AccountIn,
    AccountOut,
    AdvisorIn,
    AdvisorOut,
    BulkIn,
    BulkOut,
    CashFlowIn,
    DriftOut,
    HouseholdDriftOut,
    HouseholdIn,
    HouseholdOut,
    ImportOut,
    LotsIn,
    ModelIn,
    ModelOut,
    WithdrawalIn,
    WithdrawalOut,
)

router = APIRouter(prefix="/v1")
Reader = Annotated[Principal, Depends(requires("book:read"))]
Writer = Annotated[Principal, Depends(requires("book:write"))]


def _rt(request: Request) -> ServiceRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _quiet(request: Request) -> float:
    return float(request.app.state.drift_min_interval_s)


#: Page size of GET /v1/accounts (each account carries its lots, so pages stay modest).
DEFAULT_PAGE = 100
MAX_PAGE = 1_000
Kind = Literal["accounts", "lots", "models"]
Fmt = Literal["csv", "jsonl"]
MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


@router.post("/advisors", response_model=AdvisorOut, status_code=status.HTTP_201_CREATED, tags=["advisors"],
             summary="Create an advisor, or update its name and email (200)",
             responses={200: {"model": AdvisorOut, "description": "the advisor existed: updated"}})
async def put_advisor(body: AdvisorIn, principal: Writer, request: Request, response: Response) -> AdvisorOut:
    out, created = await advisors.put_advisor(_rt(request), principal.tenant_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/advisors", response_model=list[AdvisorOut], tags=["advisors"])
async def list_advisors(principal: Reader, request: Request) -> list[AdvisorOut]:
    return await advisors.list_advisors(_rt(request), principal.tenant_id)


@router.get("/advisors/{advisor_id}", response_model=AdvisorOut, tags=["advisors"])
async def get_advisor(advisor_id: str, principal: Reader, request: Request) -> AdvisorOut:
    return await advisors.get_advisor(_rt(request), principal.tenant_id, advisor_id)


@router.post("/models", response_model=ModelOut, status_code=status.HTTP_201_CREATED, tags=["models"],
             summary="Create a model portfolio, or replace its name and targets (200)",
             responses={200: {"model": ModelOut, "description": "the model existed: replaced"}})
async def put_model(body: ModelIn, principal: Writer, request: Request, response: Response) -> ModelOut:
    out, created = await service.put_model(_rt(request), principal.tenant_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/models", response_model=list[ModelOut], tags=["models"])
async def list_models(principal: Reader, request: Request) -> list[ModelOut]:
    return await service.list_models(_rt(request), principal.tenant_id)


@router.get("/models/{model_id}", response_model=ModelOut, tags=["models"])
async def get_model(model_id: str, principal: Reader, request: Request) -> ModelOut:
    return await service.get_model(_rt(request), principal.tenant_id, model_id)


@router.post("/households", response_model=HouseholdOut, tags=["households"],
             summary="Create or rename a household (accounts also create theirs on the fly)")
async def create_household(body: HouseholdIn, principal: Writer, request: Request) -> HouseholdOut:
    return await service.create_household(_rt(request), principal.tenant_id, body)


@router.get("/households/{household_id}", response_model=HouseholdOut, tags=["households"])
async def get_household(household_id: str, principal: Reader, request: Request) -> HouseholdOut:
    return await service.get_household(_rt(request), principal.tenant_id, household_id)


@router.post("/accounts", response_model=AccountOut, status_code=status.HTTP_201_CREATED, tags=["accounts"],
             summary="Create an account with its lots and cash", openapi_extra=BULK_BODY)
async def create_account(body: AccountIn, principal: Writer, request: Request) -> AccountOut:
    return await service.create_account(_rt(request), principal.tenant_id, body)


@router.post("/accounts/bulk", response_model=BulkOut, tags=["accounts"],
             summary="Create many accounts in one transaction; bad rows are reported, good rows kept", openapi_extra=BULK_BODY)
async def bulk_import(body: BulkIn, principal: Writer, request: Request) -> BulkOut:
    return await service.bulk_import(_rt(request), principal.tenant_id, body.accounts)


@router.get("/accounts", response_model=list[AccountOut], tags=["accounts"],
            summary="Accounts in account_id order, a page at a time; the next page's cursor is in the "
                    "X-Next-Cursor header (and a Link rel=next), absent on the last page")
async def list_accounts(principal: Reader, request: Request, response: Response,
                        household_id: Annotated[str | None, Query(max_length=64)] = None,
                        advisor_id: Annotated[str | None, Query(max_length=64)] = None,
                        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
                        cursor: Annotated[str | None, Query(max_length=200)] = None) -> list[AccountOut]:
    page, nxt = await service.list_accounts(_rt(request), principal.tenant_id, household_id, advisor_id,
                                            limit, cursor)
    link_next(request, response, nxt)
    return page


@router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def get_account(account_id: str, principal: Reader, request: Request) -> AccountOut:
    return await service.get_account(_rt(request), principal.tenant_id, account_id)


@router.put("/accounts/{account_id}/lots", response_model=AccountOut, tags=["accounts"],
            summary="Replace the account's tax lots (and optionally its cash)", openapi_extra=BULK_BODY)
async def replace_lots(account_id: str, body: LotsIn, principal: Writer, request: Request) -> AccountOut:
    return await service.replace_lots(_rt(request), principal.tenant_id, account_id, body)


@router.get("/accounts/{account_id}/drift", response_model=DriftOut, tags=["drift"],
            summary="Current weights, targets, deviations and the rule that would fire")
async def get_drift(account_id: str, principal: Reader, request: Request) -> DriftOut:
    return await service.account_drift(_rt(request), principal.tenant_id, account_id, _quiet(request))


@router.get("/households/{household_id}/drift", response_model=HouseholdDriftOut, tags=["drift"],
            summary="Every account of the household and the household as one portfolio")
async def get_household_drift(household_id: str, principal: Reader, request: Request) -> HouseholdDriftOut:
    return await service.household_drift(_rt(request), principal.tenant_id, household_id, _quiet(request))


@router.post("/accounts/{account_id}/cash-flows", response_model=AccountOut, tags=["accounts"],
             summary="Deposit (positive) or take out (negative) cash; may fire a cash trigger at once")
async def post_cash_flow(account_id: str, body: CashFlowIn, principal: Writer, request: Request) -> AccountOut:
    return await service.cash_flow(_rt(request), principal.tenant_id, account_id, body, _quiet(request))


@router.post("/accounts/{account_id}/withdrawals", response_model=WithdrawalOut, status_code=status.HTTP_201_CREATED,
             tags=["accounts"], summary="Ask for cash by a date; fires 'withdrawal' while cash does not cover it")
async def post_withdrawal(account_id: str, body: WithdrawalIn, principal: Writer, request: Request) -> WithdrawalOut:
    return await service.request_withdrawal(_rt(request), principal.tenant_id, account_id, body, _quiet(request))


@router.get("/accounts/{account_id}/withdrawals", response_model=list[WithdrawalOut], tags=["accounts"])
async def get_withdrawals(account_id: str, principal: Reader, request: Request) -> list[WithdrawalOut]:
    await service.get_account(_rt(request), principal.tenant_id, account_id)  # 404 for another tenant
    return await service.list_withdrawals(_rt(request), principal.tenant_id, account_id)


@router.post("/accounts/{account_id}/withdrawals/{withdrawal_id}/{action}", response_model=WithdrawalOut,
             tags=["accounts"], summary="Close a withdrawal: paid (cash leaves the account) or cancelled")
async def close_withdrawal(account_id: str, withdrawal_id: uuid.UUID, action: Literal["paid", "cancelled"],
                           principal: Writer, request: Request) -> WithdrawalOut:
    return await service.close_withdrawal(_rt(request), principal.tenant_id, account_id, withdrawal_id, action)


@router.post("/import/{kind}", response_model=ImportOut, tags=["bulk"],
             summary="Import accounts, lots or models from CSV or JSON Lines (the raw body), row by row", openapi_extra=BULK_BODY)
async def import_file(kind: Kind, principal: Writer, request: Request,
                      body: Annotated[str, Body(media_type="text/plain")],
                      format: Annotated[Fmt, Query()] = "csv") -> ImportOut:
    try:
        return await transfer.import_rows(_rt(request), principal.tenant_id, kind, format, body)
    except transfer.ImportError_ as e:
        raise Invalid(str(e)) from None


@router.get("/export/{kind}", tags=["bulk"], response_class=PlainTextResponse,
            summary="Export accounts, lots or models as CSV or JSON Lines (what import reads back)",
            responses={200: {"description": "the rows, as `format` asks",
                             "content": {m: {"schema": {"type": "string"}} for m in MEDIA.values()}}})
async def export_file(kind: Kind, principal: Reader, request: Request,
                      format: Annotated[Fmt, Query()] = "csv") -> PlainTextResponse:
    text = await transfer.export_rows(_rt(request), principal.tenant_id, kind, format)
    return PlainTextResponse(text, media_type=MEDIA[format])
