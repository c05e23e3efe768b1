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
