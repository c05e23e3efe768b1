"""The library of ``rag mcp --store S``: one store, named by its folder, for the one client on the other end of
stdio. It is opened read-only, so ``rag watch`` or ``rag ingest`` can write beside it; each call reads the newest
complete generation. Calls take turns (the SDK runs each tool in a worker thread; the LLM answers one at a time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rag.config import Config
from rag.knowledge_base import KnowledgeBase
from rag.types import Answer


class LocalLibrary:
    def __init__(self, path: str | Path, config: Config, name: str | None = None) -> None:
        self.kb = KnowledgeBase.open(path, config, create=False, read_only=True)
        self.name = name or Path(path).resolve().name
        self._turn = threading.RLock()

    def visible(self, headers: Mapping[str, str] | None) -> list[str]:
        return [self.name]

    @contextmanager
    def reading(self, name: str) -> Iterator[KnowledgeBase]:
        with self._turn:
            self.kb = self.kb.refreshed()
            yield self.kb

    def ask(self, name: str, question: str, k: int | None) -> Answer:
        with self.reading(name) as kb:
            return kb.ask(question, k)

    def public(self, obj):
        return obj

    def close(self) -> None:
        self.kb.close()
