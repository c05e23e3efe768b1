"""FAISS backend: exact inner product by default, HNSW or IVF for large corpora, GPU when present.

Vectors live under their int64 chunk ids (``IndexIDMap2``) so chunks can be removed.
HNSW and IVF (with a reconstructable direct map) cannot remove in place, so removal rebuilds
them from their stored vectors: fine for incremental updates, costly for huge indexes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from indexes.errors import ConfigError, StoreError, require
from indexes.files import atomic_write
from indexes.types import ScoredId
from indexes.vector.base import as_ids, as_vectors, generation_files

log = logging.getLogger(__name__)

_FILE = "faiss-{}.index"
FAISS_TYPES = ("flat", "hnsw", "ivf")


class FaissIndex:
    def __init__(self, directory: Path, dim: int, generation: int, type: str = "flat", hnsw_m: int = 32,
                 ivf_nlist: int = 1024, nprobe: int = 16, ef_search: int = 128, gpu: bool = True) -> None:
        self._faiss = require("faiss", None, "faiss-cpu")
        if type not in FAISS_TYPES:
            raise ConfigError(f"unknown faiss index type {type!r}: choose one of {', '.join(FAISS_TYPES)}")
        self.directory = Path(directory)
        self.dim, self.type = dim, type
        self.hnsw_m, self.ivf_nlist, self.nprobe, self.ef_search = hnsw_m, ivf_nlist, nprobe, ef_search
        self.use_gpu = gpu
        self._gpu_index = None
        path = self.directory / _FILE.format(generation)
        if generation > 0 and path.exists():
            try:
                self._index = self._faiss.read_index(str(path))
            except RuntimeError as exc:
                raise StoreError(f"cannot read FAISS index {path}: {exc}; rebuild the store with `rag ingest`") from exc
            if self._index.d != dim:
                raise StoreError(f"FAISS index {path} has dimension {self._index.d}, the store expects {dim}")
        else:
            self._index = self._new_index()

    def _new_index(self, train: np.ndarray | None = None):
        faiss = self._faiss
        if self.type == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        elif self.type == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = self.ef_search
        else:
            if train is None or len(train) == 0:
                return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))  # placeholder until vectors arrive
            nlist = max(1, min(self.ivf_nlist, len(train) // 39))
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(train)
            inner.nprobe = min(self.nprobe, nlist)
            inner.make_direct_map()  # so vectors can be reconstructed when rebuilding
        return faiss.IndexIDMap2(inner)

    def _is_untrained_ivf(self) -> bool:
        return self.type == "ivf" and isinstance(self._faiss.downcast_index(self._index.index), self._faiss.IndexFlat)

    def add(self, ids, vectors) -> None:
        ids, vectors = as_ids(ids), as_vectors(vectors, self.dim)
        if len(ids) == 0:
            return
        self.remove(ids)
        if self._is_untrained_ivf():
            old_ids, old_vecs = self._all()
            ids, vectors = np.concatenate([old_ids, ids]), np.concatenate([old_vecs, vectors])
            self._index = self._new_index(train=vectors)
        self._index.add_with_ids(vectors, ids)
        self._gpu_index = None

    def vectors(self, ids) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be held), row-aligned."""
        ids = as_ids(ids)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.vstack([self._index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), np.float32)
        return ids, self.vectors(ids)

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        present = ids[np.isin(ids, self.ids())] if len(ids) else ids
        if len(present) == 0:
            return
        if self.type in ("hnsw", "ivf"):
            old_ids, old_vecs = self._all()
            keep = ~np.isin(old_ids, present)
            if self.type == "ivf" and not self._is_untrained_ivf():
                inner = self._faiss.clone_index(self._faiss.downcast_index(self._index.index))
                inner.reset()  # keeps the trained centroids
                inner.make_direct_map()
                self._index = self._faiss.IndexIDMap2(inner)
            else:
                self._index = self._new_index()
            if keep.any():
                self._index.add_with_ids(old_vecs[keep], old_ids[keep])
        else:
            self._index.remove_ids(self._faiss.IDSelectorBatch(present))
        self._gpu_index = None

    def _searcher(self):
        faiss = self._faiss
        if not self.use_gpu or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
            return self._index
        if self._gpu_index is None:
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
                log.info("FAISS index moved to %d GPU(s)", faiss.get_num_gpus())
            except RuntimeError as exc:  # e.g. an index type without GPU support
                log.warning("FAISS GPU not used: %s", exc)
                self.use_gpu = False
                return self._index
        return self._gpu_index

    def search(self, queries, k: int, allowed=None) -> list[list[ScoredId]]:
        queries = as_vectors(queries, self.dim)
        n = self._index.ntotal
        if k <= 0 or n == 0:
            return [[] for _ in range(len(queries))]
        k = min(k, n)
        if allowed is not None:
            allowed = as_ids(allowed)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
            sel = self._faiss.IDSelectorBatch(allowed)
            if self.type == "ivf" and not self._is_untrained_ivf():
                nprobe = self._faiss.downcast_index(self._index.index).nprobe
                params = self._faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            elif self.type == "hnsw":
                params = self._faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
            else:
                params = self._faiss.SearchParameters(sel=sel)
            scores, ids = self._index.search(queries, k, params=params)  # selectors run on the CPU index
        else:
            scores, ids = self._searcher().search(queries, k)
        return [[ScoredId(int(i), float(s)) for s, i in zip(srow, irow) if i != -1] for srow, irow in zip(scores, ids)]

    def ids(self) -> np.ndarray:
        return self._faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def save(self, generation: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.directory / _FILE.format(generation), lambda tmp: self._faiss.write_index(self._index, str(tmp))
        )

    def drop_other_generations(self, keep: int) -> None:
        for path in generation_files(self.directory, _FILE, keep):
            path.unlink(missing_ok=True)
