"""Exact search over a numpy matrix: the reference every other backend is tested against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexes.files import atomic_write
from indexes.types import ScoredId
from indexes.vector.base import as_ids, as_vectors, generation_files

_FILE = "vectors-{}.npz"


class NumpyIndex:
    def __init__(self, directory: Path, dim: int, generation: int) -> None:
        self.directory = Path(directory)
        self.dim = dim
        path = self.directory / _FILE.format(generation)
        if generation > 0 and path.exists():
            with np.load(path, allow_pickle=False) as data:
                self._ids = data["ids"].astype(np.int64)
                self._vecs = data["vectors"].astype(np.float32)
        else:
            self._ids = np.zeros(0, np.int64)
            self._vecs = np.zeros((0, dim), np.float32)

    def add(self, ids, vectors) -> None:
        ids, vectors = as_ids(ids), as_vectors(vectors, self.dim)
        self.remove(ids)
        self._ids = np.concatenate([self._ids, ids])
        self._vecs = np.concatenate([self._vecs, vectors])

    def remove(self, ids) -> None:
        keep = ~np.isin(self._ids, as_ids(ids))
        self._ids, self._vecs = self._ids[keep], self._vecs[keep]

    def search(self, queries, k: int, allowed=None) -> list[list[ScoredId]]:
        queries = as_vectors(queries, self.dim)
        ids, vecs = self._ids, self._vecs
        if allowed is not None:
            mask = np.isin(ids, as_ids(allowed))
            ids, vecs = ids[mask], vecs[mask]
        k = min(k, len(ids))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores = queries @ vecs.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row, cand in zip(scores, top):
            order = cand[np.argsort(-row[cand], kind="stable")]
            results.append([ScoredId(int(ids[j]), float(row[j])) for j in order])
        return results

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def vectors(self, ids) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be held), row-aligned."""
        where = {int(i): row for row, i in enumerate(self._ids)}
        return self._vecs[[where[int(i)] for i in as_ids(ids)]].reshape(-1, self.dim)

    def __len__(self) -> int:
        return len(self._ids)

    def save(self, generation: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, ids=self._ids, vectors=self._vecs)

        atomic_write(self.directory / _FILE.format(generation), write)

    def drop_other_generations(self, keep: int) -> None:
        for path in generation_files(self.directory, _FILE, keep):
            path.unlink(missing_ok=True)
