"""Fusing the dense and BM25 rankings: reciprocal rank fusion, weighted scores, and how much BM25 counts."""

from __future__ import annotations

from collections.abc import Sequence

from indexes.text import is_han
from indexes.types import Chunk
from rag.answer.prompts import is_chinese

Ranked = Sequence[tuple[Chunk, float]]


def rrf(lists: Sequence[Ranked], k: int = 60, weights: Sequence[float] | None = None) -> list[tuple[Chunk, float]]:
    """Reciprocal rank fusion: each list adds weight / (k + rank) for every chunk it ranks."""
    weights = weights or [1.0] * len(lists)
    scores: dict[int, float] = {}
    chunks: dict[int, Chunk] = {}
    for ranked, w in zip(lists, weights):
        for rank, (chunk, _) in enumerate(ranked, start=1):
            scores[chunk.id] = scores.get(chunk.id, 0.0) + w / (k + rank)
            chunks[chunk.id] = chunk
    return sorted(((chunks[i], s) for i, s in scores.items()), key=lambda cs: -cs[1])


def weighted(dense: Ranked, lexical: Ranked, dense_weight: float) -> list[tuple[Chunk, float]]:
    """Min-max normalised scores, mixed linearly; a chunk missing from one list scores 0 there."""
    def norm(ranked: Ranked) -> dict[int, float]:
        if not ranked:
            return {}
        values = [s for _, s in ranked]
        lo, hi = min(values), max(values)
        return {c.id: (s - lo) / (hi - lo) if hi > lo else 1.0 for c, s in ranked}

    d, b = norm(dense), norm(lexical)
    chunks = {c.id: c for c, _ in [*dense, *lexical]}
    mixed = {i: dense_weight * d.get(i, 0.0) + (1 - dense_weight) * b.get(i, 0.0) for i in chunks}
    return sorted(((chunks[i], s) for i, s in mixed.items()), key=lambda cs: -cs[1])


def lexical_weight(query: str, dense: Ranked, top: int = 10) -> float:
    """BM25's weight in the fusion: 1 when the question is in the language of the passages dense search ranks in its
    first ``top``, falling to 0 when none of them is. Words do not match across languages, so for a Chinese question
    about English passages (or the reverse) BM25 ranks noise, or in a store of both languages the wrong language's
    passages, and fusing it halves nDCG@10 (benchmarks/RESULTS.md); dense search, with a multilingual embedder, is
    the one that still works. Once dense search is corrected for its lean (``across_languages``), its first passage
    alone decides (``top=1``), which did best in a store of both languages."""
    if not dense:
        return 1.0
    chinese = is_chinese(query)
    same = sum(_has_chinese(c.text) == chinese for c, _ in dense[:top]) / min(top, len(dense))
    return min(1.0, 2 * same)


def across_languages(query: str, dense: Ranked, bias: float) -> list[tuple[Chunk, float]]:
    """Dense hits re-scored with ``bias`` added to the passages in the other language than the question: a
    multilingual embedder scores text in the question's own language higher (multilingual-e5-small by about 0.03-0.05
    in cosine), which in a store of both languages buried the answers in the other language (benchmarks/RESULTS.md)."""
    if not bias:
        return list(dense)
    chinese = is_chinese(query)
    scored = [(c, s + bias if _has_chinese(c.text) != chinese else s) for c, s in dense]
    return sorted(scored, key=lambda cs: -cs[1])


def _has_chinese(text: str) -> bool:
    """Whether a passage has Chinese for BM25 to match: ten CJK characters or more (a Chinese page full of LaTeX
    commands does, an English page quoting a Chinese name does not)."""
    return sum(map(is_han, text)) >= 10
