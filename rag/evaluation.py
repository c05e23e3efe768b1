"""Retrieval evaluation: Recall@1/5/10, MRR@10, nDCG@10 and the failures, for one or more configurations.

A question file is JSONL; each line has ``question`` and either ``gold`` (a phrase: a chunk is
relevant when its normalised text contains the normalised phrase, which survives any
re-chunking) or ``source`` (a path suffix) with an optional ``page``.
nDCG@10 uses binary relevance with one ideal relevant chunk, so duplicate chunks of the same
passage are not rewarded and systems with different chunking are comparable.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from indexes.errors import ConfigError
from indexes.text import normalize
from indexes.types import Chunk
from rag.types import Hit

CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class Question:
    question: str
    gold: str | None = None
    source: str | None = None
    page: int | None = None


def load_questions(path: Path) -> list[Question]:
    questions = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read questions {path}: {exc.strerror}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q = Question(row["question"], row.get("gold"), row.get("source"), row.get("page"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path}:{n}: expected a JSON object with 'question' and 'gold' or 'source' ({exc})"
            ) from exc
        if not (q.gold or q.source):
            raise ConfigError(f"{path}:{n}: a question needs a 'gold' phrase or a 'source'")
        questions.append(q)
    if not questions:
        raise ConfigError(f"{path} holds no questions")
    return questions


def _match_text(text: str) -> str:
    return re.sub(r"\s+", " ", normalize(text)).lower()


def is_relevant(chunk: Chunk, q: Question) -> bool:
    if q.gold is not None:
        return _match_text(q.gold) in _match_text(chunk.text)
    if not chunk.source.endswith(q.source):
        return False
    return q.page is None or (chunk.page is not None and chunk.page <= q.page <= (chunk.page_end or chunk.page))


@dataclass(frozen=True)
class QuestionResult:
    question: Question
    first_relevant: int | None  # 1-based rank, None when not in the top 10
    retrieved: tuple[str, ...]  # short descriptions of the top results
    seconds: float


@dataclass(frozen=True)
class Report:
    name: str
    results: tuple[QuestionResult, ...]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[QuestionResult]:
        return [r for r in self.results if r.first_relevant is None]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "metrics": self.metrics,
            "failures": [
                {
                    "question": r.question.question,
                    "gold": r.question.gold or r.question.source,
                    "retrieved": list(r.retrieved),
                }
                for r in self.failures
            ],
        }


def score(results: Sequence[QuestionResult]) -> dict[str, float]:
    n = len(results)
    ranks = [r.first_relevant for r in results]
    m = {f"recall@{c}": sum(1 for r in ranks if r is not None and r <= c) / n for c in CUTOFFS}
    m["mrr@10"] = sum(1.0 / r for r in ranks if r is not None and r <= 10) / n
    m["ndcg@10"] = sum(1.0 / math.log2(r + 1) for r in ranks if r is not None and r <= 10) / n
    times = [r.seconds for r in results]
    m["median_ms"] = 1000 * statistics.median(times)
    m["p95_ms"] = 1000 * sorted(times)[max(0, math.ceil(0.95 * n) - 1)]
    m["questions"] = n
    return m


Search = Callable[[str, int], Sequence[Hit]]


def evaluate(name: str, search: Search, questions: Sequence[Question], k: int = 10) -> Report:
    """Run every question through ``search`` and score where the first relevant chunk landed."""
    results = []
    for q in questions:
        t = time.perf_counter()
        hits = search(q.question, k)
        seconds = time.perf_counter() - t
        first = next((h.rank for h in hits if is_relevant(h.chunk, q)), None)
        seen = tuple(
            f"{Path(h.chunk.source).name}{f' p.{h.chunk.pages}' if h.chunk.pages else ''}: "
            f"{' '.join(h.chunk.text.split())[:80]}"
            for h in hits[:3]
        )
        results.append(QuestionResult(q, first, seen, seconds))
    return Report(name, tuple(results), score(results))


def format_table(reports: Sequence[Report]) -> str:
    cols = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "median_ms"]
    width = max(len(r.name) for r in reports) + 2
    lines = [f"{'configuration':{width}}" + "".join(f"{c:>11}" for c in cols)]
    for r in reports:
        lines.append(
            f"{r.name:{width}}"
            + "".join(f"{r.metrics[c]:>11.1f}" if c == "median_ms" else f"{r.metrics[c]:>11.3f}" for c in cols)
        )
    return "\n".join(lines)
