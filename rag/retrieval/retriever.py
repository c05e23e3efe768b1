"""First-stage retrieval: dense, BM25, or both fused; with metadata filters."""

from __future__ import annotations

import time
from dataclasses import dataclass

from indexes.errors import ConfigError
from indexes.store import Store
from indexes.text import normalize
from indexes.types import Chunk
from ingest.embed import Embedder
from rag.retrieval.fusion import across_languages, lexical_weight, rrf, weighted
from rag.retrieval.rerank import Reranker, rerank
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
    language_bias: float = 0.04  # cosine added to the other language's passages (fusion.across_languages); 0: off

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown retrieval mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}: choose one of {', '.join(FUSIONS)}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ConfigError(f"dense_weight must be between 0 and 1, got {self.dense_weight}")


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
        wide = max(want, self.settings.candidates)
        n = wide if mode == "hybrid" else want
        dense: list[tuple[Chunk, float]] = []
        bias = 0.0
        if mode in ("dense", "hybrid"):
            vec = self.embedder.embed_query(normalize(query))
            lap("embed")
            bias = self.settings.language_bias if _e5_family(self.embedder) else 0.0  # a measured lean only
            found = self.store.search(vec[None, :], wide if bias else n, allowed)[0]  # the other language may move up
            dense = across_languages(query, found, bias)
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
            ranked = rrf([dense, lexical], self.settings.rrf_k, [1.0, lexical_weight(query, dense, 1 if bias else 10)])
        else:
            ranked = weighted(dense, lexical, self.settings.dense_weight)
        hits = [Hit(chunk, score, rank) for rank, (chunk, score) in enumerate(ranked[:want], start=1)]
        if mode == "hybrid":
            lap("fuse")
        if self.reranker is not None:
            hits = rerank(self.reranker, query, hits, self.rerank_top)
            lap("rerank")
        return hits[:k], ms


def _e5_family(embedder: Embedder) -> bool:
    """Whether ``language_bias`` applies: it was measured for multilingual-e5-small, and its fine-tuned versions keep
    its "query: " prompt; another embedder leans to its own language by another amount, or cannot read the other."""
    return getattr(embedder, "query_prompt", "") == "query: "
