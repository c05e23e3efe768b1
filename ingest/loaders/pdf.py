"""PDF (pypdf): one text with page offsets, the outline as headings, running headers, contents and index pages
dropped, TeX ligatures repaired."""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Sequence

from indexes.errors import MissingDependencyError, require
from ingest.loaders.document import Document, Heading, LoadError

log = logging.getLogger(__name__)


def load_pdf(data: bytes, source: str, ocr: bool = True) -> Document:
    """``ocr``: read the pages without a text layer with Tesseract (``ingest.loaders.ocr``)."""
    pypdf = require("pypdf", None)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(
                "encrypted PDF: it needs a password; decrypt it (e.g. `qpdf --decrypt`) and ingest the copy"
            )
        pages = list(reader.pages)
    except LoadError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files
        raise LoadError(f"corrupt or unreadable PDF: {exc}") from exc
    parts: list[str] = []
    starts: list[int] = []
    warnings: list[str] = []
    offset = 0
    texts: list[str] = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append(_fix_ligatures(page.extract_text() or ""))
        except Exception as exc:
            texts.append("")
            warnings.append(f"page {number}: text extraction failed ({exc})")
    from ingest.loaders.pdf_tables import add_tables

    add_tables(data, texts)
    if ocr:
        _read_scans(data, texts, warnings, source)
    for number, (raw, text) in enumerate(zip(texts, _drop_running_lines(texts)), start=1):
        if not raw.strip():
            if not any(w.startswith(f"page {number} has no text layer") for w in warnings):
                warnings.append(f"page {number} has no extractable text (a scanned image?)")
        elif _looks_like_contents(text):
            warnings.append(f"page {number} skipped: it looks like a table of contents (dot leaders and page numbers)")
            text = ""  # it names every topic without answering any: it would outrank the pages that do
        elif _looks_like_index(text, len(pages)):
            warnings.append(f"page {number} skipped: it looks like a back-of-book index (terms and page numbers)")
            text = ""  # the same: a list of terms matches keyword searches and answers nothing
        elif _looks_garbled(text):
            warnings.append(f"page {number} skipped: its text looks garbled (a font without a Unicode map?)")
            text = ""  # indexing noise would push real passages out of the results
        else:
            text = _CONTENTS_LINE.sub("", text)  # the start or end of a contents listing on a page with other text
        starts.append(offset)
        parts.append(text)
        offset += len(text) + 2
    body = "\n\n".join(parts)
    if not body.strip():
        reason = (
            "garbled text on every page (fonts without a Unicode map)"
            if any("garbled" in w for w in warnings)
            else next((w.split(": ", 1)[1] for w in warnings if "was not read: " in w),
                      "no extractable text (a scanned PDF: OCR is off)")
        )
        raise LoadError(f"{reason} in all {len(pages)} page(s)")
    headings = _outline_headings(reader, parts, starts)
    return Document(source, body, page_starts=tuple(starts), headings=tuple(headings), warnings=tuple(warnings))


def _read_scans(data: bytes, texts: list[str], warnings: list[str], source: str) -> None:
    """Fill the pages without a text layer by OCR, noting each page read and its time, or why none could be."""
    from ingest.loaders import ocr

    blank = [number for number, text in enumerate(texts, start=1) if not text.strip()]
    if not blank:
        return
    try:
        pages = ocr.read_pages(data, blank, source.rsplit("/", 1)[-1])
    except MissingDependencyError as exc:
        warnings.extend(f"page {n} has no text layer and was not read: {exc}" for n in blank)
        return
    for page in pages:
        texts[page.number - 1] = page.text
        warnings.append(f"page {page.number} read by OCR ({page.seconds:.1f} s)")


