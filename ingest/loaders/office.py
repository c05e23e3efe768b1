"""Word and PowerPoint files (python-docx, python-pptx, the ``office`` extra): headings from paragraph styles, each
slide a page headed by its number and title, tables kept as tables, speaker notes kept.

A password-protected Office file is an OLE container, not a zip: it is reported as such, as are the binary formats
from before 2007 (``.doc``, ``.ppt``), which these libraries do not read."""

from __future__ import annotations

import io
import re

from indexes.errors import require
from ingest.loaders.document import Builder, Document, LoadError
from ingest.loaders.tables import table_text

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED = "EncryptionInfo".encode("utf-16-le")
_HEADING = re.compile(r"heading\s*(\d)", re.I)


def check_office(data: bytes, kind: str) -> None:
    """A ``LoadError`` for what is not an Office Open XML file: an encrypted one, a legacy binary one, or neither."""
    if data.startswith(_OLE):
        if _ENCRYPTED in data:
            raise LoadError(f"password-protected {kind} file: open it, remove the password (File > Info > Protect) "
                            "and ingest the copy")
        raise LoadError(f"legacy binary {kind} format (before 2007): save it as .docx/.pptx/.xlsx and ingest that")
    if not data.startswith(b"PK"):
        raise LoadError(f"not a {kind} file (an Office Open XML file is a zip archive)")


def load_docx(data: bytes, source: str) -> Document:
    check_office(data, "Word")
    docx = require("docx", "office", "python-docx")
    try:
        doc = docx.Document(io.BytesIO(data))
    except Exception as exc:  # a damaged zip or XML part
        raise LoadError(f"corrupt or unreadable Word file: {exc}") from exc
    out = Builder(source)
    for block in doc.iter_inner_content():
        if isinstance(block, docx.table.Table):
            out.paragraph(table_text([[cell.text for cell in row.cells] for row in block.rows]))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = 0 if style.lower() == "title" else int(m.group(1)) if (m := _HEADING.match(style)) else None
        if level is not None:
            out.heading(level, block.text)
        elif style.lower().startswith("list"):
            out.paragraph("- " + block.text)
        else:
            out.paragraph(block.text)
    return out.build("Word file has no text")


def load_pptx(data: bytes, source: str) -> Document:
    check_office(data, "PowerPoint")
    pptx = require("pptx", "office", "python-pptx")
    try:
        deck = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:
        raise LoadError(f"corrupt or unreadable PowerPoint file: {exc}") from exc
    out = Builder(source)
    for number, slide in enumerate(deck.slides, start=1):
        out.page()
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else ""
        out.heading(1, f"Slide {number}: {title}" if title else f"Slide {number}")
        for shape in _shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                out.paragraph(table_text([[c.text for c in row.cells] for row in shape.table.rows]))
            elif shape.has_text_frame:
                out.paragraph(shape.text_frame.text)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                out.paragraph(f"Notes: {notes}")
    return out.build("PowerPoint file has no text")


def _shapes(shapes):
    """Shapes top to bottom, then left to right, with groups opened."""
    flat = []
    for shape in shapes:
        if shape.shape_type == 6:  # MSO_SHAPE_TYPE.GROUP
            flat.extend(_shapes(shape.shapes))
        else:
            flat.append(shape)
    return sorted(flat, key=lambda s: ((s.top or 0) // 50_000, s.left or 0))
