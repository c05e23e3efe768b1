"""The collections a server serves: every store directly under its root, opened read-only, with shared models.

A reader never waits for a writer: ingestion runs in another process (see ``jobs``) and commits atomically,
and a reader switches to a new generation only once that ingest's BM25 index is written too, so a search
never mixes a new dense index with an old lexical one. The embedder of each model name and the LLM are
loaded once and shared by every collection.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from indexes.errors import ConfigError, ConflictError, NotFoundError, RagError
from indexes.store import Store
from indexes.versions import active_path
from ingest.embed import DEFAULT_EMBEDDER, Embedder, SentenceTransformerEmbedder
from rag.config import Config
from rag.knowledge_base import KnowledgeBase
from rag.types import Generator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or name.endswith(".sqlite"):
        raise ConfigError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit"
        )
    return name


PATH_KEYS = frozenset({"source", "file"})


def public_source(source: str, root: Path) -> str:
    """A document's path as a response shows it, never the server's own path: an upload by its name (its path
    under the collection's ``uploads/``), another file under the server root by its path there, anything else
    by its file name."""
    path = Path(source)
    if not path.is_absolute():
        return source
    if not path.is_relative_to(root):
        return path.name
    rel = path.relative_to(root)
    return str(Path(*rel.parts[2:])) if len(rel.parts) > 2 and rel.parts[1] == "uploads" else str(rel)


def public(obj, root: Path):
    """``obj`` (a response body: dicts, lists, strings) with every document path made public (``public_source``)."""
    if isinstance(obj, dict):
        return {
            (public_source(k, root) if isinstance(k, str) and k.startswith("/") else k): (
                public_source(v, root) if k in PATH_KEYS and isinstance(v, str) else public(v, root)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [public(v, root) for v in obj]
    return obj


@dataclass
class _Reader:
    kb: KnowledgeBase
    path: Path
    generation: int
    lock: threading.RLock


class Collections:
    def __init__(self, root: Path, config: Config, generator: Generator,
                 embedder_factory: Callable[[str], Embedder] | None = None) -> None:
        self.root, self.config, self.generator = Path(root), config, generator
        self._resolved_root = self.root.resolve()  # what document paths are made relative to in responses
        self._factory = embedder_factory or (
            lambda name: SentenceTransformerEmbedder(name, device=config.device, dtype=config.embedder_dtype)
        )
        self._embedders: dict[str, Embedder] = {}
        self._readers: dict[str, _Reader] = {}
        self._lock = threading.RLock()
        self._catalog = None  # the shared mode: the database's list of stores
        if config.db:
            from indexes.shared.store import Catalog

            self._catalog = Catalog(config.db)

    def public(self, obj):
        """``obj`` with every document path as a client may see it (``public``)."""
        return public(obj, self._resolved_root)

    def embedder(self, name: str) -> Embedder:
        with self._lock:
            if name not in self._embedders:
                self._embedders[name] = self._factory(name)
            return self._embedders[name]

    def names(self) -> list[str]:
        if self._catalog is not None:
            return [n for n in self._catalog.names() if _NAME.match(n)]
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name) and Store.exists(p))

    def _exists(self, name: str) -> bool:
        if self._catalog is not None:
            return self._catalog.settings(name) is not None
        return Store.exists(self.root / name)

    def path(self, name: str) -> Path:
        """The collection's folder here (its uploads; with a shared database, only those); 404 if it does not
        exist."""
        path = self.root / check_name(name)
        if not self._exists(name):
            raise NotFoundError(
                f"no collection {name!r}: create it with POST /collections, or list them with GET /collections"
            )
        return path

    def _reader(self, name: str) -> _Reader:
        root = self.path(name)
        with self._lock:
            current = self._readers.get(name)
            active = root if self.config.db else active_path(root)  # no index versions in a shared database yet
            if current is not None and current.path == active:
                store = current.kb.store
                if store.chunks.generation == current.generation or not store.lexical_ready:
                    return current  # the last complete generation stays until the next one is wholly written
            try:
                embedder_name = self._embedder_of(name, active)
                kb = KnowledgeBase.open(
                    name if self.config.db else root,
                    self.config,
                    embedder=self.embedder(embedder_name),
                    generator=self.generator,
                    create=False,
                    read_only=True,
                )
            except (RagError, OSError) as exc:
                if current is not None:  # e.g. a file the writer replaced between two reads: serve the last one
                    return current
                raise RagError(f"cannot open collection {name!r}: {exc}") from exc
            reader = _Reader(kb, active, kb.store.chunks.generation, current.lock if current else threading.RLock())
            self._readers[name] = reader
            return reader

    def _embedder_of(self, name: str, active: Path) -> str:
        if self._catalog is not None:
            settings = self._catalog.settings(name)
            if settings is None:
                raise NotFoundError(f"no collection {name!r}: it was deleted")
            return settings.embedder
        return Store.read_settings(active).embedder

    @contextmanager
    def reading(self, name: str) -> Iterator[KnowledgeBase]:
        """The collection's knowledge base at its last complete generation, for one request's retrieval."""
        reader = self._reader(name)
        with reader.lock:
            yield reader.kb

    def create(self, name: str, embedder: str | None = None, index: str | None = None) -> dict:
        path = self.root / check_name(name)
        with self._lock:
            if path.exists() if not self.config.db else self._exists(name):
                raise ConflictError(f"collection {name!r} already exists")
            cfg = self.config
            if index:
                cfg = replace(cfg, index=replace(cfg.index, backend=index))
            emb = self.embedder(embedder or cfg.embedder or DEFAULT_EMBEDDER)
            kb = KnowledgeBase.open(name if cfg.db else path, cfg, embedder=emb, generator=self.generator,
                                    create=True)
            kb.close()
        return self.info(name)

    def delete(self, name: str) -> None:
        path = self.path(name)
        with self._lock:
            reader = self._readers.pop(name, None)
            if self.config.db:
                from indexes.shared import store as shared

                if reader is not None:
                    reader.kb.close()
                shared.drop(self.config.db, name)
            shutil.rmtree(path, ignore_errors=bool(self.config.db))  # a replica may hold no uploads of it

    def info(self, name: str) -> dict:
        with self.reading(name) as kb:
            info = kb.info()
        return self.public({"name": name, **{k: v for k, v in info.items() if k != "store"}})

    def forget(self, name: str) -> None:
        """Drop the cached reader (after a version switch), so the next request opens the active version."""
        with self._lock:
            self._readers.pop(name, None)
