"""Search (hits with per-stage timings), ask (the ``rag ask --json`` fields, or streamed), passage preview."""

from __future__ import annotations

import json
import logging
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from indexes.errors import NotFoundError, RagError
from rag.retrieval import Filters
from rag.serve import answering
from rag.serve.deps import Services, allow, need, services
from rag.serve.errors import error_body, status_of
from rag.serve.gate import answer_stream
from rag.serve.keys import Principal

log = logging.getLogger(__name__)
router = APIRouter(prefix="/collections/{name}", tags=["search"])


class Query_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = None  # glob, e.g. "*.pdf"
    page_min: int | None = Field(None, ge=1)
    page_max: int | None = Field(None, ge=1)

    @property
    def filters(self) -> Filters:
        return Filters(source=self.source, page_min=self.page_min, page_max=self.page_max)


class SearchRequest(Query_):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = None


class AskRequest(Query_):
    question: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=50)
    stream: bool = False


@router.post("/search")
def search(name: str, body: SearchRequest, s: Services = Depends(services), who: Principal = Depends(need("read"))) -> dict:
    with s.collections.reading(allow(who, name)) as kb:
        hits, timings = kb.search_timed(body.query, body.k, body.filters, body.mode)
    s.metrics.stages(timings)
    return s.collections.public({"query": body.query, "hits": [h.to_dict() for h in hits], "timings_ms": timings})


@router.post("/ask", responses={200: {"content": {"text/event-stream": {}}, "description": "the answer, or its stream"}})
def ask(name: str, body: AskRequest, request: Request, s: Services = Depends(services), who: Principal = Depends(need("read"))):
    """``stream: true`` sends server-sent events: ``sources`` (the passages), ``token`` pieces, then ``answer``."""
    allow(who, name)
    s.collections.path(name)
    if body.stream:
        return answer_stream(request, stream_answer(s, [name], [], body.question, body.k, body.filters), s.gate.acquire())
    prepared = answering.answer_now(s, [name], [], body.question, body.k, body.filters)
    return s.collections.public(prepared.stream.answer.to_dict() | {"timings_ms": prepared.timings_ms})


def _event(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_answer(s: Services, collections: list[str], history, question: str, k, filters, on_answer=None):
    """The event stream of one answer; ``on_answer(prepared)`` runs when it is complete (e.g. to save a chat turn)."""
    try:
        prepared = answering.prepare(s, collections, history, question, k, filters)
        yield _event("sources", s.collections.public({"question": question, "standalone": prepared.standalone,
                                 "sources": [prepared.source(h, False) for h in prepared.stream.hits]}))
        for piece in prepared.stream:
            if piece:
                yield _event("token", {"text": piece})
        answer = prepared.stream.answer
        if on_answer is not None:
            on_answer(prepared)
        yield _event("answer", s.collections.public(answer.to_dict() | {"standalone": prepared.standalone,
                                                                         "timings_ms": prepared.timings_ms}))
    except RagError as exc:
        yield _event("error", error_body(status_of(exc), str(exc)))
    except Exception as exc:
        log.exception("error while streaming an answer")
        yield _event("error", error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"))


@router.get("/passages/{chunk_id}")
def passage(name: str, chunk_id: str, window: int = Query(1, ge=0, le=5), s: Services = Depends(services),
            who: Principal = Depends(need("read"))) -> dict:
    """A chunk with ``window`` neighbours either side, its source, pages and heading path: what a citation opens."""
    try:
        cid = int(chunk_id, 16)
    except ValueError:
        raise NotFoundError(f"{chunk_id!r} is not a chunk id (16 hex digits, as in search results)") from None
    with s.collections.reading(allow(who, name)) as kb:
        found = kb.store.chunks.get([cid]).get(cid)
        if found is None:
            raise NotFoundError(f"collection {name!r} has no chunk {chunk_id} (it may have been re-indexed: search again)")
        around = kb.store.chunks.neighbours(cid, window)
    i = [c.id for c in around].index(cid)
    return s.collections.public({"chunk_id": found.chunk_id, "source": found.source, "page": found.page, "page_end": found.page_end,
            "pages": found.pages, "headings": list(found.headings), "text": found.text,
            "before": [c.text for c in around[:i]], "after": [c.text for c in around[i + 1:]]})
