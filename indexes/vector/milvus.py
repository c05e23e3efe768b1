"""Milvus backend: our own vectors under our chunk ids (INT64 primary keys), inner product on unit vectors.

``uri`` None keeps the vectors in ``milvus.db`` inside the store directory (milvus-lite, embedded: one process at a
time holds the file); ``http://host:port`` uses a Milvus server or cluster, or ``milvus-lite server``, which several
processes can share. Like Chroma, Milvus writes immediately and keeps no generations, so the chunk store is the source
of truth: results whose ids it does not hold are dropped, and the store journals additions and removals so an
interrupted commit is finished or undone on the next open (see ``indexes.store``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from indexes.errors import ConfigError, StoreError, require
from indexes.types import ScoredId
from indexes.vector.base import as_ids, as_vectors

log = logging.getLogger(__name__)

T = TypeVar("T")
_BATCH = 2048
# no keepalive pings on an idle connection: milvus-lite's server answers them with GOAWAY "too many pings"
_GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": 0}
_DROPPED = ("UNAVAILABLE", "Too many pings", "Fail connecting")
_ID_FILTER = 4096  # most ids put in one search filter; a larger allowed set is searched wider and filtered here


def _once_more(call: Callable[[], T]) -> T:
    """Run ``call``, and once more after a second if the server dropped the connection (every call here is
    idempotent: upserts and deletes by id, reads)."""
    try:
        return call()
    except Exception as exc:
        if not any(mark in str(exc) for mark in _DROPPED):
            raise
        log.info("the Milvus connection dropped (%s); trying once more", exc)
        time.sleep(1.0)
        return call()


class MilvusIndex:
    writes_immediately = True

    def __init__(self, directory: Path, dim: int, uri: str | None = None, collection: str = "chunks",
                 new: bool = False) -> None:
        pymilvus = require("pymilvus", "milvus", "pymilvus")
        self.dim, self.collection, self._embedded = dim, collection, uri is None
        if uri is None:
            require("milvus_lite", "milvus", "milvus-lite")
            uri = str(Path(directory) / "milvus.db")
        elif not uri.startswith(("http://", "https://", "tcp://")):
            raise ConfigError(
                f"a Milvus URI is http://host:port (a server) or nothing (a file in the store), got {uri!r}"
            )
        self.uri = uri
        try:
            self._client = _once_more(lambda: pymilvus.MilvusClient(uri, grpc_options=_GRPC_OPTIONS))
            if not _once_more(lambda: self._client.has_collection(collection)):
                self._create(pymilvus)
            elif new:
                raise StoreError(
                    f"the collection {collection!r} already exists at {uri}: another store keeps its vectors there, "
                    "and two "
                    "stores writing one collection would corrupt each other. Open that store's directory, "
                    "or choose another --set index.collection=NAME"
                )
            else:
                self._check_dim()
            _once_more(lambda: self._client.load_collection(collection))
        except StoreError:
            raise
        except Exception as exc:  # pymilvus and milvus-lite raise many types; translate at the boundary
            if self._embedded and "Open local milvus failed" in str(exc):
                raise StoreError(
                    f"the Milvus file {uri} is open in another process (milvus-lite lets one process hold it). For "
                    "several "
                    "processes (rag serve with uploads, Ray writers), keep the vectors on a server: `milvus-lite "
                    "server "
                    "--data-dir DIR --host 127.0.0.1 --port PORT`, then a new store with --index milvus --uri http://127.0.0.1:PORT"
                ) from exc
            raise StoreError(f"cannot open Milvus collection {collection!r} at {uri}: {exc}") from exc

    def _create(self, pymilvus) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
        params = self._client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self._client.create_collection(self.collection, schema=schema, index_params=params)

    def _check_dim(self) -> None:
        fields = self._client.describe_collection(self.collection)["fields"]
        dims = [int(f.get("params", {}).get("dim", 0)) for f in fields if f.get("name") == "vector"]
        if dims and dims[0] != self.dim:
            raise StoreError(
                f"the Milvus collection {self.collection!r} at {self.uri} holds {dims[0]}-d vectors, not {self.dim}-d: "
                "it belongs to another store; choose another --set index.collection=NAME"
            )

    def add(self, ids, vectors) -> None:
        ids, vectors = as_ids(ids), as_vectors(vectors, self.dim)
        for s in range(0, len(ids), _BATCH):
            rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids[s : s + _BATCH], vectors[s : s + _BATCH])]
            _once_more(lambda rows=rows: self._client.upsert(self.collection, rows))

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        for s in range(0, len(ids), _BATCH):
            part = [int(i) for i in ids[s : s + _BATCH]]
            _once_more(lambda part=part: self._client.delete(self.collection, ids=part))

    def search(self, queries, k: int, allowed=None) -> list[list[ScoredId]]:
        queries = as_vectors(queries, self.dim)
        if k <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        wanted, limit, expr = None, k, ""
        if allowed is not None:
            allowed = as_ids(allowed)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            if len(allowed) <= _ID_FILTER:
                expr = f"id in [{','.join(str(int(i)) for i in allowed)}]"
            else:
                wanted, limit = set(allowed.tolist()), min(16384, k * 20)
        res = _once_more(
            lambda: self._client.search(
                self.collection, data=queries.tolist(), limit=limit, filter=expr, output_fields=["id"]
            )
        )
        out = []
        for row in res:
            hits = [
                ScoredId(int(h["id"]), float(h["distance"])) for h in row if wanted is None or int(h["id"]) in wanted
            ]
            out.append(sorted(hits, key=lambda h: -h.score)[:k])
        return out

    def ids(self) -> np.ndarray:
        it = self._client.query_iterator(self.collection, batch_size=4096, filter="", output_fields=["id"])
        out: list[int] = []
        try:
            while batch := it.next():
                out.extend(int(r["id"]) for r in batch)
        finally:
            it.close()
        return np.array(out, dtype=np.int64)

    def __len__(self) -> int:
        rows = _once_more(lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"]))
        return int(rows[0]["count(*)"])

    def save(self, generation: int) -> None:
        """Nothing to do: Milvus persisted each write as it happened."""

    def drop_other_generations(self, keep: int) -> None:
        """Nothing to do: Milvus keeps no generations."""

    def drop(self) -> None:
        """Delete the collection and every vector in it (its store is being deleted)."""
        _once_more(lambda: self._client.drop_collection(self.collection))

    def close(self) -> None:
        self._client.close()
        if self._embedded:  # milvus-lite serves the file from a thread of this process until told to stop
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)
