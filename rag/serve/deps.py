"""Shared dependencies: the services of the app (set once by ``create_app``) and the API-key check."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Request

from rag.serve.collections import Collections
from rag.serve.db import ServerDB
from rag.serve.gate import LLMGate
from rag.serve.jobs import Jobs
from rag.serve.keys import OPEN, Principal, principal_for
from rag.serve.metrics import Metrics
from rag.serve.settings import ServeSettings


@dataclass
class Services:
    settings: ServeSettings
    db: ServerDB
    collections: Collections
    jobs: Jobs
    gate: LLMGate
    metrics: Metrics
    ready: bool = False


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request, authorization: str | None = Header(None),
              x_api_key: str | None = Header(None)) -> Principal:
    return caller(services(request), authorization, x_api_key)


def caller(s: Services, authorization: str | None, x_api_key: str | None) -> Principal:
    """Who sends these headers: 401 without a valid key (when the server has keys)."""
    if not s.db.keys_enabled():
        return OPEN  # only possible on loopback: `rag serve` refuses other hosts without keys
    token = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    if not token:
        raise HTTPException(
            401,
            "this server needs an API key: send it as 'Authorization: Bearer KEY' "
            "(an admin creates keys with `rag keys create --root DIR`)",
            {"WWW-Authenticate": "Bearer"},
        )
    found = principal_for(s.db, token)
    if found is None:
        raise HTTPException(401, "the API key is not valid (mistyped or revoked)", {"WWW-Authenticate": "Bearer"})
    return found


def need(scope: str):
    """A dependency: the caller, who must hold ``scope`` (read, ingest or admin)."""

    def check(who: Principal = Depends(principal)) -> Principal:
        if not who.may(scope):
            raise HTTPException(
                403, f"this API key lacks the {scope!r} scope needed here (it has: {', '.join(sorted(who.scopes))})"
            )
        return who

    return check


def allow(who: Principal, collection: str) -> str:
    if not who.may_use(collection):
        raise HTTPException(403, f"this API key may not use the collection {collection!r}")
    return collection
