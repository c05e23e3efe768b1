"""``rag finetune reranker``: the LLM judge's relevance scores, distilled into a small cross-encoder.

The judge (``LlamaCppJudgeReranker``: P(yes) for "does this passage answer the question?") lifts nDCG@10 but costs
seconds a question, so it is off by default. This loop asks it once per corpus, offline:

1. questions for a sample of the store's chunks, written by the local LLM (cached, as the embedder's loop does);
2. each question's first-stage candidates (the store's hybrid top-k, its own passage included);
3. the teacher's score for every (question, passage) pair, cached in the store so a stopped run resumes;
4. a round-trip filter: a training question whose own passage the teacher does not rate is dropped;
5. a cross-encoder student, initialised from the store's embedder weights (which read Chinese and English), trained
   on the teacher's scores as soft labels (binary cross-entropy);
6. questions held out by document measure the first stage alone, the student over it, and the teacher over it.

The student is saved under the store's ``models/``; activated (``--activate`` when it beats the first stage, or
``--force``), it reranks that store's searches and answers by default (``retrieval.rerank = "auto"``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from indexes.errors import ConfigError, require
from indexes.sqlite import connect, transaction
from ingest.embed.models import resolve_model_path
from rag.adapt.synthetic import gold_phrase, training_questions
from rag.evaluation import Question, evaluate, load_questions
from rag.retrieval import Retriever
from rag.retrieval.rerank import CrossEncoderReranker, Reranker, activate_reranker, load_reranker

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RerankerOptions:
    chunks: int = 200  # chunks to write questions for
    llm: str = "qwen2.5-coder-0.5b-instruct"  # writes the questions
    teacher: str = "llm"  # the judge: the store's answer LLM (llm), another local one (llm:MODEL)
    candidates: int = 10  # first-stage passages the teacher scores per question
    keep: float = 0.5  # round trip: a training question's own passage scores at least this with the teacher
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-5
    max_length: int = 320  # tokens of question + passage the student reads
    heldout: float = 0.2
    seed: int = 0
    generation_batch: int = 8
    questions: Path | None = None  # the user's own questions (rag eval format): when given, they decide the switch
    activate: bool = False  # switch to the student if it beats the first stage
    force: bool = False  # switch whatever the result
    min_gain: float = 0.0
    progress: bool = True


@dataclass
class RerankerResult:
    model: str
    train_questions: int
    heldout_questions: int
    pairs: int
    first_stage: dict
    student: dict
    teacher: dict
    activated: bool
    seconds: dict = field(default_factory=dict)
    questions_first_stage: dict | None = None
    questions_student: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TeacherScores:
    """The teacher's score of each (question, passage) pair, kept in the store (``finetune/teacher.sqlite``) under
    the teacher's name: a stopped run, or a later one with more questions, asks only for what is missing."""

    def __init__(self, path: Path, reranker: Reranker) -> None:
        self.reranker, self.name = reranker, reranker.name
        self._db = connect(path, "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL);")

    def _key(self, question: str, passage: str) -> str:
        return hashlib.sha1(f"{self.name}\0{question}\0{passage}".encode()).hexdigest()

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        keys = [self._key(question, p) for p in passages]
        known = dict(self._db.execute(f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(keys))})",
                                      keys).fetchall()) if keys else {}
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            new = self.reranker.scores(question, [passages[i] for i in missing])
            with transaction(self._db) as db:
                db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)",
                               [(keys[i], float(s)) for i, s in zip(missing, new)])
            known.update((keys[i], float(s)) for i, s in zip(missing, new))
        return [known[k] for k in keys]

    def close(self) -> None:
        self._db.close()


def _teacher(kb, spec: str) -> Reranker:
    teacher = load_reranker(spec, lambda: kb.generator, kb.config.device)
    if teacher is None:
        raise ConfigError("rag finetune reranker needs a teacher: --teacher llm (the store's LLM) or llm:MODEL")
    return teacher


def _labelled(kb, questions: list, by_id: dict, teacher: TeacherScores, options: RerankerOptions,
              report: Callable[[str], None]) -> list[tuple[str, list, list[float]]]:
    """(question, candidate chunks, teacher scores) for each question; the source chunk is always a candidate."""
    from tqdm.auto import tqdm

    first = Retriever(kb.store, kb.embedder, kb.retriever.settings)
    out = []
    for q in tqdm(questions, desc="teacher", unit="question", disable=not options.progress):
        hits = [h.chunk for h in first.search(q.question, options.candidates)]
        if q.chunk_id not in {c.id for c in hits}:
            hits = hits[: options.candidates - 1] + [by_id[q.chunk_id]]
        out.append((q, hits, teacher.scores(q.question, [c.text for c in hits])))
    report(f"teacher scores for {sum(len(h) for _, h, _ in out)} pairs of {len(out)} questions")
    return out


def _round_trip(labelled: list, keep: float) -> list:
    """Training questions whose own passage the teacher rates at least ``keep``: a question it does not see answered
    there was written badly, or the passage does not answer it."""
    kept = []
    for q, chunks, scores in labelled:
        own = next(s for c, s in zip(chunks, scores) if c.id == q.chunk_id)
        if own >= keep:
            kept.append((q, chunks, scores))
    return kept


def train_student(base: str, pairs: list[tuple[str, str, float]], out_dir: Path, options: RerankerOptions,
                  device: str | None = None) -> None:
    """A cross-encoder from ``base`` (an embedder folder: its encoder, a new one-score head) trained on (question,
    passage, teacher score) with binary cross-entropy on the soft labels, saved to ``out_dir``."""
    st = require("sentence_transformers", None, "sentence-transformers")
    datasets = require("datasets", "finetune", "datasets")
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    model = st.CrossEncoder(base, num_labels=1, max_length=options.max_length, device=device)
    trainer_dir = out_dir.parent / f"{out_dir.name}-trainer"  # the trainer's scratch space, removed after
    data = datasets.Dataset.from_dict({"query": [p[0] for p in pairs], "passage": [p[1] for p in pairs],
                                       "label": [float(p[2]) for p in pairs]})
    args = CrossEncoderTrainingArguments(
        output_dir=str(trainer_dir), num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size, learning_rate=options.learning_rate, warmup_ratio=0.1,
        save_strategy="no", report_to="none", logging_steps=10, seed=options.seed, disable_tqdm=not options.progress,
        use_cpu=device == "cpu")
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is for the result (--json)
            trainer.train()
    finally:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    model.save_pretrained(str(out_dir))


def _measure(kb, rerankers: dict[str, Reranker | None], heldout: list[Question], top: int) -> dict[str, dict]:
    """nDCG and recall of the store's first stage with each reranker over its top ``top`` (None: alone)."""
    settings = kb.retriever.settings
    return {name: evaluate(name, Retriever(kb.store, kb.embedder, settings, r, top).search, heldout).metrics
            for name, r in rerankers.items()}


def distil_reranker(kb, options: RerankerOptions = RerankerOptions(),
                    report: Callable[[str], None] = lambda msg: log.info(msg)) -> RerankerResult:
    require("datasets", "finetune", "datasets")
    own = load_questions(options.questions) if options.questions else None  # checked first: bad input fails fast
    work = kb.root / "finetune"
    work.mkdir(exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    by_id, _, train, test = training_questions(kb, options, work, report, min_train=8, min_test=4)
    seconds["questions"] = time.perf_counter() - t

    t = time.perf_counter()
    teacher = TeacherScores(work / "teacher.sqlite", _teacher(kb, options.teacher))
    try:
        labelled = _round_trip(_labelled(kb, train, by_id, teacher, options, report), options.keep)
        seconds["teacher"] = time.perf_counter() - t
        report(f"{len(labelled)} of {len(train)} training questions kept (the teacher rates their passage "
               f">= {options.keep})")
        if len(labelled) < 8:
            raise ConfigError(f"only {len(labelled)} training questions passed the teacher: use more chunks")
        pairs = [(q.question, c.text, s) for q, chunks, scores in labelled for c, s in zip(chunks, scores)]
        out_dir = _next_model_dir(kb.root)
        t = time.perf_counter()
        report(f"training a cross-encoder on {len(pairs)} scored pairs")
        train_student(resolve_model_path(kb.store.settings.embedder), pairs, out_dir, options, kb.config.device)
        seconds["training"] = time.perf_counter() - t

        t = time.perf_counter()
        student = CrossEncoderReranker(str(out_dir), device=kb.config.device)
        heldout = [Question(q.question, gold=gold_phrase(by_id[q.chunk_id].text)) for q in test]
        top = kb.config.retrieval.rerank_top
        scores = _measure(kb, {"first stage": None, "student": student, "teacher": teacher}, heldout, top)
        mine = _measure(kb, {"first stage": None, "student": student}, own, top) if own else None
        seconds["evaluation"] = time.perf_counter() - t
    finally:
        teacher.close()
    decide = mine or scores
    improved = decide["student"]["ndcg@10"] >= decide["first stage"]["ndcg@10"] + options.min_gain
    switched = options.force or (options.activate and improved)
    if switched:
        activate_reranker(kb.store.path, str(out_dir))
    result = RerankerResult(str(out_dir), len(labelled), len(test), len(pairs), scores["first stage"],
                            scores["student"], scores["teacher"], switched, seconds,
                            mine and mine["first stage"], mine and mine["student"])
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _next_model_dir(root: Path) -> Path:
    models = root / "models"
    models.mkdir(exist_ok=True)
    taken = [p.name.rsplit("-", 1)[1] for p in models.glob("reranker-*")]
    n = 1 + max((int(t) for t in taken if t.isdigit()), default=0)
    return models / f"reranker-{n}"
