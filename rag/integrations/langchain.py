"""LangChain adapters: a retriever and a vector store over a ``KnowledgeBase``, and embedders both ways.

>>> from rag import KnowledgeBase
>>> from rag.integrations.langchain import KnowledgeBaseRetriever
>>> retriever = KnowledgeBaseRetriever(kb=KnowledgeBase.open("my-store"), k=4)
>>> retriever.invoke("How often should the filter be cleaned?")[0].metadata["page"]

The retriever runs the store's own retrieval (hybrid, reranked if configured, near-duplicates dropped), so it
replaces ``FAISS.as_retriever()`` in a chain without giving those up. ``KnowledgeBaseVectorStore`` takes documents
from LangChain's loaders and splitters (``add_documents`` with ids, ``delete``, ``get_by_ids``) into the same store
as the files ``rag ingest`` adds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from ingest.embed import DEFAULT_EMBEDDER, Embedder, SentenceTransformerEmbedder  # noqa: E402
from ingest.texts import Text  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.integrations._metadata import hit_metadata  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.retrieval import Filters  # noqa: E402
from rag.types import Hit  # noqa: E402

__all__ = ["KnowledgeBaseRetriever", "KnowledgeBaseVectorStore", "LangChainEmbedder", "RagEmbeddings", "to_document"]

_SOURCE = "langchain:"  # the store source of a text added by id: "langchain:<id>"


def to_document(hit: Hit) -> Document:
    """A hit as a LangChain ``Document``: the chunk's text, its chunk id, and ``hit_metadata``."""
    return Document(page_content=hit.chunk.text, metadata=hit_metadata(hit), id=hit.chunk.chunk_id)


