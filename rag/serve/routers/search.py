"""Search (hits with per-stage timings), ask (the ``rag ask --json`` fields, or streamed), passage preview."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Response

from indexes.errors import NotFoundError
from rag.serve import answering
from rag.serve.deps import Services, allow, need, services
from rag.serve.keys import Principal
from rag.serve.schemas.rest import AskRequest, SearchRequest

log = logging.getLogger(__name__)
router = APIRouter(prefix="/collections/{name}", tags=["search"])


@router.post("/search")
def search(name: str, body: SearchRequest, s: Services = Depends(services),
           who: Principal = Depends(need("read"))) -> dict:
    with s.collections.reading(allow(who, name)) as kb:
        hits, timings = kb.search_timed(body.query, body.k, body.filters, body.mode)
    s.metrics.stages(timings)
    return s.collections.public({"query": body.query, "hits": [h.to_dict() for h in hits], "timings_ms": timings})


@router.post(
    "/ask", responses={200: {"content": {"text/event-stream": {}}, "description": "the answer, or its stream"}}
)
def ask(name: str, body: AskRequest, request: Request, s: Services = Depends(services),
        who: Principal = Depends(need("read"))):
    """``stream: true`` sends server-sent events: ``sources`` (the passages), ``token`` pieces, then ``answer``."""
    allow(who, name)
    s.collections.path(name)
    if body.stream:
        return s.gate.stream(request, answering.stream_answer(s, [name], [], body.question, body.k, body.filters))
    prepared = answering.answer_now(s, [name], [], body.question, body.k, body.filters)
    return s.collections.public(prepared.stream.answer.to_dict() | {"timings_ms": prepared.timings_ms})


@router.get("/passages/{chunk_id}")
def passage(name: str, chunk_id: str, window: int = Query(1, ge=0, le=5), s: Services = Depends(services),
            who: Principal = Depends(need("read"))) -> dict:
    """A chunk with ``window`` neighbours either side, its source, pages and heading path: what a citation opens. For a
    PDF, ``highlight`` gives the page's size and the passage's rectangles on it (points from the top-left) and the URL
    of the page's image; null for other formats or where the text cannot be placed."""
    cid = _chunk_id(chunk_id)
    with s.collections.reading(allow(who, name)) as kb:
        found = _chunk(kb, name, cid, chunk_id)
        around = kb.store.chunks.neighbours(cid, window)
    i = [c.id for c in around].index(cid)
    return s.collections.public(
        {
            "chunk_id": found.chunk_id,
            "source": found.source,
            "page": found.page,
            "page_end": found.page_end,
            "pages": found.pages,
            "headings": list(found.headings),
            "text": found.text,
            "before": [c.text for c in around[:i]],
            "after": [c.text for c in around[i + 1 :]],
            "highlight": _highlight(name, found),
        }
    )


@router.get("/passages/{chunk_id}/page.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "the cited page of a PDF"}})
def passage_page(name: str, chunk_id: str, s: Services = Depends(services),
                 who: Principal = Depends(need("read"))) -> Response:
    """The page of a PDF that the passage starts on, as a PNG (1.5 pixels a point)."""
    from ingest.loaders.pdf_pages import render_page

    cid = _chunk_id(chunk_id)
    with s.collections.reading(allow(who, name)) as kb:
        found = _chunk(kb, name, cid, chunk_id)
    path = Path(found.source)
    if found.page is None or path.suffix.lower() != ".pdf" or not path.is_file():
        raise NotFoundError(f"passage {chunk_id} is not on a PDF page that the server can read")
    return Response(render_page(path, found.page), media_type="image/png", headers={"Cache-Control": "private"})


def _chunk_id(chunk_id: str) -> int:
    try:
        return int(chunk_id, 16)
    except ValueError:
        raise NotFoundError(f"{chunk_id!r} is not a chunk id (16 hex digits, as in search results)") from None


def _chunk(kb, name: str, cid: int, chunk_id: str):
    found = kb.store.chunks.get([cid]).get(cid)
    if found is None:
        raise NotFoundError(f"collection {name!r} has no chunk {chunk_id} (it may have been re-indexed: search again)")
    return found


def _highlight(name: str, chunk) -> dict | None:
    path = Path(chunk.source)
    if chunk.page is None or path.suffix.lower() != ".pdf" or not path.is_file():
        return None
    try:
        from ingest.loaders.pdf_pages import passage_boxes

        boxes = passage_boxes(path, chunk.page, chunk.text)
    except Exception:  # noqa: BLE001 - no pypdfium2, a damaged file: the citation still opens, without the page
        log.info("no highlight for %s p.%s", chunk.source, chunk.page, exc_info=True)
        return None
    if boxes is None:
        return None
    return boxes.to_dict() | {"image": f"/collections/{name}/passages/{chunk.chunk_id}/page.png"}
