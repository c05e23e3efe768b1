"""Open WebUI's task prompts (title, tags, follow-up suggestions, search queries), answered at once.

Open WebUI sends these to the chat's own model after each answer, each as a user message that starts with
``### Task:`` and quotes the chat in ``<chat_history>``. Answered by our retrieval and single LLM slot they cost
3-4 full answers per turn and make the user's next question wait behind them; answered here they cost nothing:
the title is the first question, and no tags, follow-ups or queries are suggested (Open WebUI then shows none).
"""

from __future__ import annotations

import json
import re

_HISTORY = re.compile(r"<chat_history>(.*?)(?:</chat_history>|$)", re.S)
_FIRST_USER = re.compile(r"^\s*USER:\s*(.+?)\s*$", re.M)


def is_task_prompt(text: str) -> bool:
    return text.lstrip().startswith("### Task:")


def title_of(question: str, limit: int = 60) -> str:
    """The question as a title: its first line, cut at a word (or, in Chinese, a character) near ``limit``."""
    line = question.strip().splitlines()[0].strip() if question.strip() else "New chat"
    if len(line) <= limit:
        return line
    cut = line[:limit]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,.;:，。") + "…"


def task_reply(prompt: str) -> str:
    """The reply to one task prompt, in the JSON shape the prompt asks for."""
    history = _HISTORY.search(prompt)
    first = _FIRST_USER.search(history.group(1)) if history else None
    if '"title"' in prompt:
        return json.dumps({"title": title_of(first.group(1) if first else "")}, ensure_ascii=False)
    for key in ("follow_ups", "tags", "queries"):
        if f'"{key}"' in prompt:
            return json.dumps({key: []})
    return ""
