"""Backend names mapped to the class that implements each, imported only when a store of that kind is opened.

The map holds ``"module:Class"`` strings so importing the registry costs nothing and no backend's library
(faiss, chromadb, pymilvus) loads unless it is used; backends import only ``indexes.vector.base``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from indexes.errors import ConfigError
from indexes.vector.base import VectorIndex


class Backend(NamedTuple):
    target: str  # "module:Class"
    files: bool  # writes one file per generation (takes ``generation``); else a server or its own database
    server: bool  # can live on a server at ``uri`` (then a new store must not share another's collection)


BACKENDS = {
    "faiss": Backend("indexes.vector.faiss:FaissIndex", files=True, server=False),
    "chroma": Backend("indexes.vector.chroma:ChromaIndex", files=False, server=True),
    "milvus": Backend("indexes.vector.milvus:MilvusIndex", files=False, server=True),
    "numpy": Backend("indexes.vector.exact:NumpyIndex", files=True, server=False),
}
INDEX_KINDS = tuple(BACKENDS)


def open_index(kind: str, directory: Path, dim: int, generation: int, options: dict | None = None,
               new: bool = False) -> VectorIndex:
    """Open (or create) the index of backend ``kind`` in ``directory`` at ``generation``. ``new``: for a new store, so a
    collection on a server that already exists (another store's) is refused rather than shared by two writers."""
    backend = BACKENDS.get(kind)
    if backend is None:
        raise ConfigError(f"unknown index backend {kind!r}: choose one of {', '.join(INDEX_KINDS)}")
    options = dict(options or {})
    if backend.server and options.get("uri"):
        options["new"] = new
    module, name = backend.target.split(":")
    cls = getattr(importlib.import_module(module), name)
    if backend.files:
        return cls(directory, dim, generation, **options)
    return cls(directory, dim, **options)
