"""Citations checked after generation: each sentence of a reply is matched to the passage that supports it.

Small LLMs often write no ``[n]`` at all, or the wrong one. A sentence's support by a passage is the share of
its content terms (English stems without stop words, Chinese character bigrams) that occur in the passage;
a missing citation is added, and a wrong one (or one whose passage shares only some generic words while another
passage says the whole sentence) corrected, when a passage supports the sentence, and a sentence that
no passage supports has its markers removed and is reported as unsupported, never passed off as cited.

A sentence in another language than a passage (a Chinese answer from English documents) shares no terms with it, so
where an embedder is given such a sentence is matched to the passages in the other language by meaning instead: the
multilingual embedder that retrieved them places a sentence and its translation close together (see ``ACROSS``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexes.text import is_han, tokenize
from rag.answer.compress import units
from rag.answer.prompts import is_chinese
from rag.types import Hit

SUPPORTED = 0.4  # share of a sentence's terms found in a passage for it to count as that passage's
MIN_TERMS = 3  # shorter sentences ("Yes.", "步骤如下：") are left as written
ANSWER_WORDS = frozenset({"yes", "可以", "不可", "是的", "不是"})  # a short answer's words, no passage's
NEW_TERMS = 2  # terms a sentence must add to the question's for its passage to be able to vouch for it
RIVAL = 0.75  # a model's citation stands only if its passage has this share of the best passage's support
ACROSS = 0.87  # cosine a sentence needs with a sentence of a passage in the other language to count as that
# passage's (multilingual-e5-small; chosen on the cross-language answers of benchmarks/faithfulness_bench.py)

_BRACKET = r"\s*[\[【]\s*\d+(?:\s*[,，、]\s*\d+)*\s*[\]】]"
_MARKS = rf"(?:{_BRACKET}(?:\s*[,，、;；]?{_BRACKET})*)"  # "[1]", "[1, 2]", "[1][2]", "[1], [2]"
_SENTENCE = re.compile(rf".+?(?:(?:[.!?](?=\s|$|[\[【])|[。！？]){_MARKS}?|{_MARKS}(?=\s*\n)|$)", re.S)
_MARK = re.compile(_MARKS)
_NUMBER = re.compile(r"\d+")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


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


class _Across:
    """Each sentence's cosine to the closest sentence of each passage in the other language. Both sides are embedded
    as queries, e5's use for comparing two texts of a kind: a sentence as a query and a passage's sentences as
    passages scored every sentence of the same topic alike (a Chinese answer's unsupported claim about lambdas came
    closer to a line of lambda code than its true translations did to theirs)."""

    def __init__(self, hits: Sequence[Hit], embedder) -> None:
        self._hits, self._embedder = list(hits), embedder
        self._sentences: dict[int, np.ndarray] = {}  # a passage's rank: its sentences' vectors, embedded when needed

    def similarity(self, sentence: str) -> dict[int, float]:
        chinese = is_chinese(sentence)
        other = [h for h in self._hits if is_chinese(h.chunk.text) != chinese]
        if self._embedder is None or not other:
            return {}
        todo = [h for h in other if h.rank not in self._sentences]
        if todo:
            self._embed_sentences(todo)
        query = _unit(self._embedder.embed_query(sentence))
        return {h.rank: float((self._sentences[h.rank] @ query).max()) for h in other}

    def _embed_sentences(self, hits: list[Hit]) -> None:
        """The passages' sentences in one batch where the embedder can (``embed_queries``), else one by one."""
        split = [[u.text for u in units(h.chunk.text, 0)] or [h.chunk.text] for h in hits]
        texts = [t for sentences in split for t in sentences]
        batch = getattr(self._embedder, "embed_queries", None)
        vectors = batch(texts) if batch else np.stack([self._embedder.embed_query(t) for t in texts])
        vectors = np.stack([_unit(v) for v in vectors])
        start = 0
        for h, sentences in zip(hits, split):
            self._sentences[h.rank] = vectors[start:start + len(sentences)]
            start += len(sentences)

    def numbers_agree(self, sentence: str, rank: int) -> bool:
        """Whether every number of ``sentence`` is in that passage: a translation keeps "1.5 bar" and "E07", while
        a model's own "R410A" for the passage's R290 is no translation of it."""
        passage = next(h.chunk.text for h in self._hits if h.rank == rank)
        return set(_NUMBERS.findall(sentence)) <= set(_NUMBERS.findall(passage))


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _supporting(words: set[str], cited: list[int], passages: dict[int, set[str]], threshold: float) -> int | None:
    """The passage a sentence's ``words`` come from: the model's own citation unless another passage says the
    sentence far better; None where no passage has ``threshold`` of its words."""
    support = {rank: len(words & p) / len(words) for rank, p in passages.items()}
    best = max(support, key=lambda r: (support[r], -r))
    for n in cited:
        if support.get(n, 0.0) >= max(threshold, RIVAL * support[best]):
            return n
    return best if support[best] >= threshold else None


def _across(sentence: str, cited: list[int], across: _Across) -> int | None:
    """The passage in the other language that a sentence translates: the model's own citation where it is close
    enough, else the closest one at ``ACROSS`` or above."""
    similar = across.similarity(sentence)
    close = [n for n in similar if similar[n] >= ACROSS and across.numbers_agree(sentence, n)]
    if not close:
        return None
    return next((n for n in cited if n in close), max(close, key=lambda n: (similar[n], -n)))


def check_citations(reply: str, hits: Sequence[Hit], threshold: float = SUPPORTED, question: str = "",
                    embedder=None) -> CheckedReply:
    """``question``: its terms are left out of each sentence's (the passages were retrieved because they share
    them, so "Yes, Python lists are linked lists" would find its words in any of them); a sentence that adds fewer
    than ``NEW_TERMS`` of its own is a restatement the passages cannot vouch for, and is reported unsupported.
    ``embedder`` (the store's, multilingual): compares a sentence with the passages in the other language."""
    passages = {h.rank: terms(h.chunk.text + " " + " ".join(h.chunk.headings)) for h in hits}
    asked = terms(question)
    across = _Across(hits, embedder)
    out: list[str] = []
    unsupported: list[str] = []
    added = corrected = 0
    for m in _SENTENCE.finditer(reply):
        sentence = m.group(0)
        cited = [int(n) for mark in _MARK.findall(sentence) for n in _NUMBER.findall(mark)]
        bare = _MARK.sub("", sentence)
        words = terms(bare)
        if not sentence.strip() or not passages:
            out.append(sentence)
            continue
        if len(words) < MIN_TERMS:  # too short to check ("Yes [1].", "步骤如下："); a marker on words no cited
            # passage has ("Thank you. [1]") is dropped
            content = words - ANSWER_WORDS
            out.append(
                bare if cited and content and not any(content & passages.get(n, set()) for n in cited) else sentence
            )
            continue
        source = None
        if not asked or len(words - asked) >= NEW_TERMS:
            source = _supporting(words - asked, cited, passages, threshold)
            if source is None:
                source = _across(bare, cited, across)
        if source is None:
            out.append(bare)
            unsupported.append(bare.strip())
        elif source in cited:
            out.append(sentence)
        else:
            out.append(_cite(bare, source))
            corrected += bool(cited)
            added += not cited
    return CheckedReply("".join(out), tuple(unsupported), added, corrected)
