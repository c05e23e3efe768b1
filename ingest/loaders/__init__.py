"""Loaders: files to ``Document``s, one module per format. PDF (pypdf, pages and outline kept; pages without a text
layer read by OCR), Markdown, HTML, plain text; Word and PowerPoint (``office``), Excel and CSV (``sheets``), EPUB,
e-mail (``.eml``, Outlook ``.msg``). Tables are kept as Markdown row groups that repeat their header (``tables``).

A file that cannot be read raises ``LoadError`` with the reason; the pipeline reports it
and goes on with the other files.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ingest.loaders.document import Document, Heading, LoadError
from ingest.loaders.epub import load_epub
from ingest.loaders.html import load_html
from ingest.loaders.mail import load_eml, load_msg
from ingest.loaders.office import check_office, load_docx, load_pptx
from ingest.loaders.pdf import load_pdf
from ingest.loaders.sheets import load_csv, load_xlsx
from ingest.loaders.text import decode, load_text

__all__ = ["DEFAULT_INCLUDE", "Document", "Heading", "LoadError", "load", "walk", "wanted"]

DEFAULT_INCLUDE = ("*.pdf", "*.md", "*.markdown", "*.txt", "*.text", "*.rst", "*.html", "*.htm", "*.docx", "*.pptx",
                   "*.xlsx", "*.xlsm", "*.csv", "*.tsv", "*.epub", "*.eml", "*.msg")
_BY_SUFFIX = {".docx": load_docx, ".pptx": load_pptx, ".xlsx": load_xlsx, ".xlsm": load_xlsx, ".csv": load_csv,
              ".tsv": load_csv, ".epub": load_epub, ".eml": load_eml, ".msg": load_msg}
_LEGACY = {".doc": "Word", ".ppt": "PowerPoint", ".xls": "Excel"}
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv"}


def walk(paths: Iterable[Path], include: Sequence[str] = DEFAULT_INCLUDE,
         exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Files under ``paths`` (recursively) whose name matches an include glob and no exclude glob.
    A file named directly is always yielded unless excluded."""
    for root in paths:
        root = Path(root)
        if root.is_file():
            if not excluded(root, exclude):
                yield root
            continue
        if not root.exists():
            raise LoadError(f"{root} does not exist")
        for p in sorted(root.rglob("*")):
            if p.is_file() and wanted(p.relative_to(root), include, exclude) and not excluded(p, exclude):
                yield p


def wanted(path: Path, include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = ()) -> bool:
    """Whether a folder walk takes the file at ``path`` (relative to the folder walked, or absolute)."""
    if _SKIP_DIRS & set(path.parts[:-1]) or excluded(path, exclude):
        return False
    return any(fnmatch.fnmatch(path.name.lower(), g) for g in include)


def excluded(path: Path, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(str(path), g) or fnmatch.fnmatch(path.name, g) for g in exclude)


def load(path: Path, data: bytes | None = None, source: str | None = None, ocr: bool = True) -> Document:
    """Load one file; ``data`` avoids a second read when the caller already has the bytes; ``ocr`` reads the PDF pages
    that have no text layer."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    source = source or str(path)
    if not data.strip():
        raise LoadError("empty file")
    suffix = path.suffix.lower()
    if suffix == ".pdf" or data[:5] == b"%PDF-":
        return load_pdf(data, source, ocr)
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix](data, source)
    if suffix in _LEGACY:
        check_office(data, _LEGACY[suffix])
        raise LoadError(f"cannot read {suffix} files: save it as {suffix}x and ingest that")
    text = decode(data)
    if suffix in (".html", ".htm", ".xhtml") or re.match(r"\s*(<!doctype html|<html)", text[:200], re.I):
        return load_html(text, source)
    if suffix in (".md", ".markdown"):
        return load_text(text, source, markdown=True)
    return load_text(text, source, markdown=False)
