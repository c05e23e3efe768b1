"""Citations checked after generation: each sentence of a reply is matched to the passage that supports it.

Small LLMs often write no ``[n]`` at all, or the wrong one. A sentence's support by a passage is the share of
its content terms (English stems without stop words, Chinese character bigrams) that occur in the passage;
a missing citation is added, and a wrong one (or one whose passage shares only some generic words while another
passage says the whole sentence) corrected, when a passage supports the sentence, and a sentence that
no passage supports has its markers removed and is reported as unsupported, never passed off as cited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from indexes.text import is_han, tokenize
from rag.types import Hit

SUPPORTED = 0.4  # share of a sentence's terms found in a passage for it to count as that passage's
MIN_TERMS = 3  # shorter sentences ("Yes.", "步骤如下：") are left as written
ANSWER_WORDS = frozenset({"yes", "可以", "不可", "是的", "不是"})  # a short answer's words, no passage's
NEW_TERMS = 2  # terms a sentence must add to the question's for its passage to be able to vouch for it
RIVAL = 0.75  # a model's citation stands only if its passage has this share of the best passage's support

_BRACKET = r"\s*[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]"
_MARKS = rf"(?:{_BRACKET}(?:\s*[,，、;；]?{_BRACKET})*)"  # "[1]", "[1, 2]", "[1][2]", "[1], [2]"
_SENTENCE = re.compile(rf".+?(?:(?:[.!?](?=\s|$|[\[【])|[。！？]){_MARKS}?|{_MARKS}(?=\s*\n)|$)", re.S)
_MARK = re.compile(_MARKS)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class CheckedReply:
    text: str
    unsupported: tuple[str, ...]
    added: int  # citations added where the model wrote none
    corrected: int  # citations replaced by the passage that supports the sentence


_CONTENT = re.compile(r"[^\W_]+")


def terms(text: str) -> set[str]:
    """Content terms: BM25's tokens without single Chinese characters and without the punctuation that BM25's
    Chinese runs include ("。", "倍。"), which made a correct answer ending "行距设置成两倍。[1]" unsupported."""
    return {t for t in tokenize(text) if _CONTENT.fullmatch(t) and not (len(t) == 1 and is_han(t))}


def _cite(sentence: str, n: int) -> str:
    body = sentence.rstrip()
    tail = sentence[len(body):]
    if body and body[-1] in ".!?。！？":
        end = body[-1]
        body = body[:-1].rstrip()
        space = "" if body and is_han(body[-1]) else " "
        return f"{body}{space}[{n}]{end}{tail}"
    return f"{body} [{n}]{tail}"


def check_citations(reply: str, hits: Sequence[Hit], threshold: float = SUPPORTED, question: str = "") -> CheckedReply:
    """``question``: its terms are left out of each sentence's (the passages were retrieved because they share
    them, so "Yes, Python lists are linked lists" would find its words in any of them); a sentence that adds fewer
    than ``NEW_TERMS`` of its own is a restatement the passages cannot vouch for, and is reported unsupported."""
    passages = {h.rank: terms(h.chunk.text + " " + " ".join(h.chunk.headings)) for h in hits}
    asked = terms(question)
    out: list[str] = []
    unsupported: list[str] = []
    added = corrected = 0
    for m in _SENTENCE.finditer(reply):
        sentence = m.group(0)
        if not sentence.strip():
            out.append(sentence)
            continue
        cited = [int(n) for mark in _MARK.findall(sentence) for n in _NUMBER.findall(mark)]
        bare = _MARK.sub("", sentence)
        words = terms(bare)
        if not passages:
            out.append(sentence)
            continue
        if len(words) < MIN_TERMS:  # too short to check ("Yes [1].", "步骤如下："); a marker on words no cited
            # passage has ("Thank you. [1]") is dropped
            content = words - ANSWER_WORDS
            out.append(
                bare if cited and content and not any(content & passages.get(n, set()) for n in cited) else sentence
            )
            continue
        if asked and len(words - asked) < NEW_TERMS:
            out.append(bare)
            unsupported.append(bare.strip())
            continue
        words -= asked
        support = {rank: len(words & p) / len(words) for rank, p in passages.items()}
        best = max(support, key=lambda r: (support[r], -r))
        if any(support.get(n, 0.0) >= max(threshold, RIVAL * support[best]) for n in cited):
            out.append(sentence)  # the model's own citation, unless another passage supports the sentence far better
        elif support[best] >= threshold:
            out.append(_cite(bare, best))
            corrected += bool(cited)
            added += not cited
        else:
            out.append(bare)
            unsupported.append(bare.strip())
    return CheckedReply("".join(out), tuple(unsupported), added, corrected)
