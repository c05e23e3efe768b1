"""Dense retrieval over a store, with metadata filters."""

from __future__ import annotations

from dataclasses import dataclass

from indexes.errors import ConfigError
from indexes.store import Store
from ingest.embedders import Embedder
from ingest.normalize import normalize
from rag.types import Hit


@dataclass(frozen=True)
class Filters:
    """Restrict results: ``source`` is a glob on the source path (``*`` matches ``/``); pages are inclusive."""

    source: str | None = None
    page_min: int | None = None
    page_max: int | None = None

    @property
    def empty(self) -> bool:
        return self.source is None and self.page_min is None and self.page_max is None


class Retriever:
    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.store, self.embedder = store, embedder

    def search(self, query: str, k: int = 5, filters: Filters = Filters()) -> list[Hit]:
        if not query or not query.strip():
            raise ConfigError("the question is empty")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        allowed = None
        if not filters.empty:
            allowed = self.store.chunks.ids(filters.source, filters.page_min, filters.page_max)
        vec = self.embedder.embed_query(normalize(query))
        rows = self.store.search(vec[None, :], k, allowed)[0]
        return [Hit(chunk, score, rank) for rank, (chunk, score) in enumerate(rows, start=1)]
