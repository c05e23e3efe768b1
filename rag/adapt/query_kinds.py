"""The kinds of synthetic query the local LLM writes for training: a question (the default), a short keyword query
as typed into a search box, and a statement to verify. Each kind has its own prompt with one made-up worked example
per language, and its own rule for what a usable reply looks like; a store's queries of each kind are cached in a file
of their own, so adding a kind never rewrites the questions already written."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from indexes.errors import ConfigError
from indexes.text import is_han

_ROUTER = ("To reset the router, hold the button on its back for ten seconds until the light blinks orange. "
           "All settings, the Wi-Fi password included, return to their factory values.")
_FILTER = "更换滤芯前先关闭进水阀，再逆时针旋转滤瓶将其取下。新滤芯装好后，打开水龙头放水三分钟，排出管中的空气。"


@dataclass(frozen=True)
class QueryKind:
    name: str
    system: str
    user: str  # the English template, with {passage}
    user_zh: str
    example: tuple[str, str]  # (passage, reply): made up, no topic of any corpus
    example_zh: tuple[str, str]
    ends_with_question_mark: bool | None  # True: must, False: must not, None: either
    max_words: int | None = None  # words (English) or characters / 2 (Chinese) a reply may have
    min_chars: int = 6
    may_copy: bool = False  # whether the reply may be the passage's own words

    @property
    def key(self) -> str:
        """Part of the cache file's name: a changed prompt writes its queries afresh. The question kind's key is
        the one its cache has always had."""
        prompt = (self.system, self.user, self.user_zh, (self.example,), (self.example_zh,))
        key = hashlib.sha1(repr(prompt).encode()).hexdigest()[:8]
        return key if self.name == "question" else f"{self.name}-{key}"

    def chat(self, passage: str, chinese: bool) -> list[dict[str, str]]:
        """System, the worked example, then the passage."""
        template, (text, reply) = (self.user_zh, self.example_zh) if chinese else (self.user, self.example)
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": template.format(passage=text)}, {"role": "assistant", "content": reply},
                {"role": "user", "content": template.format(passage=passage)}]

    def problem(self, query: str) -> str:
        """Why ``query`` is not of this kind ('' when it is)."""
        if query in (self.example[1], self.example_zh[1]):
            return "repeats the worked example"
        asks = query.endswith(("?", "？"))
        if self.ends_with_question_mark and not asks:
            return "not a question"
        if self.ends_with_question_mark is False and asks:
            return "a question, not a statement"
        cjk = sum(map(is_han, query))
        size = cjk / 2 + len(re.findall(r"[A-Za-z0-9_]+", query)) if cjk else len(query.split())
        if self.max_words is not None and size > self.max_words:
            return "too long for a keyword query"
        return ""


QUESTION = QueryKind(
    "question",
    "You write search questions. Reply with one question only, nothing else.",
    "Passage:\n{passage}\n\nWrite one question that a reader could ask and that this passage answers. "
    "Write the question in the same language as the passage, in your own words: do not copy a sentence or a heading.",
    "资料：\n{passage}\n\n用中文写一个读者会提出、并且上面的资料能够回答的问题。用自己的话，不要照抄原文，只输出这个问题。",
    (_ROUTER, "How do I put my router back to its factory settings?"),
    (_FILTER, "净水器的滤芯应该怎么换？"),
    True,
)
KEYWORDS = QueryKind(
    "keywords",
    "You write search queries. Reply with one short keyword query only, nothing else.",
    "Passage:\n{passage}\n\nWrite the short keyword query (two to six words, not a sentence) that a user would type "
    "into a search box to find this passage. Write it in the same language as the passage, in your own words.",
    "资料：\n{passage}\n\n写一个读者为了找到上面的资料会在搜索框里输入的简短关键词查询（几个词，不是完整的句子）。用中文，只输出这个查询。",
    (_ROUTER, "router factory reset"),
    (_FILTER, "净水器 换滤芯 步骤"),
    None,
    max_words=8,
    min_chars=4,
    may_copy=True,
)
STATEMENT = QueryKind(
    "statement",
    "You write claims to check. Reply with one sentence only, nothing else.",
    "Passage:\n{passage}\n\nWrite one statement that a reader might want to check and that this passage confirms. "
    "Write it in the same language as the passage, in your own words: do not copy a sentence or a heading.",
    "资料：\n{passage}\n\n用中文写一句读者想要核实、并且上面的资料能够证实的陈述。用自己的话，不要照抄原文，只输出这句话。",
    (_ROUTER, "Resetting the router also erases the Wi-Fi password."),
    (_FILTER, "换上新滤芯以后要先放几分钟水。"),
    False,
)
KINDS = {k.name: k for k in (QUESTION, KEYWORDS, STATEMENT)}


def query_kinds(spec: str | tuple[str, ...]) -> tuple[str, ...]:
    """Kind names from ``question,keywords,statement`` (or a tuple of names), checked."""
    names = tuple(n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip())
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        raise ConfigError(f"unknown query kind {', '.join(unknown) or '(none given)'}: choose from "
                          f"{', '.join(KINDS)}, e.g. question,keywords,statement")
    return tuple(dict.fromkeys(names))
