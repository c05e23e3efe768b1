"""Liveness, readiness (models loaded) and Prometheus metrics; open to all, they reveal no documents."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from rag.serve.deps import Services, services

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(response: Response, s: Services = Depends(services)) -> dict:
    if not s.ready:
        response.status_code = 503
    return {"ready": s.ready, "collections": len(s.collections.names())}


@router.get("/metrics")
def metrics(s: Services = Depends(services)) -> Response:
    s.metrics.llm_waiting.set(s.gate.waiting)
    s.metrics.llm_active.set(s.gate.active)
    s.metrics.jobs_queued.set(s.jobs.depth())
    body, content_type = s.metrics.render()
    return Response(body, media_type=content_type)
