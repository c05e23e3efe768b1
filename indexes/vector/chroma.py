"""Chroma backend: a persistent client holding our own vectors in cosine space.

Chroma writes immediately, so it has no generations: the chunk store is the source of
truth, results whose ids it does not hold are dropped, and the store replays pending
additions and removals after a crash (see ``indexes.store``). Chroma never embeds text
here: the collection is created with no embedding function and only vectors are sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from indexes.errors import ConfigError, StoreError, require
from indexes.types import ScoredId
from indexes.vector.base import as_ids, as_vectors

log = logging.getLogger(__name__)

_BATCH = 4096


def _key(i: int) -> str:
    return format(int(i), "016x")


class ChromaIndex:
    writes_immediately = True

    def __init__(self, directory: Path, dim: int, collection: str = "chunks", uri: str | None = None,
                 new: bool = False) -> None:
        """``uri`` None: a persistent client in ``directory/chroma``; ``http://host:port``: a Chroma server
        (``chroma run``), dense only, since Chroma's local server has no sparse index."""
        chromadb = require("chromadb", "chroma")
        from chromadb.config import Settings

        self.dim = dim
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if uri is None:
            self.directory = Path(directory) / "chroma"
            self.directory.mkdir(parents=True, exist_ok=True)
            where = str(self.directory)
        else:
            url = urlparse(uri)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(f"a Chroma URI is http://host:port, got {uri!r}")
            where = uri
        try:
            if uri is None:
                self._client = chromadb.PersistentClient(path=where, settings=settings)
            else:
                self._client = chromadb.HttpClient(
                    host=url.hostname,
                    port=url.port or (443 if url.scheme == "https" else 8000),
                    ssl=url.scheme == "https",
                    settings=settings,
                )
            if new and collection in {getattr(c, "name", c) for c in self._client.list_collections()}:
                raise StoreError(
                    f"the collection {collection!r} already exists at {uri}: another store keeps its vectors there, "
                    "and two "
                    "stores writing one collection would corrupt each other. Open that store's directory, "
                    "or choose another --set index.collection=NAME"
                )
            self._col = self._client.get_or_create_collection(
                collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
        except StoreError:
            raise
        except Exception as exc:  # chromadb raises many types; translate at the boundary
            raise StoreError(f"cannot open Chroma collection {collection!r} at {where}: {exc}") from exc

    def add(self, ids, vectors) -> None:
        ids, vectors = as_ids(ids), as_vectors(vectors, self.dim)
        for s in range(0, len(ids), _BATCH):
            self._col.upsert(ids=[_key(i) for i in ids[s : s + _BATCH]], embeddings=vectors[s : s + _BATCH])

    def remove(self, ids) -> None:
        keys = [_key(i) for i in as_ids(ids)]
        for s in range(0, len(keys), _BATCH):
            self._col.delete(ids=keys[s : s + _BATCH])

    def search(self, queries, k: int, allowed=None) -> list[list[ScoredId]]:
        queries = as_vectors(queries, self.dim)
        n = self._col.count()
        if k <= 0 or n == 0:
            return [[] for _ in range(len(queries))]
        kwargs = {}
        if allowed is not None:
            allowed = as_ids(allowed)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            kwargs["ids"] = [_key(i) for i in allowed]
            k = min(k, len(allowed))
        res = self._col.query(query_embeddings=queries, n_results=min(k, n), include=["distances"], **kwargs)
        return [
            [ScoredId(int(key, 16), 1.0 - float(d)) for key, d in zip(keys, dists)]
            for keys, dists in zip(res["ids"], res["distances"])
        ]

    def ids(self) -> np.ndarray:
        keys = self._col.get(include=[])["ids"]
        return np.array([int(k, 16) for k in keys], dtype=np.int64)

    def __len__(self) -> int:
        return self._col.count()

    def save(self, generation: int) -> None:
        """Nothing to do: Chroma persisted each write as it happened."""

    def drop_other_generations(self, keep: int) -> None:
        """Nothing to do: Chroma keeps no generations."""
