"""What a loader returns: a file's text with its pages and headings, or a ``LoadError`` that says why not."""

from __future__ import annotations

from dataclasses import dataclass

from indexes.errors import RagError


class LoadError(RagError):
    """A file could not be turned into text; the message says why."""


@dataclass(frozen=True)
class Heading:
    offset: int
    level: int
    title: str


@dataclass(frozen=True)
class Document:
    """The text of one file. ``page_starts[i]`` is the offset where page ``i + 1`` starts."""

    source: str
    text: str
    page_starts: tuple[int, ...] = ()
    headings: tuple[Heading, ...] = ()
    warnings: tuple[str, ...] = ()


class Builder:
    """Writes a document block by block (pages, headings, paragraphs), keeping the offsets a ``Document`` needs."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts: list[str] = []
        self._length = 0
        self.headings: list[Heading] = []
        self.page_starts: list[int] = []
        self.warnings: list[str] = []

    def _emit(self, text: str) -> None:
        self._parts.append(text)
        self._length += len(text)

    def page(self) -> None:
        """The next block starts a new page (a PDF page, a slide)."""
        self.page_starts.append(self._length)

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if title:
            self.headings.append(Heading(self._length, level, title))
            self._emit(title + "\n\n")

    def paragraph(self, text: str) -> None:
        text = text.strip()
        if text:
            self._emit(text + "\n\n")

    def document(self, doc: Document) -> None:
        """Another document's text (an EPUB chapter, an e-mail's HTML body), its headings moved to where it lands."""
        base = self._length
        self.headings.extend(Heading(base + h.offset, h.level, h.title) for h in doc.headings)
        self.warnings.extend(doc.warnings)
        self._emit(doc.text + "\n\n")

    def build(self, empty: str) -> Document:
        """The document; a ``LoadError`` with ``empty`` when it holds no text."""
        text = "".join(self._parts)
        if not text.strip():
            raise LoadError(empty)
        return Document(self.source, text.rstrip(), tuple(self.page_starts), tuple(self.headings),
                        tuple(self.warnings))
