"""Copy a store directory into the shared mode (``rag share``): settings, manifest, chunks and vectors.

The copy commits a batch of documents at a time into the shared store, which keeps its own manifest, so a copy
that was stopped goes on where it stopped when run again; the directory is only read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from indexes.errors import StoreError
from indexes.shared import store as shared
from indexes.store import DocumentUpdate, Store
from indexes.types import Chunk

VectorsOf = Callable[[Sequence[Chunk]], np.ndarray]


def stored_vectors(source: Store) -> VectorsOf | None:
    """Read vectors back from the source's own index (FAISS, numpy), or None where it cannot give them back."""
    read = getattr(source.index, "vectors", None)
    return None if read is None else (lambda chunks: read([c.id for c in chunks]))


def copy_store(source: Store, url: str, name: str, milvus_uri: str, vectors_of: VectorsOf,
               batch_chunks: int = 2000, progress: bool = True) -> tuple[int, int]:
    """Copy ``source`` into the shared store ``name`` (created with the source's embedder and chunking, its vectors
    on ``milvus_uri``); returns (documents copied now, documents already there)."""
    from tqdm.auto import tqdm

    try:
        target = shared.open_store(url, name)
    except shared.NoSuchStoreError:
        options = {"uri": milvus_uri, "collection": shared.milvus_collection(url, name)}
        target = shared.create(url, name, replace(source.settings, index="milvus", index_options=options))
    if (target.settings.embedder, target.settings.dim) != (source.settings.embedder, source.settings.dim):
        target.close()
        raise StoreError(f"the shared store {name!r} was built with {target.settings.embedder}, not "
                         f"{source.settings.embedder}: copy into a new --name")
    try:
        there, documents = target.documents(), source.documents()
        todo = [d for s, d in documents.items() if there.get(s) != d]
        batch: list[DocumentUpdate] = []
        size = 0
        for record in tqdm(todo, desc="copy", unit="doc", disable=not progress):
            chunks = source.chunks.chunks_of(record.source)
            vectors = vectors_of(chunks) if chunks else np.zeros((0, source.settings.dim), np.float32)
            batch.append(DocumentUpdate(record, chunks, vectors))
            size += len(chunks)
            if size >= batch_chunks:
                target.commit(batch)
                batch, size = [], 0
        if batch:
            target.commit(batch)
        gone = [s for s in there if s not in documents]
        if gone:
            target.commit([], removed_sources=gone)
        if todo or gone or not target.lexical_ready:
            target.refresh_lexical()
        return len(todo), len(there) - len(gone)
    finally:
        target.close()
