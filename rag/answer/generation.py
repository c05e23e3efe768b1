"""Turning model output into a cited ``Answer``, and the follow-up rewrite run through a generator."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.answer.citations import check_citations
from rag.answer.prompts import NOT_FOUND, condense_messages, no_answer_text
from rag.types import Answer, Citation, Generator, Hit, Message


def generate(generator: Generator, messages: Sequence[Message], max_new_tokens: int = 512) -> str:
    return "".join(generator.stream(messages, max_new_tokens))


def count_tokens(generator, text: str) -> int:
    """Tokens by the LLM's own tokenizer where it has one; otherwise words and CJK characters (an estimate)."""
    if hasattr(generator, "count_tokens"):
        return generator.count_tokens(text)
    return len(re.findall(r"[\u4e00-\u9fff]|\w+", text))



_CITE = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】]")


def cited_numbers(text: str) -> list[int]:
    seen: list[int] = []
    for m in _CITE.finditer(text):
        for n in re.split(r"[,，、]", m.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return seen


def says_not_found(reply: str) -> bool:
    """Whether the model said it found no answer (NOT_FOUND, also written with spaces or in lower case)."""
    return NOT_FOUND in reply.upper().replace(" ", "_")


def may_say_not_found(text: str) -> bool:
    """Whether a reply that starts with ``text`` may still be only NOT_FOUND."""
    return NOT_FOUND.startswith(text.strip().upper().replace(" ", "_"))


def build_answer(question: str, reply: str, hits: Sequence[Hit], check: bool = True,
                 language: str | None = None, embedder=None) -> Answer:
    """Map the [n] the model cited to sources; say plainly when there was no answer. With ``check`` each sentence's
    citation is verified against the passages first (see ``rag.answer.citations``; ``embedder``, the store's, matches
    sentences to passages in the other language)."""
    reply = reply.strip()
    if not hits or not reply or says_not_found(reply):
        return Answer(question, no_answer_text(question, language), (), tuple(hits), answered=False)
    unsupported: tuple[str, ...] = ()
    if check:
        checked = check_citations(reply, hits, question=question, embedder=embedder)
        reply, unsupported = checked.text.strip(), checked.unsupported
    by_rank = {h.rank: h for h in hits}
    citations = tuple(Citation.of(n, by_rank[n].chunk) for n in cited_numbers(reply) if n in by_rank)
    return Answer(question, reply, citations, tuple(hits), answered=True, unsupported=unsupported)


def standalone_question(generator: Generator, history: Sequence[tuple[str, str]], question: str) -> str:
    """The follow-up ``question`` rewritten by the LLM so it stands without the conversation (itself if no history)."""
    if not history:
        return question
    rewritten = generate(generator, condense_messages(history, question), 96).strip().strip('"')
    return rewritten.splitlines()[0].strip() if rewritten else question
