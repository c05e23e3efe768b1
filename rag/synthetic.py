"""Training questions generated from the corpus by the local LLM: one question per sampled chunk,
in the chunk's own language, filtered, cached in the store so a second run generates nothing again."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from indexes.store import Store
from indexes.text import words
from indexes.types import Chunk
from rag.generation import is_chinese

log = logging.getLogger(__name__)

SYSTEM = "You write search questions. Reply with one question only, nothing else."
USER_ZH = "段落：\n{passage}\n\n请用中文写一个读者可能会问、并且这段文字能够回答的问题。不要照抄原文，只输出这个问题。"
USER = ("Passage:\n{passage}\n\nWrite one question that a reader could ask and that this passage answers. "
        "Write the question in the same language as the passage. Do not copy a sentence from the passage.")


@dataclass(frozen=True)
class SyntheticQuestion:
    chunk_id: int
    source: str
    question: str
    ok: bool
    reason: str = ""


def clean(reply: str, passage: str) -> tuple[str, str]:
    """The question from a model reply, and the reason to reject it ('' when it is fine)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    q = re.sub(r"^(question|问题)\s*[:：]\s*|^\d+[.)]\s*", "", lines[0], flags=re.I).strip().strip('"“”') if lines else ""
    if not q:
        return q, "empty"
    if len(q) < 6:
        return q, "too short"
    if len(q) > 200:
        return q, "too long"
    if q in passage:
        return q, "copied from the passage"
    q_words, passage_words = words(q), words(passage)
    if q_words and len(q_words & passage_words) / len(q_words) > 0.9 and len(q_words) > 12:
        return q, "mostly copied from the passage"
    return q, ""


def sample_chunks(store: Store, n: int, seed: int = 0, min_chars: int = 80) -> list[Chunk]:
    ids = sorted(int(i) for i in store.chunks.ids())
    random.Random(seed).shuffle(ids)
    out: list[Chunk] = []
    for s in range(0, len(ids), 500):
        found = store.chunks.get(ids[s : s + 500])
        out.extend(c for i in ids[s : s + 500] if (c := found.get(i)) is not None and len(c.text.strip()) >= min_chars)
        if len(out) >= n:
            break
    return out[:n]


class LLMQuestionWriter:
    """Questions written by a local LLM (batched greedy generation)."""

    copies_passage = False

    def __init__(self, generator, max_passage_chars: int = 1200) -> None:
        self.generator, self.max_chars = generator, max_passage_chars

    def write(self, passages: Sequence[str]) -> list[str]:
        return self.generator.generate_batch(
            [[{"role": "system", "content": SYSTEM},
              {"role": "user", "content": (USER_ZH if is_chinese(p) else USER).format(passage=p[: self.max_chars])}]
             for p in passages], max_new_tokens=48)


class InverseClozeWriter:
    """No LLM: the pseudo-question is one sentence of the passage (the inverse cloze task); training then
    pairs it with the passage minus that sentence. Much weaker than real questions, but instant."""

    copies_passage = True
    _SENT = re.compile(r"[^.!?。！？\n]{20,}[.!?。！？]?")

    def write(self, passages: Sequence[str]) -> list[str]:
        out = []
        for p in passages:
            sentences = self._SENT.findall(p)
            out.append(max(sentences, key=len).strip() if sentences else "")
        return out


def generate_questions(chunks: Sequence[Chunk], writer, cache: Path, batch_size: int = 8,
                       progress: bool = True) -> list[SyntheticQuestion]:
    """One question per chunk; cached in ``cache`` (JSONL, appended per batch) so reruns resume."""
    from tqdm.auto import tqdm

    done: dict[int, SyntheticQuestion] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["chunk_id"]] = SyntheticQuestion(**row)
    todo = [c for c in chunks if c.id not in done]
    if todo:
        log.info("writing questions for %d chunks (%d cached)", len(todo), len(chunks) - len(todo))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a", encoding="utf-8") as fh, tqdm(total=len(todo), desc="questions", unit="chunk", disable=not progress) as bar:
        for s in range(0, len(todo), batch_size):
            batch = todo[s : s + batch_size]
            for c, reply in zip(batch, writer.write([c.text for c in batch])):
                q, reason = clean(reply, "" if writer.copies_passage else c.text)
                item = SyntheticQuestion(c.id, c.source, q, not reason, reason)
                done[c.id] = item
                fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
            fh.flush()
            bar.update(len(batch))
    return [done[c.id] for c in chunks if c.id in done]


def question_writer(spec: str, device: str | None = None):
    """``ict`` for the inverse cloze task (no LLM), anything else names the LLM that writes questions."""
    if spec == "ict":
        return InverseClozeWriter()
    from rag.llm import TransformersGenerator

    return LLMQuestionWriter(TransformersGenerator(spec, device=device))


def split_by_source(questions: Sequence[SyntheticQuestion], fraction: float = 0.2,
                    unit: Callable[[SyntheticQuestion], str] = lambda q: q.source) -> tuple[list, list]:
    """(train, held out): whole units (source documents) are held out, taken in a stable hash order until they
    hold ``fraction`` of the questions, so near-duplicate chunks never straddle the split (one unit always trains)."""
    units = sorted({unit(q) for q in questions}, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    counts = {u: 0 for u in units}
    for q in questions:
        counts[unit(q)] += 1
    test: set[str] = set()
    for u in units[:-1]:
        if sum(counts[t] for t in test) >= fraction * len(questions):
            break
        test.add(u)
    return [q for q in questions if unit(q) not in test], [q for q in questions if unit(q) in test]


def held_out(source: str, fraction: float = 0.2) -> bool:
    """Split by source document (a stable hash), so near-duplicate chunks never straddle train and test."""
    return int(hashlib.sha1(source.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction
