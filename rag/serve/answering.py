"""One answer for the server: rewrite a follow-up with the conversation, retrieve, generate, cite.

The LLM gate is held by the caller around all of it (the rewrite uses the LLM too); retrieval holds only the
collection's read lock, so searches go on while an answer is generated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from indexes.errors import NotFoundError, RagError
from rag.answer.generation import standalone_question
from rag.answer.prompts import language_of
from rag.answer.stream import AnswerStream
from rag.retrieval import Filters, rrf
from rag.serve.deps import Services, allow
from rag.serve.errors import error_body, status_of
from rag.serve.keys import Principal
from rag.types import Hit

log = logging.getLogger(__name__)


@dataclass
class PreparedAnswer:
    question: str
    standalone: str
    stream: AnswerStream
    timings_ms: dict[str, float]
    collection_of: dict[str, str]  # chunk id -> the collection it came from (a citation opens it there)

    def source(self, hit: Hit, cited: bool) -> dict:
        return source_dict(hit, cited) | {"collection": self.collection_of.get(hit.chunk.chunk_id)}

    def sources(self) -> list[dict]:
        """The passages the answer was given, each marked cited or not."""
        answer = self.stream.answer
        cited = {c.number for c in answer.citations}
        return [self.source(h, h.rank in cited) for h in answer.hits]


ALL = "all-collections"  # the model id that answers from every collection the caller may use


def targets(s: Services, who: Principal, name: str) -> list[str]:
    """The collections a model id or a chat's collection names: one, or with ``all-collections`` every one the key may
    use."""
    if name == ALL and not (s.collections.root / name).exists():
        names = [n for n in s.collections.names() if who.may_use(n)]
        if not names:
            raise NotFoundError("there are no collections yet: create one with POST /collections")
        return names
    s.collections.path(allow(who, name))  # 404 before anything else
    return [name]


def prepare(s: Services, collections: Sequence[str], history: Sequence[tuple[str, str]], question: str,
            k: int | None = None, filters: Filters = Filters(), max_tokens: int | None = None) -> PreparedAnswer:
    """Several collections: each one's passages, fused by reciprocal rank (their scores are not comparable)."""
    t0 = time.perf_counter()
    standalone = standalone_question(s.collections.generator, history, question)
    t1 = time.perf_counter()
    per_collection: list[list[Hit]] = []
    collection_of: dict[str, str] = {}
    for name in collections:
        with s.collections.reading(name) as kb:
            per_collection.append(kb.context(standalone, k, filters))
        collection_of.update(
            (h.chunk.chunk_id, name) for h in per_collection[-1] if h.chunk.chunk_id not in collection_of
        )
    if len(per_collection) == 1:
        hits = per_collection[0]
    else:
        fused = rrf([[(h.chunk, h.score) for h in hs] for hs in per_collection])[: k or s.settings.config.retrieval.k]
        hits = [Hit(chunk, score, rank) for rank, (chunk, score) in enumerate(fused, start=1)]
    with s.collections.reading(collections[0]) as kb:
        # the user's language, not the rewrite's
        stream = kb.answer_stream(standalone, hits, max_tokens, language_of(question))
    t2 = time.perf_counter()
    timings = {"rewrite": round((t1 - t0) * 1000, 3), "retrieve": round((t2 - t1) * 1000, 3)}
    s.metrics.stages(timings)
    return PreparedAnswer(question, standalone, stream, timings, collection_of)


def answer_now(s: Services, collections: Sequence[str], history: Sequence[tuple[str, str]], question: str,
               k: int | None = None, filters: Filters = Filters(), max_tokens: int | None = None) -> PreparedAnswer:
    """A whole answer, not streamed, inside an LLM slot (429 when the queue is full), the slot given back at the end."""
    slot = s.gate.acquire()
    try:
        prepared = prepare(s, collections, history, question, k, filters, max_tokens)
        for _ in prepared.stream:
            slot.tick()
    finally:
        slot.release()
    return prepared


def source_dict(hit: Hit, cited: bool) -> dict:
    c = hit.chunk
    return {
        "n": hit.rank,
        "source": c.source,
        "name": Path(c.source).name,
        "page": c.page,
        "page_end": c.page_end,
        "pages": c.pages,
        "headings": list(c.headings),
        "chunk_id": c.chunk_id,
        "text": c.text,
        "score": round(hit.score, 6),
        "cited": cited,
    }


def webui_source_event(hit: Hit) -> dict:
    """Open WebUI's citation card for one passage (``{"type": "source", "data": ...}``). No ``distances``: Open WebUI
    shows them as a relevance percentage, and a fused rank score (0.016-0.033) is no such thing."""
    c = hit.chunk
    name = Path(c.source).name + (f", p.{c.pages}" if c.pages else "")
    return {
        "type": "source",
        "data": {
            "source": {"id": str(hit.rank), "name": name},
            "document": [c.text],
            "metadata": [
                {
                    "source": name,
                    "file": c.source,
                    "page": c.page,
                    "page_end": c.page_end,
                    "chunk_id": c.chunk_id,
                    "headings": list(c.headings),
                }
            ],
        },
    }


def _event(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_answer(s: Services, collections: list[str], history, question: str, k, filters, on_answer=None):
    """The event stream of one answer; ``on_answer(prepared)`` runs when it is complete (e.g. to save a chat turn)."""
    try:
        prepared = prepare(s, collections, history, question, k, filters)
        yield _event(
            "sources",
            s.collections.public(
                {
                    "question": question,
                    "standalone": prepared.standalone,
                    "sources": [prepared.source(h, False) for h in prepared.stream.hits],
                }
            ),
        )
        for piece in prepared.stream:
            if piece:
                yield _event("token", {"text": piece})
        answer = prepared.stream.answer
        if on_answer is not None:
            on_answer(prepared)
        yield _event(
            "answer",
            s.collections.public(
                answer.to_dict() | {"standalone": prepared.standalone, "timings_ms": prepared.timings_ms}
            ),
        )
    except RagError as exc:
        yield _event("error", error_body(status_of(exc), str(exc)))
    except Exception as exc:
        log.exception("error while streaming an answer")
        yield _event("error", error_body(500, f"internal error ({type(exc).__name__}); the server log has the details"))
