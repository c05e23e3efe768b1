"""Loaders: files to ``Document``s. PDF (pypdf, pages and outline kept), Markdown, HTML, plain text; one module
per format.

A file that cannot be read raises ``LoadError`` with the reason; the pipeline reports it
and goes on with the other files.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ingest.loaders.document import Document, Heading, LoadError
from ingest.loaders.html import load_html
from ingest.loaders.pdf import load_pdf
from ingest.loaders.text import decode, load_text

__all__ = ["DEFAULT_INCLUDE", "Document", "Heading", "LoadError", "load", "walk", "wanted"]

DEFAULT_INCLUDE = ("*.pdf", "*.md", "*.markdown", "*.txt", "*.text", "*.rst", "*.html", "*.htm")
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


def load(path: Path, data: bytes | None = None, source: str | None = None) -> Document:
    """Load one file; ``data`` avoids a second read when the caller already has the bytes."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    source = source or str(path)
    if not data.strip():
        raise LoadError("empty file")
    suffix = path.suffix.lower()
    if suffix == ".pdf" or data[:5] == b"%PDF-":
        return load_pdf(data, source)
    text = decode(data)
    if suffix in (".html", ".htm", ".xhtml") or re.match(r"\s*(<!doctype html|<html)", text[:200], re.I):
        return load_html(text, source)
    if suffix in (".md", ".markdown"):
        return load_text(text, source, markdown=True)
    return load_text(text, source, markdown=False)
