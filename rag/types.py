"""The face's nouns (a retrieved hit, a citation, an answer) and its one verb every room shares: the ``Generator``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from indexes.types import Chunk, page_label


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float
    rank: int  # 1-based

    def to_dict(self) -> dict:
        c = self.chunk
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "text": c.text,
            "source": c.source,
            "page": c.page,
            "page_end": c.page_end,
            "chunk_id": c.chunk_id,
            "start": c.start,
            "end": c.end,
            "headings": list(c.headings),
        }


@dataclass(frozen=True)
class Citation:
    number: int  # the [n] used in the answer
    source: str
    page: int | None
    chunk_id: str
    text: str
    page_end: int | None = None

    @classmethod
    def of(cls, number: int, chunk: Chunk) -> Citation:
        return cls(number, chunk.source, chunk.page, chunk.chunk_id, chunk.text, chunk.page_end)

    @property
    def pages(self) -> str:
        return page_label(self.page, self.page_end)

    def to_dict(self) -> dict:
        return {
            "n": self.number,
            "source": self.source,
            "page": self.page,
            "page_end": self.page_end,
            "chunk_id": self.chunk_id,
            "text": self.text,
        }


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    answered: bool  # False when the context did not contain the answer
    unsupported: tuple[str, ...] = ()  # sentences of the answer that no passage supports (left uncited)

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "answered": self.answered,
            "citations": [c.to_dict() for c in self.citations],
            "unsupported": list(self.unsupported),
            "sources": [h.to_dict() for h in self.hits],
        }


Message = dict[str, str]


class Generator(Protocol):
    name: str

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        """Yield the reply to a chat ``messages`` list piece by piece."""
