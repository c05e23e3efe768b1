"""Where the Ray runner's embedding actors put their work in the shared mode: chunks into PostgreSQL (staged under
the run until its driver commits them), vectors straight into Milvus, so the driver never carries the corpus.

Each actor journals its vector writes under its own database connection before making them, inside the store's
commit lock, exactly as a writer's commit does: an actor or a driver killed at any moment leaves vectors and staged
chunks that the next writer's recovery removes, and nothing becomes visible before the driver's commit.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from indexes.types import Chunk

# the columns a direct-writing actor keeps in the rows it hands on: what the driver needs to commit
LIGHT_COLUMNS = ("source", "status", "digest", "size", "n_chunks", "ingested_at", "warnings", "failed", "ordinal",
                 "id")


def sink_of(store) -> dict | None:
    """What an actor needs to write into ``store`` directly, or None when it is not a shared store."""
    if not getattr(store.chunks, "coordinates_writers", False):
        return None
    s = store.settings
    return {"db": store.chunks.db.url, "store": store.chunks.store, "dim": s.dim, "index": s.index,
            "index_options": s.index_options, "run": store.chunks.db.me}


class DirectWriter:
    """One per embedding actor: its own database connection and Milvus client."""

    def __init__(self, sink: dict) -> None:
        from indexes.shared.chunks import PgChunkStore
        from indexes.shared.database import Database
        from indexes.vector import open_index

        self.chunks = PgChunkStore(Database(sink["db"], create=False), sink["store"])
        self.index = open_index(sink["index"], Path(tempfile.gettempdir()), sink["dim"], 0, sink["index_options"])
        self.run = sink["run"]

    def write(self, batch: dict, vectors: np.ndarray) -> dict:
        """Write the batch's chunks and vectors; the batch's light columns, for the driver."""
        rows = [i for i, o in enumerate(batch["ordinal"]) if int(o) >= 0]
        if rows:
            ids = [int(batch["id"][i]) for i in rows]
            with self.chunks.committing():
                self.chunks.journal(ids, "add")
                self.index.add(np.array(ids, dtype=np.int64), vectors[rows])
                self.chunks.stage(self.run, [(int(batch["ordinal"][i]), chunk_of(batch, i)) for i in rows])
        return {k: batch[k] for k in LIGHT_COLUMNS}


def chunk_of(batch: dict, i: int) -> Chunk:
    """Row ``i`` of a batch as a chunk; only its id and source when the batch has no text (written directly)."""
    if "text" not in batch:
        return Chunk(id=int(batch["id"][i]), source=str(batch["source"][i]), text="", start=0, end=0)
    page, page_end = int(batch["page"][i]), int(batch["page_end"][i])
    return Chunk(
        id=int(batch["id"][i]),
        source=str(batch["source"][i]),
        text=str(batch["text"][i]),
        start=int(batch["start"][i]),
        end=int(batch["end"][i]),
        page=None if page < 0 else page,
        headings=tuple(json.loads(str(batch["headings"][i]))),
        page_end=None if page_end < 0 else page_end,
    )
