"""Token-aware chunking that breaks at headings first, then paragraphs, then sentences.

Token counts come from the embedder's own tokenizer; no chunk exceeds ``max_tokens``
(an over-long sentence is cut at the longest prefix that fits). Consecutive chunks of
a section share up to ``overlap`` tokens of whole sentences.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from indexes.errors import ConfigError
from indexes.text import is_han
from indexes.types import Chunk, make_chunk_id
from ingest.loaders import Document

CountTokens = Callable[[Sequence[str]], list[int]]

# Raised whenever the same file would now be cut differently (2: PDF outlines; 3 and 4: fewer PDF lines taken
# for running headers; 5: bookmark titles found through ligatures and curly quotes; 6: a sentence cut by a page
# break stays in one chunk; 7: back-of-book index pages skipped; 8: TeX's TS1 bullets and per-mille signs read
# as text; 9: tables as Markdown row groups that repeat the header, scanned PDF pages read by OCR), so stores
# re-chunk on the next ingest.
CHUNKING_VERSION = 9

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends after Western . ! ? (followed by space) or after CJK 。！？； (no space needed).
_SENTENCE = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=\S)|(?<=[。！？；!?])(?=[^\s。！？；!?”」』）])|(?<=[。！？；][”」』）])|\n(?=\s*(?:[-*•]|\d+[.)])\s)"
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> list[Span]:
    spans, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            spans.append(Span(pos, m.start()))
        pos = m.end()
    if pos < end:
        spans.append(Span(pos, end))
    return [_trim(text, s) for s in spans if text[s.start : s.end].strip()]


def _trim(text: str, s: Span) -> Span:
    a, b = s.start, s.end
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return Span(a, b)


def _runs_on(before: str, after: str) -> bool:
    """Whether a page break cuts a sentence: the page ends in a word, digit, comma or hyphen and the next one goes on
    in lower case or in Chinese; a next page starting with a capital (a slide, a new entry) is a new start."""
    tail, head = before.rstrip(), after.lstrip()
    if not tail or not head:
        return False
    if tail[-1] in ",，、-":
        return True
    return tail[-1].isalnum() and (head[0].islower() or is_han(head[0]))


def _page_of(doc: Document, offset: int) -> int | None:
    return bisect.bisect_right(doc.page_starts, offset) if doc.page_starts else None


class Chunker:
    def __init__(self, count_tokens: CountTokens, max_tokens: int = 256, overlap: int = 32) -> None:
        if max_tokens < 16:
            raise ConfigError(f"chunk size must be at least 16 tokens, got {max_tokens}")
        if not 0 <= overlap < max_tokens // 2:
            raise ConfigError(f"chunk overlap must be between 0 and half the chunk size, got {overlap}")
        self.count, self.max_tokens, self.overlap = count_tokens, max_tokens, overlap

    def chunk(self, doc: Document, content_hash: str) -> list[Chunk]:
        text = doc.text
        joins = [s for s in doc.page_starts if _runs_on(text[max(0, s - 64) : s], text[s : s + 64])]
        out: list[Chunk] = []
        for (start, end), path in self._sections(doc, set(joins)):
            for span in self._pack(text, self._units(text, start, end, joins)):
                page, page_end = _page_of(doc, span.start), _page_of(doc, span.end - 1)
                out.append(
                    Chunk(
                        id=make_chunk_id(doc.source, content_hash, len(out)),
                        source=doc.source,
                        text=text[span.start : span.end],
                        start=span.start,
                        end=span.end,
                        page=page,
                        headings=path,
                        page_end=page_end,
                    )
                )
        return out

    @staticmethod
    def _sections(doc: Document, joins: set[int]) -> list[tuple[tuple[int, int], tuple[str, ...]]]:
        """Spans between headings and page breaks, except the breaks that cut a sentence (``joins``): a chunk keeps
        to one page, so its citation is exact, unless the text runs on, and then it records both pages."""
        marks: dict[int, tuple[str, ...] | None] = {0: ()}
        stack: list[tuple[int, str]] = []
        for h in doc.headings:
            while stack and stack[-1][0] >= h.level:
                stack.pop()
            stack.append((h.level, h.title))
            marks[h.offset] = tuple(t for _, t in stack)
        for start in doc.page_starts:
            if start not in joins:
                marks.setdefault(start, None)  # a page break keeps the current heading path
        out, path = [], ()
        offsets = sorted(marks)
        for a, b in zip(offsets, [*offsets[1:], len(doc.text)]):
            path = marks[a] if marks[a] is not None else path
            body = doc.text[a:b].strip()
            # A section that is only its heading line adds nothing: the next section's path already names it.
            if body and not (path and marks[a] is not None and body.lstrip("#").strip() == path[-1]):
                out.append(((a, b), path))
        return out

    def _units(self, text: str, start: int, end: int, joins: Sequence[int]) -> list[tuple[Span, int]]:
        """Paragraphs that fit, else their sentences, else token-bounded pieces; with token counts. The two halves
        of a paragraph cut by a page break (at one of ``joins``) are one paragraph."""
        units: list[tuple[Span, int]] = []
        paragraphs: list[Span] = []
        for para in _split(text, start, end, _PARAGRAPH):
            i = bisect.bisect_left(joins, paragraphs[-1].end) if paragraphs else len(joins)
            if i < len(joins) and joins[i] <= para.start:
                paragraphs[-1] = Span(paragraphs[-1].start, para.end)
            else:
                paragraphs.append(para)
        for para, n in zip(paragraphs, self.count([text[p.start : p.end] for p in paragraphs])):
            if n <= self.max_tokens:
                units.append((para, n))
                continue
            sentences = _split(text, para.start, para.end, _SENTENCE)
            for sent, m in zip(sentences, self.count([text[s.start : s.end] for s in sentences])):
                units.extend([(sent, m)] if m <= self.max_tokens else self._hard_split(text, sent))
        return units

    def _hard_split(self, text: str, span: Span) -> list[tuple[Span, int]]:
        """Cut at the longest prefix that fits (binary search on characters), preferring a space."""
        out, a = [], span.start
        while a < span.end:
            lo, hi = a + 1, span.end
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.count([text[a:mid]])[0] <= self.max_tokens:
                    lo = mid
                else:
                    hi = mid - 1
            cut = lo
            if cut < span.end:
                space = text.rfind(" ", a + (cut - a) // 2, cut)
                cut = space if space > a else cut
            piece = _trim(text, Span(a, cut))
            if piece.end > piece.start:
                out.append((piece, self.count([text[piece.start : piece.end]])[0]))
            a = cut
        return out

    def _pack(self, text: str, units: list[tuple[Span, int]]) -> list[Span]:
        chunks: list[Span] = []
        current: list[tuple[Span, int]] = []
        total = 0
        for unit, n in units:
            if current and total + n > self.max_tokens:
                chunks.append(Span(current[0][0].start, current[-1][0].end))
                carried: list[tuple[Span, int]] = []
                kept = 0
                for prev in reversed(current):
                    if kept + prev[1] > self.overlap or kept + prev[1] + n > self.max_tokens:
                        break
                    carried.insert(0, prev)
                    kept += prev[1]
                current, total = carried, kept
            current.append((unit, n))
            total += n
        if current:
            chunks.append(Span(current[0][0].start, current[-1][0].end))
        return chunks
