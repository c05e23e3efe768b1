"""The ``VectorIndex`` protocol and the helpers every backend shares.

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
