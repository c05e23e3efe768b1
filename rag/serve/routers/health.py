"""Liveness and readiness (models loaded, the LLM not stalled), open to all; Prometheus metrics, behind a key
when keys exist."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from rag.serve.deps import Services, need, services

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(response: Response, s: Services = Depends(services)) -> dict:
    """503 until the models are loaded, and while an answer has made no progress for ``llm_stall_s`` (the LLM is
    stuck: the watchdog frees it or ends the process)."""
    stalled = s.gate.stalled()
    ready = s.ready and not stalled
    if not ready:
        response.status_code = 503
    body = {
        "ready": ready,
        "collections": len(s.collections.names()),
        "llm_active": s.gate.active,
        "llm_waiting": s.gate.waiting,
    }
    if stalled:
        body["llm"] = f"stalled: no progress for {max(x.idle_s() for x in stalled):.0f} s"
    return body


@router.get("/metrics", dependencies=[Depends(need("read"))])
def metrics(s: Services = Depends(services)) -> Response:
    s.metrics.llm_waiting.set(s.gate.waiting)
    s.metrics.llm_active.set(s.gate.active)
    s.metrics.jobs_queued.set(s.jobs.depth())
    body, content_type = s.metrics.render()
    return Response(body, media_type=content_type)
