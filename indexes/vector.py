"""The ``VectorIndex`` protocol and the factory that maps a backend name to its class.

A vector index holds L2-normalised float32 vectors under int64 chunk ids and returns
inner-product (= cosine) scores. File-backed indexes write one file per *generation*:
the chunk store records which generation is committed, so a crash while writing a new
generation leaves the previous one intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from indexes.errors import ConfigError
from indexes.types import ScoredId


class VectorIndex(Protocol):
    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors (``ids`` int64 of shape (n,), ``vectors`` float32 (n, dim))."""

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids; ids that are absent are ignored."""

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[ScoredId]]:
        """Top-``k`` per query row, best first; ``allowed`` restricts results to those ids."""

    def ids(self) -> np.ndarray:
        """Every id held, as int64."""

    def __len__(self) -> int: ...

    def save(self, generation: int) -> None:
        """Write the current state durably as ``generation`` without touching older ones."""

    def drop_other_generations(self, keep: int) -> None:
        """Delete what only other generations needed (called after a commit)."""


INDEX_KINDS = ("faiss", "chroma", "milvus", "numpy")


def open_index(kind: str, directory: Path, dim: int, generation: int, options: dict | None = None,
               new: bool = False) -> VectorIndex:
    """Open (or create) the index of backend ``kind`` in ``directory`` at ``generation``. ``new``: for a new store, so a
    collection on a server that already exists (another store's) is refused rather than shared by two writers."""
    options = dict(options or {})
    if kind in ("chroma", "milvus") and options.get("uri"):
        options["new"] = new
    if kind == "faiss":
        from indexes.faiss_index import FaissIndex

        return FaissIndex(directory, dim, generation, **options)
    if kind == "chroma":
        from indexes.chroma_index import ChromaIndex

        return ChromaIndex(directory, dim, **options)
    if kind == "milvus":
        from indexes.milvus_index import MilvusIndex

        return MilvusIndex(directory, dim, **options)
    if kind == "numpy":
        from indexes.numpy_index import NumpyIndex

        return NumpyIndex(directory, dim, generation)
    raise ConfigError(f"unknown index backend {kind!r}: choose one of {', '.join(INDEX_KINDS)}")


def as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_vectors(vectors, dim: int) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ConfigError(f"expected vectors of shape (n, {dim}), got {arr.shape}")
    return arr


def generation_files(directory: Path, pattern: str, keep: int) -> list[Path]:
    """Files named like ``pattern.format(gen)`` whose generation is not ``keep``."""
    prefix, suffix = pattern.split("{}")
    out = []
    for path in directory.glob(prefix + "*" + suffix):
        middle = path.name[len(prefix) : len(path.name) - len(suffix)]
        if middle.isdigit() and int(middle) != keep:
            out.append(path)
    return out


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename into place, fsyncing so a crash leaves old or new, never half. The
    temporary name is this process's, so two processes writing the same file never share one."""
    import os

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
