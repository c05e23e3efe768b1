"""Embedding: the ``Embedder`` protocol and its defaults here; the models and presets (``models``), the
sentence-transformers implementation, the torch-free ONNX encoder, the e5 preset's conversion and the embedding cache
each in a module of their own."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ingest.embed.models import DEFAULT_EMBEDDER
from ingest.embed.sentence_transformers import SentenceTransformerEmbedder

__all__ = ["DEFAULT_EMBEDDER", "Embedder", "SentenceTransformerEmbedder", "query_time"]


class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Most content tokens one document may have, after prefix and special tokens."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def query_time(embedder: Embedder) -> Embedder:
    """The same embedder for query-time work (which sentences a compressed prompt keeps): float32 products, so the
    outcome does not depend on whether this CPU has bf16 (bf16 rounding reordered near-ties and changed 4 of 20 CTeX
    FAQ prompts), and torch-free where ``ingest.embed.onnx`` covers the model. Loaded models are shared."""
    if not isinstance(embedder, SentenceTransformerEmbedder):
        return embedder
    twin = copy.copy(embedder)
    twin.dtype, twin.query_time = "float32", True
    return twin