class KnowledgeBaseRetriever(BaseRetriever):
    """The passages ``kb`` would give its own LLM, as LangChain ``Document``s, best first.

    ``k`` (default: the store's configured k), ``mode`` (dense, bm25, hybrid; default the configured one) and
    ``filters`` are fields; ``invoke(query, k=..., mode=..., filters=...)`` overrides them for one call.
    ``metadata`` of each document: source, page, page_end, chunk_id, headings and score.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: KnowledgeBase
    k: int | None = None
    mode: str | None = None
    filters: Filters = Filters()

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None,
                                mode: str | None = None, filters: Filters | None = None, **_: Any) -> list[Document]:
        hits = self.kb.context(query, k or self.k, filters or self.filters, mode or self.mode)
        return [to_document(h) for h in hits]


class RagEmbeddings(Embeddings):
    """One of our embedders behind LangChain's interface: ``RagEmbeddings()`` is the default e5 preset,
    ``RagEmbeddings(model="all-minilm-l6-v2")`` another preset, model folder or hub id, and
    ``RagEmbeddings(embedder=kb.embedder)`` the one a store was built with.

    Queries and documents stay apart (``embed_query`` against ``embed_documents``), so a model trained with
    prefixes (e5's ``query:``/``passage:``) gets the right one on each side. Vectors are unit length.
    """

    def __init__(self, model: str | None = None, *, embedder: Embedder | None = None,
                 device: str | None = None) -> None:
        if embedder is not None and model is not None:
            raise ValueError("give either model= (a name to load) or embedder= (an embedder object), not both")
        self.embedder: Embedder = embedder or SentenceTransformerEmbedder(model or DEFAULT_EMBEDDER, device=device)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_documents(list(texts)).astype(float).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).astype(float).tolist()


class LangChainEmbedder:
    """A LangChain ``Embeddings`` as our ``Embedder``, to build a store with a model LangChain provides.

    Vectors are normalised to unit length (the store ranks by inner product). ``name`` is what the store records
    and checks when it is opened again: pass one that pins the model when the class name does not.
    """

    max_tokens = 8192  # not known for an arbitrary model; texts added by id are not split by us

    def __init__(self, embeddings: Embeddings, name: str | None = None) -> None:
        self.embeddings = embeddings
        self.name = name or f"langchain:{type(embeddings).__name__}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension"))
        return self._dim

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _unit(np.asarray(self.embeddings.embed_documents(list(texts)), np.float32))

    def embed_query(self, text: str) -> np.ndarray:
        return _unit(np.asarray(self.embeddings.embed_query(text), np.float32)[None])[0]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class KnowledgeBaseVectorStore(VectorStore):
    """A store as a LangChain ``VectorStore``.

    Each document added keeps its id and metadata exactly and is one chunk (LangChain has split it already), stored
    under the source ``langchain:<id>``; adding an id again replaces it, and an unchanged document is not embedded
    again. Search runs the store's own retrieval (``mode`` as configured, hybrid by default) over everything in the
    store, the files ``rag ingest`` added included: their chunks come back with their chunk id and the retriever's
    metadata. Scores are the retrieval's (fused ranks for hybrid), so there is no 0-1 relevance score.
    """

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    @property
    def embeddings(self) -> Embeddings:
        return RagEmbeddings(embedder=self.kb.embedder)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, store: str | Path | None = None, config: Config | None = None,
                   embedder_name: str | None = None, **kwargs: Any) -> "KnowledgeBaseVectorStore":
        """Open (or create) the store at ``store`` with ``embedding`` and add the texts. ``RagEmbeddings`` keep
        their own model name; any other ``Embeddings`` is recorded as ``embedder_name`` (default its class name)."""
        if store is None:
            raise ValueError("give the store directory: KnowledgeBaseVectorStore.from_texts(..., store='my-store')")
        embedder = (
            embedding.embedder if isinstance(embedding, RagEmbeddings) else LangChainEmbedder(embedding, embedder_name)
        )
        vectorstore = cls(KnowledgeBase.open(store, config, embedder=embedder))
        if texts:
            vectorstore.add_texts(texts, metadatas, ids=ids)
        return vectorstore

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = list(ids) if ids is not None else [None for _ in texts]
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError(
                f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids: give one of each per text"
            )
        ids = [str(i) if i is not None else str(uuid.uuid4()) for i in ids]
        self.kb.add_texts([Text(_SOURCE + i, t, m or {}) for i, t, m in zip(ids, texts, metadatas)])
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        if ids is None:
            raise ValueError("give the ids to delete; to empty a store, delete its directory")
        self.kb.remove([_SOURCE + str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in that order; ids not in the store are left out."""
        chunks = self.kb.store.chunks
        records = chunks.documents_of([_SOURCE + str(i) for i in ids])
        out = []
        for i in ids:
            record = records.get(_SOURCE + str(i))
            if record is not None:
                out.append(
                    Document(
                        page_content=chunks.chunks_of(record.source)[0].text, metadata=dict(record.metadata), id=str(i)
                    )
                )
        return out

    def similarity_search_with_score(self, query: str, k: int = 4, *, mode: str | None = None,
                                     filters: Filters = Filters(), **kwargs: Any) -> list[tuple[Document, float]]:
        return self._documents(self.kb.search(query, k, filters, mode))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """Dense search only: a vector has no words for the lexical side."""
        vector = _unit(np.asarray([embedding], np.float32))
        found = self.kb.store.search(vector, k)[0]
        return [doc for doc, _ in self._documents([Hit(c, float(s), r) for r, (c, s) in enumerate(found, 1)])]

    def _documents(self, hits: list[Hit]) -> list[tuple[Document, float]]:
        records = self.kb.store.chunks.documents_of(
            [h.chunk.source for h in hits if h.chunk.source.startswith(_SOURCE)]
        )
        out = []
        for h in hits:
            record = records.get(h.chunk.source)
            if record is None:  # a chunk of a file
                out.append((to_document(h), float(h.score)))
            else:
                out.append(
                    (
                        Document(
                            page_content=h.chunk.text, metadata=dict(record.metadata), id=record.source[len(_SOURCE) :]
                        ),
                        float(h.score),
                    )
                )
        return out
