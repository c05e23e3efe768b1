"""A LlamaIndex retriever over a ``KnowledgeBase``, for ``RetrieverQueryEngine`` and the rest of LlamaIndex.

>>> from llama_index.core.query_engine import RetrieverQueryEngine
>>> from rag.integrations.llama_index import KnowledgeBaseRetriever
>>> engine = RetrieverQueryEngine.from_args(KnowledgeBaseRetriever(kb=kb, k=4), llm=my_llm)
"""

from __future__ import annotations

import asyncio

from indexes.errors import require

require("llama_index.core", "llama-index", "llama-index-core")

from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from rag.integrations._metadata import hit_metadata  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.retrieval import Filters  # noqa: E402
from rag.types import Hit  # noqa: E402

__all__ = ["KnowledgeBaseRetriever", "to_node"]

# what an LLM prompt shows of a node: where it comes from, not our bookkeeping
_HIDDEN_FROM_LLM = ["chunk_id", "score", "page_end"]


def to_node(hit: Hit) -> NodeWithScore:
    """A hit as a ``NodeWithScore``: a ``TextNode`` with the chunk's text, id and ``hit_metadata``, and its score."""
    metadata = hit_metadata(hit)
    node = TextNode(text=hit.chunk.text, id_=hit.chunk.chunk_id, metadata=metadata,
                    excluded_llm_metadata_keys=_HIDDEN_FROM_LLM, excluded_embed_metadata_keys=list(metadata))
    return NodeWithScore(node=node, score=float(hit.score))


class KnowledgeBaseRetriever(BaseRetriever):
    """The passages ``kb`` would give its own LLM (its retrieval mode, reranker and de-duplication), best first.

    Node metadata: source, page, page_end, chunk_id, headings and score, as in the LangChain adapter.
    """

    def __init__(self, kb: KnowledgeBase, k: int | None = None, mode: str | None = None, filters: Filters = Filters(),
                 callback_manager: CallbackManager | None = None, verbose: bool = False) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.kb, self.k, self.mode, self.filters = kb, k, mode, filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(h) for h in self.kb.context(query_bundle.query_str, self.k, self.filters, self.mode)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
