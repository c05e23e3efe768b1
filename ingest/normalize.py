"""Text normalisation for search: what is embedded and matched, never what is stored or shown."""

from __future__ import annotations

import re
import unicodedata

_HYPHEN_BREAK = re.compile(r"(\w)[-\u00ad]\n\s*(\w)")
_SOFT_HYPHEN = re.compile("\u00ad")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_CJK = r"\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_LINE_BREAK = re.compile(rf"(?<=[{_CJK}])\n(?=[{_CJK}])")


def normalize(text: str) -> str:
    """NFKC (so the Kangxi radical '⾃' matches '自' and full-width 'Ａ' matches 'A'), words
    re-joined across end-of-line hyphens, CJK lines re-joined without a space, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _SOFT_HYPHEN.sub("", text)
    text = _CJK_LINE_BREAK.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text)
    return text.strip()
