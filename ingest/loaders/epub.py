"""EPUB books (ebooklib, the ``epub`` extra): the chapters in reading order, each read as HTML with its headings."""

from __future__ import annotations

import io
import zipfile

from indexes.errors import require
from ingest.loaders.document import Builder, Document, LoadError
from ingest.loaders.html import load_html


def load_epub(data: bytes, source: str) -> Document:
    require("ebooklib", "epub", "ebooklib")
    from ebooklib import ITEM_DOCUMENT, epub

    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
    except (zipfile.BadZipFile, KeyError, ValueError, epub.EpubException) as exc:
        raise LoadError(f"corrupt or unreadable EPUB: {exc}") from exc
    out = Builder(source)
    for idref, _ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ITEM_DOCUMENT:
            continue
        try:
            out.document(load_html(item.get_content().decode("utf-8", "replace"), source))
        except LoadError:
            continue  # a cover or a page with only an image
    return out.build("EPUB has no text (only images?)")
