"""Thin HTTP routes of drift-monitor (`/v1`): model portfolios, households, accounts with their
lots and cash, bulk import, and each account's drift. Scopes book:read / book:write; every query
is scoped to the caller's tenant, so another tenant's resource is simply not found."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from trimtab.shared.auth import Principal, requires
from trimtab.shared.runtime import ServiceRuntime

from . import service
from .schemas import (
    AccountIn,
    AccountOut,
    BulkIn,
    BulkOut,
    DriftOut,
    HouseholdIn,
    HouseholdOut,
    LotsIn,
    ModelIn,
    ModelOut,
)

router = APIRouter(prefix="/v1")
Reader = Annotated[Principal, Depends(requires("book:read"))]
Writer = Annotated[Principal, Depends(requires("book:write"))]


def _rt(request: Request) -> ServiceRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


@router.post("/models", response_model=ModelOut, status_code=status.HTTP_201_CREATED, tags=["models"],
             summary="Create a model portfolio, or replace its name and targets (200)")
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
             summary="Create an account with its lots and cash")
async def create_account(body: AccountIn, principal: Writer, request: Request) -> AccountOut:
    return await service.create_account(_rt(request), principal.tenant_id, body)


@router.post("/accounts/bulk", response_model=BulkOut, tags=["accounts"],
             summary="Create many accounts in one transaction; bad rows are reported, good rows kept")
async def bulk_import(body: BulkIn, principal: Writer, request: Request) -> BulkOut:
    return await service.bulk_import(_rt(request), principal.tenant_id, body.accounts)


@router.get("/accounts", response_model=list[AccountOut], tags=["accounts"])
async def list_accounts(principal: Reader, request: Request,
                        household_id: Annotated[str | None, Query(max_length=64)] = None) -> list[AccountOut]:
    return await service.list_accounts(_rt(request), principal.tenant_id, household_id)


@router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
async def get_account(account_id: str, principal: Reader, request: Request) -> AccountOut:
    return await service.get_account(_rt(request), principal.tenant_id, account_id)


@router.put("/accounts/{account_id}/lots", response_model=AccountOut, tags=["accounts"],
            summary="Replace the account's tax lots (and optionally its cash)")
async def replace_lots(account_id: str, body: LotsIn, principal: Writer, request: Request) -> AccountOut:
    return await service.replace_lots(_rt(request), principal.tenant_id, account_id, body)


@router.get("/accounts/{account_id}/drift", response_model=DriftOut, tags=["drift"],
            summary="Current weights, targets, deviations and the rule that would fire")
async def get_drift(account_id: str, principal: Reader, request: Request) -> DriftOut:
    return await service.account_drift(_rt(request), principal.tenant_id, account_id)
