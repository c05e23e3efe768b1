"""Training queries generated from the corpus by the local LLM: one query of each asked kind (a question by default;
``rag.adapt.query_kinds``) per segment of each sampled chunk (so a chunk holding several topics gets a query for each),
in the chunk's own language, filtered, cached in the store so a second run generates nothing again."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from indexes.errors import ConfigError
from indexes.store import Store
from indexes.text import search_text, words
from indexes.types import Chunk
from rag.adapt.query_kinds import KINDS, QUESTION, QueryKind
from rag.answer.prompts import is_chinese

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticQuestion:
    chunk_id: int
    source: str
    question: str
    ok: bool
    reason: str = ""
    part: int = 0  # which segment of the chunk the question was written for
    kind: str = "question"  # rag.adapt.query_kinds: question, keywords or statement


_META = re.compile(
    r"\b(th(e|is|ese) (passage|paragraph|excerpt|snippet)s?|the (given|above|provided) \w+|the author)\b"
    r"|(这|本|该|上)(段|篇)|段落|(资料|文本)(中|里)|原文|(?<!中)文中|上述|上文",
    re.IGNORECASE,
)


def clean(reply: str, passage: str, kind: QueryKind | None = QUESTION) -> tuple[str, str]:
    """The query from a model reply, and the reason to reject it ('' when it is fine); ``kind``: the form it must
    have (None for the inverse cloze task, whose pseudo-questions are any sentence)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    q = (
        re.sub(r"^(question|问题)\s*[:：]\s*|^\d+[.)]\s*", "", lines[0], flags=re.I).strip().strip('"“”')
        if lines
        else ""
    )
    if not q:
        return q, "empty"
    if len(q) < (kind.min_chars if kind else 6):
        return q, "too short"
    if len(q) > 200:
        return q, "too long"
    if _META.search(q):
        return q, "asks about the passage, not its subject"
    if kind and kind.may_copy:  # a keyword query is the passage's own words
        return q, kind.problem(q)
    if q in passage:
        return q, "copied from the passage"
    q_words, passage_words = words(q), words(passage)
    if q_words and len(q_words & passage_words) / len(q_words) > 0.9 and len(q_words) > 12:
        return q, "mostly copied from the passage"
    return q, kind.problem(q) if kind else ""


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


_SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s)|(?<=[。！？；\n])")


