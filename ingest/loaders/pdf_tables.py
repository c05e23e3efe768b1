"""Ruled tables in PDFs with a text layer (pdfplumber, the ``pdf-tables`` extra): a table found on a page replaces the
lines pypdf made of it (its cells run together, row by row) with Markdown row groups that repeat the header, as the
other formats' tables are. Only pages with drawn lines are looked at (pypdfium2 counts them in a millisecond), and a
table needs two rows and two columns; without pdfplumber the pages stay as they are."""

from __future__ import annotations

import io
import logging

from ingest.loaders.tables import table_text

log = logging.getLogger(__name__)


def add_tables(data: bytes, texts: list[str]) -> int:
    """Rewrite, in ``texts`` (one per page), the lines of each ruled table as Markdown; returns how many tables."""
    try:
        import pdfplumber
    except ImportError:
        log.info("PDF tables are read as text: pip install 'rag-kb[pdf-tables]' to keep them as tables")
        return 0
    found = 0
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for number in _ruled_pages(data, len(pdf.pages)):
            if not texts[number - 1].strip():
                continue
            for table in pdf.pages[number - 1].find_tables():
                rows = [[cell or "" for cell in row] for row in table.extract()]
                if len(rows) >= 2 and max(len(r) for r in rows) >= 2:
                    texts[number - 1] = replace_lines(texts[number - 1], rows)
                    found += 1
    return found


def _ruled_pages(data: bytes, count: int) -> list[int]:
    """Pages (1-based) with at least three drawn paths: the only ones that can hold a ruled table."""
    try:
        import pypdfium2
        import pypdfium2.raw as pdfium_c
    except ImportError:
        return list(range(1, count + 1))
    doc = pypdfium2.PdfDocument(data)
    try:
        return [i + 1 for i in range(len(doc))
                if sum(1 for _ in doc[i].get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_PATH,), max_depth=1)) >= 3]
    finally:
        doc.close()


def replace_lines(text: str, rows: list[list[str]]) -> str:
    """``text`` with the run of lines made only of the table's words replaced by the table as Markdown (appended when
    no such run of two lines or more is found)."""
    words = {w for row in rows for cell in row for w in cell.split()}
    lines = text.split("\n")
    inside = [i for i, line in enumerate(lines) if line.split() and all(w in words for w in line.split())]
    markdown = table_text(rows)
    if len(inside) < 2:
        return f"{text}\n\n{markdown}"
    first, last = inside[0], inside[-1]
    if len(inside) < 0.6 * (last - first + 1):
        return f"{text}\n\n{markdown}"
    return "\n".join([*lines[:first], "", markdown, "", *lines[last + 1 :]])
