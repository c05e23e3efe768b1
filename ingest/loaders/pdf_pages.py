"""A PDF page as it looks, for a citation: the page rendered to PNG, and where a passage's text sits on it (pypdfium2,
the ``ocr`` extra; ``rag serve`` has it). The passage is found in the page's text layer by its first and last
characters, spaces aside, so the small differences between pypdf's text (what was indexed) and pdfium's do not
matter; a page read by OCR has no text layer, and then no boxes."""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from indexes.errors import require

ANCHOR = 24  # characters (spaces aside) matched at each end of the passage


@dataclass(frozen=True)
class PageBoxes:
    page: int
    width: float  # points
    height: float
    rects: tuple[tuple[float, float, float, float], ...]  # left, top, right, bottom in points from the top-left

    def to_dict(self) -> dict:
        return {"page": self.page, "width": self.width, "height": self.height, "rects": [list(r) for r in self.rects]}


def render_page(path: Path, page: int, scale: float = 1.5) -> bytes:
    """Page ``page`` (1-based) of the PDF at ``path`` as a PNG, ``scale`` pixels a point."""
    pdfium = require("pypdfium2", "ocr")
    doc = pdfium.PdfDocument(str(path))
    try:
        if not 1 <= page <= len(doc):
            raise ValueError(f"page {page} is not in this {len(doc)}-page PDF")
        image = doc[page - 1].render(scale=scale).to_pil()
    finally:
        doc.close()
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _squeeze(text: str) -> tuple[str, list[int]]:
    """``text`` without whitespace, NFKC-folded and lower-cased, with each kept character's index in ``text``."""
    chars, where = [], []
    for i, ch in enumerate(text):
        for folded in unicodedata.normalize("NFKC", ch).lower():
            if not folded.isspace():
                chars.append(folded)
                where.append(i)
    return "".join(chars), where


def passage_boxes(path: Path, page: int, passage: str) -> PageBoxes | None:
    """Where ``passage`` is on page ``page``: the text layer's rectangles from its first to its last character (to
    the page's end when it runs on to the next page); None when the page has no text layer or the passage is not
    found on it."""
    pdfium = require("pypdfium2", "ocr")
    doc = pdfium.PdfDocument(str(path))
    try:
        if not 1 <= page <= len(doc):
            return None
        pdf_page = doc[page - 1]
        width, height = pdf_page.get_size()
        textpage = pdf_page.get_textpage()
        layer = textpage.get_text_range()
        found = _span(layer, passage)
        if found is None:
            return None
        first, last = found
        rects = []
        for i in range(textpage.count_rects(first, last - first + 1)):
            left, bottom, right, top = textpage.get_rect(i)
            rects.append((round(left, 1), round(height - top, 1), round(right, 1), round(height - bottom, 1)))
    finally:
        doc.close()
    return PageBoxes(page, round(width, 1), round(height, 1), tuple(rects)) if rects else None


def _span(layer: str, passage: str) -> tuple[int, int] | None:
    """The first and last character indices in ``layer`` of ``passage``, found by its two ends."""
    hay, where = _squeeze(layer)
    needle, _ = _squeeze(re.sub(r"[|#*`>-]+", " ", passage))  # Markdown marks the loaders add are not on the page
    if not hay or len(needle) < 4:
        return None
    head = needle[: min(ANCHOR, len(needle))]
    start = hay.find(head)
    if start < 0:
        return None
    tail = needle[-min(ANCHOR, len(needle)) :]
    end = hay.find(tail, start)
    stop = end + len(tail) - 1 if end >= 0 else min(len(hay) - 1, start + len(needle) - 1)
    return where[start], where[stop]
