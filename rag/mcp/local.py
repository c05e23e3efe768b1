"""The library of ``rag mcp --store S``: one store, named by its folder, for the one client on the other end of
stdio. Calls take turns (the SDK runs each tool in a worker thread; the store's LLM answers one at a time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from rag.knowledge_base import KnowledgeBase
from rag.types import Answer


class LocalLibrary:
    def __init__(self, kb: KnowledgeBase, name: str | None = None) -> None:
        self.kb = kb
        self.name = name or kb.store.path.name
        self._turn = threading.RLock()

    def visible(self, headers: Mapping[str, str] | None) -> list[str]:
        return [self.name]

    @contextmanager
    def reading(self, name: str) -> Iterator[KnowledgeBase]:
        with self._turn:
            yield self.kb

    def ask(self, name: str, question: str, k: int | None) -> Answer:
        with self._turn:
            return self.kb.ask(question, k)

    def public(self, obj):
        return obj
