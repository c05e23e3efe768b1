"""Texts added as they are (from another framework's loaders and splitters), beside the files of a store.

Each text is one chunk under a source of the caller's choosing, with its metadata kept as JSON in the manifest.
The same rules as files hold: an unchanged text (same content and metadata) is not embedded again, a changed one
replaces its chunk in one atomic commit, and nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from indexes.chunk_store import DocumentRecord
from indexes.errors import ConfigError
from indexes.store import DocumentUpdate, Store
from indexes.types import Chunk, make_chunk_id
from ingest.embed import Embedder


@dataclass(frozen=True)
class Text:
    source: str  # unique in the store: a second text under the same source replaces the first
    text: str
    metadata: Mapping = field(default_factory=dict)


def add_texts(store: Store, embedder: Embedder, texts: Sequence[Text]) -> int:
    """Index ``texts`` (the last one wins where a source repeats); returns how many were embedded."""
    latest: dict[str, tuple[Text, str, dict]] = {}  # source -> (text, content hash, metadata as JSON will give it back)
    for t in texts:
        if not isinstance(t.text, str):
            raise ConfigError(f"the text for {t.source!r} is a {type(t.text).__name__}, not a str")
        try:
            metadata = json.loads(json.dumps(dict(t.metadata)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the metadata of {t.source!r} cannot be stored as JSON ({exc}); "
                              "keep to strings, numbers, booleans, None, lists and dicts") from exc
        encoded = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
        latest[t.source] = (t, hashlib.sha256(f"{t.text}\0{encoded}".encode()).hexdigest(), metadata)
    with store.writer():
        known = store.chunks.documents_of(list(latest))
        changed = [(t, h, m) for s, (t, h, m) in latest.items() if s not in known or known[s].content_hash != h]
        if not changed:
            return 0
        # no embedding cache: the manifest already skips unchanged texts, and another framework's embedder has no
        # name that pins its weights, so a cache keyed by name could hand back another model's vectors
        vectors = embedder.embed_documents([t.text for t, _, _ in changed])
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        updates = [
            DocumentUpdate(DocumentRecord(t.source, h, len(t.text.encode()), 1, now, (), m),
                           [Chunk(make_chunk_id(t.source, h, 0), t.source, t.text, 0, len(t.text))], vectors[i : i + 1])
            for i, (t, h, m) in enumerate(changed)
        ]
        store.commit(updates)
        store.refresh_lexical()
    return len(changed)
