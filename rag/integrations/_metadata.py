"""The metadata both adapters attach to a retrieved passage."""

from __future__ import annotations

from rag.types import Hit


def hit_metadata(hit: Hit) -> dict:
    """Where the passage comes from (source, pages, heading path), its chunk id and its retrieval score."""
    c = hit.chunk
    return {"source": c.source, "page": c.page, "page_end": c.page_end, "chunk_id": c.chunk_id,
            "headings": list(c.headings), "score": float(hit.score)}
