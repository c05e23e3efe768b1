"""Nouns shared by every layer: a chunk of a document and a scored id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, as stored and retrieved.

    ``text`` is faithful to the source; ``start``/``end`` are character offsets into
    the loaded document text; ``page`` is the 1-based page the chunk starts on and ``page_end``
    the one it ends on (both ``None`` where a format has no pages).
    """

    id: int
    source: str
    text: str
    start: int
    end: int
    page: int | None = None
    headings: tuple[str, ...] = ()
    page_end: int | None = None

    @property
    def pages(self) -> str:
        return page_label(self.page, self.page_end)

    @property
    def chunk_id(self) -> str:
        """The id as the fixed-width hex string used in JSON output and by Chroma."""
        return format(self.id, "016x")


def page_label(page: int | None, page_end: int | None) -> str:
    """"3", "3-4", or "" where the format has no pages: how citations print the place."""
    if page is None:
        return ""
    return str(page) if page_end in (None, page) else f"{page}-{page_end}"


@dataclass(frozen=True)
class ScoredId:
    """One result of an index search: a chunk id and its similarity (higher is better)."""

    id: int
    score: float


def make_chunk_id(source: str, content_hash: str, ordinal: int) -> int:
    """A stable, positive 63-bit id: the same file content at the same path gives the same ids."""
    digest = hashlib.blake2b(f"{source}\0{content_hash}\0{ordinal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF
