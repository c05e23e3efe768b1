"""Context assembly for the LLM: drop near-duplicate passages, optionally widen each hit to its neighbours.

Small chunks retrieve precisely; the answer often needs the text around them. Widening keeps the
hit's source and page (citations still point where the match was) and merges overlapping text once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from indexes.chunk_store import ChunkStore
from indexes.text import words
from indexes.types import Chunk
from rag.types import Hit


def drop_near_duplicates(hits: Sequence[Hit], threshold: float = 0.8) -> list[Hit]:
    """Keep a hit only if its word overlap (Jaccard) with every better-ranked kept hit is below ``threshold``."""
    kept: list[tuple[Hit, set[str]]] = []
    for h in hits:
        terms = words(h.chunk.text)
        if all(len(terms & t) / max(1, len(terms | t)) < threshold for _, t in kept):
            kept.append((h, terms))
    return [Hit(h.chunk, h.score, rank) for rank, (h, _) in enumerate(kept, start=1)]


def merge_chunks(chunks: Sequence[Chunk]) -> str:
    """Text of consecutive chunks of one document, overlaps included once (offsets are exact)."""
    text, end = "", -1
    for c in sorted(chunks, key=lambda c: c.start):
        if end < 0:
            text, end = c.text, c.end
        elif c.start >= end:
            text, end = text + "\n" + c.text, c.end
        elif c.end > end:
            text, end = text + c.text[end - c.start :], c.end
    return text


def widen(hits: Sequence[Hit], store: ChunkStore, window: int) -> list[Hit]:
    """Replace each hit's text by the hit and ``window`` chunks either side; hits swallowed by an earlier one go."""
    if window <= 0:
        return list(hits)
    out: list[Hit] = []
    covered: set[int] = set()
    for h in hits:
        if h.chunk.id in covered:
            continue
        group = store.neighbours(h.chunk.id, window) or [h.chunk]
        covered.update(c.id for c in group)
        c = h.chunk
        wide = replace(c, text=merge_chunks(group), start=min(g.start for g in group), end=max(g.end for g in group))
        out.append(Hit(wide, h.score, len(out) + 1))
    return out
