"""Bearer-token auth: JWTs with scopes and a tenant, checked on every request.

Every route declares the scope it needs (`Principal = Depends(requires("book:write"))`); the
principal's tenant scopes every query, so another tenant's resource is simply not found.
HS256 with a shared secret by default (development); RS256/EdDSA with `JWT_PUBLIC_KEY` in
production, where an identity provider signs the tokens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .config import ServiceSettings
from .errors import Forbidden, Unauthorized

SCOPES = {
    "market:read": "read securities and prices",
    "market:write": "publish ticks and replays",
    "book:read": "read accounts, holdings, models, drift",
    "book:write": "create and change accounts, holdings, models",
    "proposals:read": "read proposals",
    "proposals:decide": "approve, reject or override proposals (an advisor: those of their own queue)",
    "proposals:decide-any": "decide proposals in any advisor's queue (supervisors, the trading desk)",
    "risk:read": "read risk measures",
    "explain:read": "read explanations",
    "audit:read": "read the audit record, proofs and exports",
    "audit:write": "audit administration (checkpoints, replays)",
    "trades:execute": "report fills (the OMS)",
    "ops:read": "platform operators: read a service's dead letters",
    "ops:write": "platform operators: resolve a parked key",
}
ALL_SCOPES = sorted(SCOPES)


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    scopes: frozenset[str]


def mint_token(
    settings: ServiceSettings,
    *,
    subject: str,
    tenant_id: str,
    scopes: list[str] | None = None,
    ttl_s: int = 3600,
    private_key: str | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "tenant": tenant_id,
        "scope": " ".join(scopes if scopes is not None else ALL_SCOPES),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    key = private_key or settings.jwt_secret
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)


#: Longest accepted token subject: the services record it in columns of this length.
SUBJECT_MAX = 200


def decode_token(settings: ServiceSettings, token: str) -> Principal:
    key = settings.jwt_public_key or settings.jwt_secret
    try:
        claims = jwt.decode(
            token, key, algorithms=[settings.jwt_algorithm], audience=settings.jwt_audience,
            issuer=settings.jwt_issuer, options={"require": ["exp", "sub", "tenant"]},
        )
    except jwt.PyJWTError as e:
        raise Unauthorized(f"invalid token: {e}") from None
    tenant, subject = str(claims["tenant"]), str(claims["sub"])
    if not tenant or len(tenant) > 64 or "\x00" in tenant:
        raise Unauthorized("invalid token: bad tenant claim")
    # The subject is recorded as who decided or changed something (columns of 200 characters).
    if not subject or len(subject) > SUBJECT_MAX or "\x00" in subject:
        raise Unauthorized(f"invalid token: the subject must be 1 to {SUBJECT_MAX} characters")
    return Principal(
        subject=subject, tenant_id=tenant,
        scopes=frozenset(str(claims.get("scope", "")).split()),
    )


_bearer = HTTPBearer(auto_error=False)


def requires(*scopes: str) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's principal, having every scope in `scopes`."""

    def dep(
        request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise Unauthorized("a bearer token is required")
        principal = decode_token(request.app.state.settings, creds.credentials)
        missing = [s for s in scopes if s not in principal.scopes]
        if missing:
            raise Forbidden(f"token lacks scope(s): {', '.join(missing)}")
        return principal

    return dep


def main() -> None:
    """`trimtab-token`: mint a development token."""
    p = argparse.ArgumentParser(description="Mint a Trimtab API token (development secret).")
    p.add_argument("--tenant", default="demo")
    p.add_argument("--subject", default="advisor@demo")
    p.add_argument("--scopes", default=" ".join(ALL_SCOPES))
    p.add_argument("--ttl", type=int, default=86400)
    a = p.parse_args()
    print(mint_token(ServiceSettings(), subject=a.subject, tenant_id=a.tenant, scopes=a.scopes.split(), ttl_s=a.ttl))
