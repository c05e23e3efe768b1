"""What the LLM is asked: the grounded answer prompt and the follow-up rewrite, each in the question's language."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.types import Hit, Message

NOT_FOUND = "NOT_FOUND"

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages you are given. "
    "Write the answer as one or more complete sentences in the same language as the question, "
    "and end each sentence with the number of the passage it comes from in square brackets, such as [1]. "
    f"If the passages do not contain the answer, reply with exactly {NOT_FOUND} and nothing else."
)


def is_chinese(text: str) -> bool:
    """Whether Chinese is a fifth of the text, or has at least as many characters as the Latin words beside it:
    a Chinese answer full of LaTeX commands is Chinese, an English page naming a Chinese author is not."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk > 0 and (cjk >= 0.2 * len(re.sub(r"\s", "", text)) or cjk >= len(re.findall(r"[A-Za-z]+", text)))



def language_of(text: str) -> str:
    """"Chinese" or "English": the language an answer to ``text`` must be written in."""
    return "Chinese" if is_chinese(text) else "English"



def context_block(hits: Sequence[Hit]) -> str:
    parts = []
    for h in hits:
        where = h.chunk.source.rsplit("/", 1)[-1] + (f", page {h.chunk.pages}" if h.chunk.pages else "")
        parts.append(f"[{h.rank}] ({where})\n{h.chunk.text.strip()}")
    return "\n\n".join(parts)



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



def no_answer_text(question: str, language: str | None = None) -> str:
    return (
        "文档中没有找到这个问题的答案。"
        if (language or language_of(question)) == "Chinese"
        else "The documents do not contain the answer to this question."
    )


_CONDENSE_EXAMPLES = {
    "English": (
        "User: 路由器怎么重置？\nAssistant: 按住重置键十秒[1]。",
        "And the camera?",
        "How do I reset the camera?",
    ),
    "Chinese": (
        "User: How do I reset the router?\nAssistant: Hold the reset button for ten seconds [1].",
        "那摄像头呢？",
        "怎样重置摄像头？",
    ),
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
        {
            "role": "system",
            "content": "Rewrite the user's last question as a complete question that can be understood "
            "without the conversation: name what it refers to. "
            f"The last question is in {language}: write the rewritten question in {language}{native}. "
            "Reply with the rewritten question only.",
        },
        {
            "role": "user",
            "content": f"Conversation:\n{ex_turns}\n\nLast question: {ex_question}\n\nStandalone question:",
        },
        {"role": "assistant", "content": ex_answer},
        {
            "role": "user",
            "content": f"Conversation:\n{turns}\n\nLast question: {question}\n\n"
                       f"Standalone question in {language}{native}:",
        },
    ]