def segments(text: str, max_chars: int | None = None, max_parts: int = 4) -> list[str]:
    """The text cut at sentence or line ends into at most ``max_parts`` pieces of about ``max_chars``
    (200 for Chinese, 400 otherwise): a small LLM asked about a whole chunk writes about its first lines only."""
    text = text.strip()
    limit = max_chars or (200 if is_chinese(text) else 400)
    limit = max(limit, -(-len(text) // max_parts))
    out: list[str] = []
    for piece in _SENTENCE_END.split(text):
        if out and len(out[-1]) + len(piece) <= limit:
            out[-1] += piece
        elif piece.strip():
            out.append(piece)
    if len(out) > 1 and len(out[-1].strip()) < limit // 4:
        last = out.pop()
        out[-1] += last
    while len(out) > max_parts:  # join the shortest adjacent pair
        i = min(range(len(out) - 1), key=lambda j: len(out[j]) + len(out[j + 1]))
        out[i : i + 2] = [out[i] + out[i + 1]]
    return [o.strip() for o in out if o.strip()]


class LLMQuestionWriter:
    """Queries of one kind written by a local LLM (batched greedy generation)."""

    copies_passage = False
    segmented = True

    def __init__(self, generator, max_passage_chars: int = 1200, kind: QueryKind = QUESTION) -> None:
        self.generator, self.max_chars, self.kind = generator, max_passage_chars, kind
        self.key = kind.key  # part of the cache name: a changed prompt writes its queries afresh

    def of_kind(self, kind: QueryKind) -> LLMQuestionWriter:
        return LLMQuestionWriter(self.generator, self.max_chars, kind)

    def write(self, passages: Sequence[str], chinese: Sequence[bool] | None = None) -> list[str]:
        """``chinese``: the language of each passage's whole chunk (a segment of code alone says little)."""
        zh = chinese or [is_chinese(p) for p in passages]
        return self.generator.generate_batch(
            [self.kind.chat(p[: self.max_chars], z) for p, z in zip(passages, zh)], max_new_tokens=48
        )


class InverseClozeWriter:
    """No LLM: the pseudo-question is one sentence of the passage (the inverse cloze task); training then
    pairs it with the passage minus that sentence. Much weaker than real questions, but instant."""

    copies_passage = True
    segmented = False
    key = "ict"
    kind = None
    _SENT = re.compile(r"[^.!?。！？\n]{20,}[.!?。！？]?")

    def of_kind(self, kind: QueryKind) -> InverseClozeWriter:
        return self  # one kind: a sentence of the passage

    def write(self, passages: Sequence[str], chinese: Sequence[bool] | None = None) -> list[str]:
        out = []
        for p in passages:
            sentences = self._SENT.findall(p)
            out.append(max(sentences, key=len).strip() if sentences else "")
        return out


def generate_questions(chunks: Sequence[Chunk], writer, cache: Path, batch_size: int = 8, progress: bool = True,
                       max_parts: int = 4) -> list[SyntheticQuestion]:
    """A query of the writer's kind for each segment of each chunk (``segments``); cached in ``cache`` (JSONL,
    appended per batch) so reruns resume. Cached queries are judged again by today's filter (``clean``)."""
    from tqdm.auto import tqdm

    kind = getattr(writer, "kind", QUESTION)

    def judged(item: SyntheticQuestion, chunk: Chunk) -> SyntheticQuestion:
        passage = "" if writer.copies_passage else search_text(chunk.headings, chunk.text)
        q, reason = clean(item.question, passage, kind)
        return replace(item, question=q, ok=not reason, reason=reason)

    done: dict[tuple[int, int], SyntheticQuestion] = {}
    cached = cache.read_text(encoding="utf-8") if cache.exists() else ""
    if cached:
        for line in cached.splitlines():
            try:
                row = SyntheticQuestion(**json.loads(line))
            except (ValueError, TypeError):  # a line cut short by a crash: that question is written again
                continue
            done[row.chunk_id, row.part] = row
    wanted = [
        (c, part, seg)
        for c in chunks
        for part, seg in enumerate(segments(c.text, max_parts=max_parts) if writer.segmented else [c.text])
    ]
    todo = [w for w in wanted if (w[0].id, w[1]) not in done]
    if todo:
        log.info("writing %d questions for %d chunks (%d cached)", len(todo), len(chunks), len(wanted) - len(todo))
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(cache, "a", encoding="utf-8") as fh,
        tqdm(total=len(todo), desc="questions", unit="question", disable=not progress) as bar,
    ):
        if cached and not cached.endswith("\n"):  # start after the cut-short line, not on it
            fh.write("\n")
        for s in range(0, len(todo), batch_size):
            batch = todo[s : s + batch_size]
            replies = writer.write([seg for _, _, seg in batch], [is_chinese(c.text) for c, _, _ in batch])
            for (c, part, _), reply in zip(batch, replies):
                item = judged(SyntheticQuestion(c.id, c.source, reply, True, "", part, kind.name if kind else
                                                "question"), c)
                done[c.id, part] = item
                fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
            fh.flush()
            bar.update(len(batch))
    return [judged(done[c.id, part], c) for c, part, _ in wanted if (c.id, part) in done]


def question_writer(spec: str, device: str | None = None, backend: str = "auto"):
    """``ict`` for the inverse cloze task (no LLM), anything else names the LLM that writes questions.

    ``backend`` auto picks by hardware: transformers' batched generation on the bf16 copy where bf16 products run in
    hardware (0.70 s a question against 1.98 s on llama.cpp, 0.5B preset, 2 cores with AMX,
    benchmarks/question_bench.py)
    or on a GPU; llama.cpp on other CPUs, where bf16 products are emulated and several times slower."""
    if spec == "ict":
        return InverseClozeWriter()
    from ingest.embed.models import native_bf16, torch_device
    from rag.llm import load_generator
    from rag.llm.presets import is_gguf

    if backend == "auto" and is_gguf(spec):
        backend = "transformers" if torch_device(device).startswith("cuda") or native_bf16() else "auto"
    generator = load_generator(spec, device=device, backend=backend)
    if not hasattr(generator, "generate_batch"):
        raise ConfigError(
            f"{spec!r} cannot write questions: use a preset, a .gguf file, a model folder or hub id, or ict"
        )
    return LLMQuestionWriter(generator)


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


def gold_phrase(text: str) -> str:
    """A phrase from the middle of a chunk: identifies it without depending on the overlap at its edges."""
    mid = len(text) // 2
    return text[max(0, mid - 30) : mid + 30].strip()


def split_questions(questions: list, by_id: dict, fraction: float) -> tuple[list, list]:
    """(train, held out) by source document; with one or two documents, by blocks of ten pages (or 20,000
    characters)."""
    if len({q.source for q in questions}) >= 3:
        return split_by_source(questions, fraction)

    def unit(q) -> str:
        c = by_id[q.chunk_id]
        return f"{c.source}#{c.page // 10 if c.page else c.start // 20000}"

    return split_by_source(questions, fraction, unit)


def training_questions(kb, options, work: Path, report: Callable[[str], None], min_train: int, min_test: int):
    """Synthetic questions for a sample of the store's chunks (cached under ``work``), split into training and held-out
    by document: the sampled chunks by id, the writer, and the two lists. ``options``: any fine-tuning options with
    ``chunks``, ``kinds``, ``seed``, ``llm``, ``generation_batch``, ``heldout`` and ``progress``."""
    chunks = sample_chunks(kb.store, options.chunks, options.seed)
    if len(chunks) < 20:
        raise ConfigError(f"only {len(chunks)} usable chunks: training needs a corpus of at least a few dozen passages")
    by_id = {c.id: c for c in chunks}
    writer = question_writer(options.llm, kb.config.device, kb.config.llm.backend)
    questions: list[SyntheticQuestion] = []
    for name in ("question",) if writer.copies_passage else options.kinds:  # inverse cloze: one kind
        kind_writer = writer.of_kind(KINDS[name])
        cache = work / f"questions-{options.llm.replace('/', '_')[-40:]}-{kind_writer.key}.jsonl"
        questions += generate_questions(chunks, kind_writer, cache, batch_size=options.generation_batch,
                                        progress=options.progress)
    good = [q for q in questions if q.ok]
    train, test = split_questions(good, by_id, options.heldout)
    kinds = ", ".join(f"{n} {sum(q.kind == n for q in good)}" for n in dict.fromkeys(q.kind for q in good))
    report(f"{len(good)} usable queries of {len(questions)} ({kinds}; {len(train)} train, {len(test)} held out by "
           "document)")
    if len(train) < min_train or len(test) < min_test:
        raise ConfigError(f"too few questions to train and test ({len(train)} train, {len(test)} held out): "
                          "use more chunks")
    return by_id, writer, train, test
