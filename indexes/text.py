"""Text for search: normalisation (what is embedded and matched, never what is stored or shown) and BM25 tokens."""

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


def search_text(headings: tuple[str, ...] | list[str], text: str) -> str:
    """What a chunk is searched by, densely and lexically: its heading path, then its text, normalised."""
    return normalize(" > ".join(headings) + "\n\n" + text if headings else text)


_WORD = re.compile(r"[\u4e00-\u9fff]|\w+")


def words(text: str) -> set[str]:
    """Distinct lower-cased words, each Chinese character counting as one: for overlap measures."""
    return set(_WORD.findall(text.lower()))


_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_]+", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they this "
    "to was will with what which who whom why how when where do does did can could should would i you we he she my "
    "your "
    "our its me from have has had been being than too very so just also any all some".split()
)


def _stemmer():
    try:
        import Stemmer  # PyStemmer, the Snowball stemmers in C

        return Stemmer.Stemmer("english").stemWord
    except ImportError:
        return lambda w: w


_stem = _stemmer()


def is_han(ch: str) -> bool:
    """A Chinese character (CJK unified ideographs, extension A, compatibility)."""
    return _HAN.match(ch) is not None


def tokenize(text: str) -> list[str]:
    """BM25 tokens: English words lower-cased, stop words dropped, Snowball-stemmed; Chinese runs as
    single characters plus overlapping character bigrams (no dictionary needed, robust to any wording)."""
    out: list[str] = []
    for run in _TOKEN.findall(normalize(text).lower()):
        if _HAN.match(run):
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in _STOPWORDS:
            out.append(_stem(run))
    return out
