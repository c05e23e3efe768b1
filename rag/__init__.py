"""The face: KnowledgeBase API, retrieval, generation, chat and the CLI."""

from rag.knowledge_base import KnowledgeBase
from rag.retrieval import Filters

__all__ = ["KnowledgeBase", "Filters"]
