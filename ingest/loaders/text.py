"""Plain text and Markdown: decoding (UTF-8, UTF-16, GB18030) and Markdown headings."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from ingest.loaders.document import Document, Heading, LoadError

log = logging.getLogger(__name__)


def load_text(text: str, source: str, markdown: bool) -> Document:
    return Document(source, text, headings=tuple(markdown_headings(text)) if markdown else ())


def decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise LoadError("binary file (contains NUL bytes), not text")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "utf-8-sig":
            log.info("decoded as %s", encoding)
        controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\n\r\t\f")
        if controls > 0.01 * min(len(text), 8192):
            raise LoadError("binary file (many control characters), not text")
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise LoadError("cannot decode the text: it is neither UTF-8 nor GB18030; convert it to UTF-8")


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def markdown_headings(text: str) -> Iterator[Heading]:
    fence = False
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence:
            m = _MD_HEADING.match(line.rstrip("\n"))
            if m:
                yield Heading(offset, len(m.group(1)), m.group(2).strip())
        offset += len(line)
