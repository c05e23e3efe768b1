"""Vector indexes: the protocol (``base``), the backends (one module each) and the name -> backend map
(``registry``)."""

from indexes.vector.base import VectorIndex
from indexes.vector.registry import INDEX_KINDS, open_index

__all__ = ["INDEX_KINDS", "VectorIndex", "open_index"]
