"""The ``Generator`` protocol, the grounded prompt, and turning model output into a cited ``Answer``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

from indexes.text import words
from rag.citations import check_citations
from rag.types import Answer, Citation, Hit

Message = dict[str, str]

NOT_FOUND = "NOT_FOUND"

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages you are given. "
    "Write the answer as one or more complete sentences in the same language as the question, "
    "and end each sentence with the number of the passage it comes from in square brackets, such as [1]. "
    f"If the passages do not contain the answer, reply with exactly {NOT_FOUND} and nothing else."
)


class Generator(Protocol):
    name: str

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        """Yield the reply to a chat ``messages`` list piece by piece."""


def generate(generator: Generator, messages: Sequence[Message], max_new_tokens: int = 512) -> str:
    return "".join(generator.stream(messages, max_new_tokens))


def is_chinese(text: str) -> bool:
    """Whether Chinese is a fifth of the text, or has at least as many characters as the Latin words beside it:
    a Chinese answer full of LaTeX commands is Chinese, an English page naming a Chinese author is not."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk > 0 and (cjk >= 0.2 * len(re.sub(r"\s", "", text)) or cjk >= len(re.findall(r"[A-Za-z]+", text)))


def context_block(hits: Sequence[Hit]) -> str:
    parts = []
    for h in hits:
        where = h.chunk.source.rsplit("/", 1)[-1] + (f", page {h.chunk.pages}" if h.chunk.pages else "")
        parts.append(f"[{h.rank}] ({where})\n{h.chunk.text.strip()}")
    return "\n\n".join(parts)


def count_tokens(generator, text: str) -> int:
    """Tokens by the LLM's own tokenizer where it has one; otherwise words and CJK characters (an estimate)."""
    if hasattr(generator, "count_tokens"):
        return generator.count_tokens(text)
    return len(re.findall(r"[\u4e00-\u9fff]|\w+", text))


def language_of(text: str) -> str:
    """"Chinese" or "English": the language an answer to ``text`` must be written in."""
    return "Chinese" if is_chinese(text) else "English"


def answer_messages(question: str, hits: Sequence[Hit], language: str | None = None) -> list[Message]:
    """The grounded prompt. The answer's language is named in both messages, in that language too for Chinese:
    asked "保修期多久？" over Chinese passages with an English-only instruction, the 1.5B preset answered in English.
    ``language`` (default: the question's) is the user's own question's, where ``question`` is a rewrite of it."""
    language = language or language_of(question)
    native = "（请用中文回答）" if language == "Chinese" else ""
    system = f"{SYSTEM_PROMPT} The question is in {language}: write the answer in {language}{native}."
    user = (f"Context passages:\n\n{context_block(hits)}\n\nQuestion: {question}\n\n"
            f"Answer from the passages, in {language}{native}, and cite them as [1], [2], ...")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_CITE = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】]")