def _drop_running_lines(pages: Sequence[str]) -> list[str]:
    """Pages without their running header and footer: a first or last line that is the page's own number, or
    ends with it as a line at the same end of another page does; that recurs at the same end of half the pages
    (its numbers aside) or of three pages word for word; or that recurs with a last number following the page
    count as such lines on other pages do (printed page numbers offset from the file's). Pages starting "Step 3"
    and "Step 7", page 2 alone starting "Step 2", or rows of a table are content."""
    split = [text.splitlines(keepends=True) for text in pages]
    # (page, end) -> index, text, shape (numbers as #), shift (last number minus the page's), ends with the page's
    # number
    lines_at: dict[tuple[int, int], tuple[int, str, str, int | None, bool]] = {}
    for number, lines in enumerate(split, start=1):
        filled = [i for i, line in enumerate(lines) if line.strip()]
        for end, i in enumerate((filled[0], filled[-1]) if filled else ()):
            text = " ".join(lines[i].split())
            found = re.findall(r"\d+", text)
            own = re.fullmatch(rf"(\D{{0,80}}\s)?{number}", text) is not None  # "17", "Setup 17"
            shift = int(found[-1]) - number if found else None
            lines_at[number, end] = (i, text, re.sub(r"\d+", "#", text), shift, own)
    counts = Counter((end, shape) for (_, end), (_, _, shape, _, _) in lines_at.items())
    exact = Counter((end, text) for (_, end), (_, text, _, _, _) in lines_at.items())
    shifts = Counter((end, shift) for (_, end), (_, _, _, shift, _) in lines_at.items() if shift is not None)
    owned = Counter(end for (_, end), (_, _, _, _, own) in lines_at.items() if own)
    common = max(3, len({number for number, _ in lines_at}) // 2)

    def running(number: int, end: int, text: str, shape: str, shift: int | None, own: bool) -> bool:
        # the bare page number, or "K Setup 17" when another page's line at that end also ends with its own number
        paged = own and (text == str(number) or owned[end] >= 2)
        follows = counts[end, shape] >= 2 and shift is not None and shifts[end, shift] >= 3
        return paged or follows or counts[end, shape] >= common or exact[end, text] >= 3

    drop = {(number, facts[0]) for (number, end), facts in lines_at.items() if running(number, end, *facts[1:])}
    return [
        "".join(line for i, line in enumerate(lines) if (number, i) not in drop)
        for number, lines in enumerate(split, start=1)
    ]


def _outline_headings(reader, pages: Sequence[str], starts: Sequence[int]) -> list[Heading]:
    """Headings from the PDF's outline (bookmarks), placed where each title is printed on its page, so
    chunks follow the document's sections; a title not found there (bookmark text can differ) is left out."""
    items: list[tuple[int, str, int]] = []

    def walk(nodes, level: int) -> None:
        for node in nodes:
            if isinstance(node, list):
                walk(node, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(node)
            except Exception:  # a dangling or external destination
                continue
            title = re.sub(r"\s+", " ", str(node.get("/Title", ""))).strip()
            if title and page is not None and 0 <= page < len(pages):
                items.append((level, title, page))

    try:
        walk(reader.outline, 1)
    except Exception as exc:  # a damaged outline must not cost the text
        log.info("PDF outline unreadable, chunking by page only: %s", exc)
        return []
    headings: list[Heading] = []
    floor = (-1, 0)  # titles come in reading order: search a page after the previous title found on it
    for level, title, page in items:
        at = _find_title(pages[page], title, floor[1] if floor[0] == page else 0)
        if at is not None:
            headings.append(Heading(starts[page] + at, level, title))
            floor = (page, at + 1)
    return sorted(headings, key=lambda h: h.offset)


_LINE_END = re.compile(r"[ \t]*(?:\n|$)")


def _find_title(text: str, title: str, start: int) -> int | None:
    """Offset of ``title`` in ``text`` ignoring case and whitespace, best on a line of its own; else of its
    longest prefix (at least half of it) that starts a line."""
    chars = _title_pieces("".join(title.split()))
    for n in [len(chars), *range(len(chars) - 1, max(6, len(chars) // 2) - 1, -1)]:
        pattern = re.compile(r"\s*".join(chars[:n]), re.IGNORECASE)
        found = []
        for m in pattern.finditer(text, start):
            line_start = m.start() == 0 or text[m.start() - 1] == "\n"
            line_end = n == len(chars) and _LINE_END.match(text, m.end()) is not None
            found.append((not (line_start and line_end), not line_start, m.start()))
        found = [f for f in found if n == len(chars) or not f[1]]
        if found:
            return min(found)[2]
    return None


_PRINTED_AS = {"ffi": "ﬃ", "ffl": "ﬄ", "ff": "ﬀ", "fi": "ﬁ", "fl": "ﬂ", "'": "‘’", "`": "‘", '"': "“”"}


def _title_pieces(title: str) -> list[str]:
    """A pattern for each character of ``title`` that also matches how a PDF may print it (a ligature, a
    typographic quote); a ligature is one piece for its letters."""
    pieces, i = [], 0
    while i < len(title):
        key = next((k for k in ("ffi", "ffl", "ff", "fi", "fl") if title.startswith(k, i)), title[i])
        alt = _PRINTED_AS.get(key)
        pieces.append(f"(?:{re.escape(key)}|[{re.escape(alt)}])" if alt else re.escape(key))
        i += len(key)
    return pieces


# TeX's OT1 fonts put ligatures at control-code slots; without a ToUnicode map pypdf returns those codes.
_TEX_LIGATURES = {"\x0b": "ff", "\x0c": "fi", "\x0d": "fl", "\x0e": "ffi", "\x0f": "ffl"}
_LIGATURE_CODE = re.compile(r"(?<=[A-Za-z])[\x0b-\x0f]|[\x0b-\x0f](?=[a-z])")


# TeX's TS1 (textcomp) symbols in a font without a ToUnicode map come out of pypdf as glyph names such as ``/x88``.
_TS1 = {"84": "†", "85": "‡", "87": "‰", "88": "•", "97": "™"}
_GLYPH_NAME = re.compile(r"/x(8[4578]|97)(?![0-9A-Fa-f])")


def _fix_ligatures(text: str) -> str:
    """TeX's ligature codes and TS1 symbol names, as pypdf returns them from fonts without a ToUnicode map, as text."""
    text = _LIGATURE_CODE.sub(lambda m: _TEX_LIGATURES[m.group(0)], text)
    return _GLYPH_NAME.sub(lambda m: _TS1[m.group(1)], text)


_CONTENTS_LINE = re.compile(r"^[^\n]*(?:\. ?){4,}[ \t]*\d+[ \t]*$\n?", re.MULTILINE)
_LEADER = re.compile(r"(?:\.\s?){4,}\s*\d+\s*$|(?:\.\s?){6,}")
_INDEX_ENTRY = re.compile(r"\S,\s*\d{1,4}(?:\s*[–-]\s*\d{1,4})?(?:\s*,\s*\d{1,4}(?:\s*[–-]\s*\d{1,4})?)*\s*$")


def _looks_like_contents(text: str) -> bool:
    """A table-of-contents page: most of its lines carry dot leaders (``Topic . . . . . 12``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) >= 5 and sum(1 for line in lines if _LEADER.search(line)) >= 0.4 * len(lines)


def _looks_like_index(text: str, n_pages: int) -> bool:
    """A back-of-book index page: most of its lines are a term and numbers that could be this file's pages
    (``amsmath, 6, 18–21``; a table of ``Berlin, 3645`` is not one)."""
    lines = [line for line in text.splitlines() if line.strip()]

    def entry(line: str) -> bool:
        m = _INDEX_ENTRY.search(line)
        return m is not None and all(int(n) <= n_pages + 10 for n in re.findall(r"\d+", m.group()))

    return len(lines) >= 8 and sum(1 for line in lines if entry(line)) >= 0.6 * len(lines)


def _looks_garbled(text: str) -> bool:
    """Replacement/private-use/control characters, or letters scattered over many unrelated scripts
    (what a CJK font without a Unicode map decodes to)."""
    import unicodedata

    sample = text[:4000]
    bad = sum(
        1 for ch in sample if ch == "\ufffd" or (0xE000 <= ord(ch) <= 0xF8FF) or (ord(ch) < 32 and ch not in "\n\t")
    )
    if bad > 0.1 * max(1, len(sample.strip())):
        return True
    scripts = Counter(unicodedata.name(ch, "?").split(" ")[0] for ch in sample if ch.isalpha())
    letters = sum(scripts.values())
    common = {"LATIN", "CJK", "GREEK", "HIRAGANA", "KATAKANA", "HANGUL", "FULLWIDTH", "CYRILLIC"}
    odd = sum(n for script, n in scripts.items() if script not in common)
    many = sum(1 for n in scripts.values() if n >= 0.02 * letters)
    return letters >= 50 and (many >= 5 or odd > 0.3 * letters)
