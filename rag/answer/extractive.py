"""The answerer without a model: the context sentence closest to the question, cited."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from indexes.text import words
from rag.answer.prompts import NOT_FOUND
from rag.types import Message


class ExtractiveGenerator:
    """No LLM: answers with the context sentence that shares most words with the question (its section heading's
    words counting too), cited. Useful without a model, and as a fast baseline; it never invents text."""

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
        q, asked = self._terms(question), set(words(question))
        best, best_score = None, 0.0
        for m in self._PASSAGE.finditer(prompt):
            prose, rows = _tables(m.group(2))
            heading: set[str] = set()
            for sentence in re.split(r"(?<=[.!?。！？])\s*|\n\s*\n", prose):
                if sentence.lstrip().startswith("#"):  # no answer, but what the sentences under it are about
                    heading = self._terms(sentence)
                    continue
                words_ = self._terms(sentence)
                if not q & words_:
                    continue
                score = len(q & (words_ | heading)) / (1 + len(words_) ** 0.5)
                if sentence.strip() and not sentence.rstrip().endswith(("?", "？")) and score > best_score:
                    best, best_score = f"{sentence.strip()} [{m.group(1)}]", score
            for header, row in rows:  # a table's row under its header: names and numbers count, however short
                cells = set(words(row))
                score = len(asked & (cells | set(words(header)))) / (1 + len(cells) ** 0.5)
                if score > best_score:
                    best, best_score = f"{header}\n{row} [{m.group(1)}]", score
        yield best if best else NOT_FOUND


_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def _tables(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The passage's prose (table lines removed) and its tables' rows, each with its header and rule lines."""
    prose, rows, header = [], [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            prose.append(line)
            header = None
        elif i + 1 < len(lines) and _RULE.match(lines[i + 1]):
            header = f"{line}\n{lines[i + 1]}"
        elif header is not None and not _RULE.match(line):
            rows.append((header, line))
    return "\n".join(prose), rows