def cited_numbers(text: str) -> list[int]:
    seen: list[int] = []
    for m in _CITE.finditer(text):
        for n in re.split(r"[,，、]", m.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return seen


def no_answer_text(question: str, language: str | None = None) -> str:
    return "文档中没有找到这个问题的答案。" if (language or language_of(question)) == "Chinese" else "The documents do not contain the answer to this question."


def says_not_found(reply: str) -> bool:
    """Whether the model said it found no answer (NOT_FOUND, also written with spaces or in lower case)."""
    return NOT_FOUND in reply.upper().replace(" ", "_")


def may_say_not_found(text: str) -> bool:
    """Whether a reply that starts with ``text`` may still be only NOT_FOUND."""
    return NOT_FOUND.startswith(text.strip().upper().replace(" ", "_"))


def build_answer(question: str, reply: str, hits: Sequence[Hit], check: bool = True, language: str | None = None) -> Answer:
    """Map the [n] the model cited to sources; say plainly when there was no answer. With ``check`` each sentence's
    citation is verified against the passages first (see ``rag.citations``)."""
    reply = reply.strip()
    if not hits or not reply or says_not_found(reply):
        return Answer(question, no_answer_text(question, language), (), tuple(hits), answered=False)
    unsupported: tuple[str, ...] = ()
    if check:
        checked = check_citations(reply, hits, question=question)
        reply, unsupported = checked.text.strip(), checked.unsupported
    by_rank = {h.rank: h for h in hits}
    citations = tuple(
        Citation.of(n, by_rank[n].chunk)
        for n in cited_numbers(reply) if n in by_rank
    )
    return Answer(question, reply, citations, tuple(hits), answered=True, unsupported=unsupported)


_CONDENSE_EXAMPLES = {
    "English": ("User: 路由器怎么重置？\nAssistant: 按住重置键十秒[1]。", "And the camera?", "How do I reset the camera?"),
    "Chinese": ("User: How do I reset the router?\nAssistant: Hold the reset button for ten seconds [1].", "那摄像头呢？", "怎样重置摄像头？"),
}


def condense_messages(history: Sequence[tuple[str, str]], question: str) -> list[Message]:
    """Ask the model to rewrite a follow-up question as a standalone one in the follow-up's own language, with an
    example across languages: told only "keep its language", the 1.5B preset rewrote "那压缩机呢？" after an English
    turn in English (and the answer came in English); told the language alone, it kept "压缩机呢？" unchanged."""
    turns = "\n".join(f"User: {q}\nAssistant: {a}" for q, a in history[-4:])
    language = language_of(question)
    native = "（用中文写）" if language == "Chinese" else ""
    ex_turns, ex_question, ex_answer = _CONDENSE_EXAMPLES[language]
    return [
        {"role": "system", "content": "Rewrite the user's last question as a complete question that can be understood "
                                      "without the conversation: name what it refers to. "
                                      f"The last question is in {language}: write the rewritten question in {language}{native}. "
                                      "Reply with the rewritten question only."},
        {"role": "user", "content": f"Conversation:\n{ex_turns}\n\nLast question: {ex_question}\n\nStandalone question:"},
        {"role": "assistant", "content": ex_answer},
        {"role": "user", "content": f"Conversation:\n{turns}\n\nLast question: {question}\n\nStandalone question in {language}{native}:"},
    ]


def standalone_question(generator: Generator, history: Sequence[tuple[str, str]], question: str) -> str:
    """The follow-up ``question`` rewritten by the LLM so it stands without the conversation (itself if no history)."""
    if not history:
        return question
    rewritten = generate(generator, condense_messages(history, question), 96).strip().strip('"')
    return rewritten.splitlines()[0].strip() if rewritten else question


class ExtractiveGenerator:
    """No LLM: answers with the context sentence that shares most words with the question, cited.
    Useful without a model, and as a fast baseline; it never invents text."""

    name = "extractive"
    _PASSAGE = re.compile(r"^\[(\d+)\] \([^)]*\)\n(.*?)(?=\n\n\[\d+\] \(|\n\nQuestion: )", re.S | re.M)

    @classmethod
    def _terms(cls, text: str) -> set[str]:
        """Content words: CJK characters and Latin words of four letters or more (drops most function words)."""
        return {w for w in words(text) if len(w) >= 4 or "\u4e00" <= w <= "\u9fff"}

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 512) -> Iterator[str]:
        prompt = messages[-1]["content"]
        if "Context passages:" not in prompt:  # e.g. a question rewrite: keep the question as it is
            yield prompt.rsplit("Last question:", 1)[-1].split("\n")[0].strip()
            return
        question = prompt.rsplit("Question: ", 1)[-1].split("\n\nAnswer from the passages", 1)[0]
        q = self._terms(question)
        best, best_score = None, 0.0
        for m in self._PASSAGE.finditer(prompt):
            for sentence in re.split(r"(?<=[.!?。！？])\s*|\n\s*\n", m.group(2)):  # a heading line is no answer
                words = self._terms(sentence)
                score = len(q & words) / (1 + len(words) ** 0.5)
                if (sentence.strip() and not sentence.rstrip().endswith(("?", "？")) and not sentence.lstrip().startswith("#")
                        and score > best_score):
                    best, best_score = f"{sentence.strip()} [{m.group(1)}]", score
        yield best if best else NOT_FOUND
