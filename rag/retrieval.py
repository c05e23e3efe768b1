"""First-stage retrieval: dense, BM25, or both fused; with metadata filters."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from indexes.errors import ConfigError
from indexes.store import Store
from indexes.text import is_han, normalize
from indexes.types import Chunk
from ingest.embed import Embedder
from rag.generation import is_chinese
from rag.rerank import Reranker, rerank
from rag.types import Hit

MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("rrf", "weighted")


@dataclass(frozen=True)
class Filters:
    """Restrict results: ``source`` is a glob on the source path (``*`` matches ``/``); pages are inclusive."""

    source: str | None = None
    page_min: int | None = None
    page_max: int | None = None

    @property
    def empty(self) -> bool:
        return self.source is None and self.page_min is None and self.page_max is None


@dataclass(frozen=True)
class RetrievalSettings:
    mode: str = "hybrid"
    fusion: str = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5  # weighted fusion only
    candidates: int = 50  # per retriever, before fusion

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown retrieval mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}: choose one of {', '.join(FUSIONS)}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"dense_weight must be between 0 and 1, got {self.dense_weight}")


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
    """BM25's weight in the fusion: 1 when the question is in the language of the passages dense search finds for it,
    falling to 0 when none of them is. Words do not match across languages, so for a Chinese question about English
    passages (or the reverse) BM25 ranks noise and fusing it halves nDCG@10 (benchmarks/RESULTS.md); dense search,
    with a multilingual embedder, is the one that still works."""
    if not dense:
        return 1.0
    chinese = is_chinese(query)
    same = sum(_has_chinese(c.text) == chinese for c, _ in dense[:top]) / min(top, len(dense))
    return min(1.0, 2 * same)


def _has_chinese(text: str) -> bool:
    """Whether a passage has Chinese for BM25 to match: ten CJK characters or more (a Chinese page full of LaTeX
    commands does, an English page quoting a Chinese name does not)."""
    return sum(map(is_han, text)) >= 10


class Retriever:
    """First stage (dense, BM25 or fused) and, when a reranker is given, a second stage over its top ``rerank_top``."""

    def __init__(self, store: Store, embedder: Embedder, settings: RetrievalSettings = RetrievalSettings(),
                 reranker: Reranker | None = None, rerank_top: int = 10) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings
        self.reranker, self.rerank_top = reranker, rerank_top

    def search(self, query: str, k: int = 5, filters: Filters = Filters(), mode: str | None = None) -> list[Hit]:
        return self.search_timed(query, k, filters, mode)[0]

    def search_timed(self, query: str, k: int = 5, filters: Filters = Filters(),
                     mode: str | None = None) -> tuple[list[Hit], dict[str, float]]:
        """The hits and the milliseconds each stage took: filter, embed, dense, bm25, fuse, rerank (those that ran)."""
        if not query or not query.strip():
            raise ConfigError("the question is empty")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise ConfigError(f"unknown retrieval mode {mode!r}: choose one of {', '.join(MODES)}")
        ms: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            ms[stage] = round((now - clock) * 1000, 3)
            clock = now

        allowed = None
        if not filters.empty:
            allowed = self.store.chunks.ids(filters.source, filters.page_min, filters.page_max)
            lap("filter")
        want = max(k, self.rerank_top) if self.reranker else k
        n = max(want, self.settings.candidates) if mode == "hybrid" else want
        dense: list[tuple[Chunk, float]] = []
        if mode in ("dense", "hybrid"):
            vec = self.embedder.embed_query(normalize(query))
            lap("embed")
            dense = self.store.search(vec[None, :], n, allowed)[0]
            lap("dense")
        lexical = []
        if mode in ("bm25", "hybrid"):
            lexical = self.store.lexical_search(query, n, allowed)
            lap("bm25")
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = lexical
        elif self.settings.fusion == "rrf":
            ranked = rrf([dense, lexical], self.settings.rrf_k, [1.0, lexical_weight(query, dense)])
        else:
            ranked = weighted(dense, lexical, self.settings.dense_weight)
        hits = [Hit(chunk, score, rank) for rank, (chunk, score) in enumerate(ranked[:want], start=1)]
        if mode == "hybrid":
            lap("fuse")
        if self.reranker is not None:
            hits = rerank(self.reranker, query, hits, self.rerank_top)
            lap("rerank")
        return hits[:k], ms
