"""Retrieval: the first stage (``retriever``: dense, BM25 or both, with filters), the fusion of rankings
(``fusion``), the second stage (``rerank``) and the passages around a hit (``context``)."""

from rag.retrieval.fusion import lexical_weight, rrf, weighted
from rag.retrieval.retriever import Filters, RetrievalSettings, Retriever

__all__ = ["Filters", "RetrievalSettings", "Retriever", "lexical_weight", "rrf", "weighted"]
