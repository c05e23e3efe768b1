"""``rag finetune reranker``: the LLM judge's relevance scores, distilled into a student fast enough to be on.

The judge (``LlamaCppJudgeReranker``: P(yes) for "does this passage answer the question?") lifts nDCG@10 but costs
seconds a passage on a CPU, so it is off by default. This loop asks it once per corpus, offline:

1. questions for a sample of the store's chunks, written by the local LLM (cached, as the embedder's loop does);
2. each question's first-stage candidates (the store's hybrid top-k, its own passage included);
3. the teacher's score for every (question, passage) pair, cached in the store so a stopped run resumes; within
   ``budget`` minutes, questions in a shuffled order, so a short budget still spans the corpus;
4. a round-trip filter: a training question whose own passage the teacher does not rate is dropped;
5. the student, fit to the teacher's scores: by default a few weights over the embedder's passage and sentence
   similarities and the first-stage rank (``rag.retrieval.distilled``), fit listwise; or a cross-encoder;
6. questions held out by document measure the first stage alone and the student over its top N for a few N (the
   best N is kept), and the teacher when asked.

The default student is the feature one because on 2 CPU cores it is the one that learned: on the Python FAQ the
cross-encoder trained on 624 of the judge's pairs ranked at chance, while four weights fit to the same pairs kept
most of the judge's gain (docs/finetuning.md). The student is saved under the store's ``models/``; activated
(``--activate`` when it beats the first stage, or ``--force``), it reranks that store's searches and answers by
default (``retrieval.rerank = "auto"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from indexes.errors import ConfigError, require
from indexes.sqlite import connect, transaction
from ingest.embed.models import resolve_model_path
from rag.adapt.query_kinds import query_kinds
from rag.adapt.synthetic import gold_phrase, training_questions
from rag.evaluation import Question, evaluate, load_questions
from rag.retrieval import Retriever
from rag.retrieval.distilled import FEATURES, TOKEN_CHUNKS, DistilledReranker, StudentConfig
from rag.retrieval.rerank import CrossEncoderReranker, Reranker, activate_reranker, load_reranker

log = logging.getLogger(__name__)
STUDENTS = ("features", "cross-encoder")


@dataclass(frozen=True)
class RerankerOptions:
    chunks: int = 100  # chunks to write questions for
    kinds: tuple[str, ...] = ("question",)  # synthetic query kinds (rag.adapt.query_kinds)
    llm: str = "qwen2.5-coder-0.5b-instruct"  # writes the questions
    teacher: str = "llm"  # the judge: the store's answer LLM (llm), another local one (llm:MODEL)
    student: str = "features"  # features | cross-encoder
    candidates: int = 5  # first-stage passages the teacher scores per training question
    keep: float = 0.5  # round trip: a training question's own passage scores at least this with the teacher
    budget: float | None = 60.0  # minutes for the whole run: the teacher stops when its share is spent (None: no cap)
    tops: tuple[int, ...] = (5, 10, 20)  # first-stage depths the student is measured at; the best is kept
    compare_teacher: bool = False  # also measure the teacher over the top retrieval.rerank_top (slow: the judge again)
    heldout: float = 0.2
    seed: int = 0
    generation_batch: int = 8
    epochs: int = 2  # cross-encoder only, as are the next four
    batch_size: int = 16
    learning_rate: float = 3e-5
    max_length: int = 320
    questions: Path | None = None  # the user's own questions (rag eval format): when given, they decide the switch
    activate: bool = False  # switch to the student if it beats the first stage
    force: bool = False  # switch whatever the result
    min_gain: float = 0.0
    progress: bool = True

    def __post_init__(self) -> None:
        query_kinds(self.kinds)
        if self.student not in STUDENTS:
            raise ConfigError(f"unknown student {self.student!r}: choose one of {', '.join(STUDENTS)}")
        if self.budget is not None and self.budget <= 0:
            raise ConfigError(f"the budget is in minutes and must be positive, got {self.budget}")
        if not self.tops or min(self.tops) < 2:
            raise ConfigError(f"the student reranks at least 2 candidates; got tops {self.tops}")


@dataclass
class RerankerResult:
    model: str
    student_kind: str
    train_questions: int
    heldout_questions: int
    pairs: int
    top: int
    first_stage: dict
    student: dict
    teacher: dict | None
    activated: bool
    by_top: dict = field(default_factory=dict)  # N -> held-out nDCG@10 of the student over the first stage's top N
    labelled: int = 0  # training questions the teacher scored (within the budget), before the round trip
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

    def _known(self, keys: list[str]) -> dict[str, float]:
        return dict(self._db.execute(f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(keys))})",
                                     keys).fetchall()) if keys else {}

    def cached(self, question: str, passages: Sequence[str]) -> list[float] | None:
        """The scores if every pair is in the cache (the teacher is not asked), else None."""
        keys = [self._key(question, p) for p in passages]
        known = self._known(keys)
        return [known[k] for k in keys] if len(known) == len(set(keys)) else None

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        keys = [self._key(question, p) for p in passages]
        known = self._known(keys)
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


def _candidates(first: Retriever, question, by_id: dict, n: int) -> list:
    hits = [h.chunk for h in first.search(question.question, n)]
    if question.chunk_id not in {c.id for c in hits}:
        hits = hits[: n - 1] + [by_id[question.chunk_id]]
    return hits


def _labelled(kb, questions: list, by_id: dict, teacher: TeacherScores, options: RerankerOptions,
              deadline: float | None, report: Callable[[str], None]) -> list[tuple[object, list, list[float]]]:
    """(question, candidate chunks in first-stage order, teacher scores) for each question the teacher scored before
    ``deadline`` (a ``time.perf_counter`` value) or had scored in an earlier run (cached scores count after the
    deadline too: they cost nothing); the source chunk is always a candidate."""
    from tqdm.auto import tqdm

    first = Retriever(kb.store, kb.embedder, kb.retriever.settings)
    order = list(questions)
    random.Random(options.seed).shuffle(order)  # a budget cut keeps questions from the whole corpus
    out, step, late = [], max(1, len(order) // 10), 0
    asking = 0.0  # seconds spent asking the teacher (cached scores cost nothing)
    for i, q in enumerate(tqdm(order, desc="teacher", unit="question", disable=not options.progress)):
        if i and i % step == 0 and not options.progress:  # no bar (a log file): a line every tenth, with an ETA
            eta = asking / i * (len(order) - i)  # as many of the rest cached as so far
            if deadline is not None:
                eta = min(eta, max(0.0, deadline - time.perf_counter()))
            report(f"teacher: {i} of {len(order)} questions scored, about {eta / 60:.0f} min left")
        hits = _candidates(first, q, by_id, options.candidates)
        texts = [c.text for c in hits]
        known = teacher.cached(q.question, texts)
        if known is None:
            if deadline is not None and time.perf_counter() > deadline:  # spent: only what is cached, which is free
                late += 1
                continue
            t = time.perf_counter()
            known = teacher.scores(q.question, texts)
            asking += time.perf_counter() - t
        out.append((q, hits, known))
    if late:
        report(f"budget spent: {late} of {len(order)} training questions were left unscored (the others were scored "
               "or cached); a re-run with a larger --budget continues from the cache")
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


def fit_listwise(groups: Sequence[tuple[np.ndarray, Sequence[float]]], l2: float = 1e-3) -> np.ndarray:
    """Weights w so that softmax(X @ w) over each question's candidates matches the teacher's odds, p / (1 - p),
    normalised over the same candidates (a listwise KL fit; features standardised for the fit, weights returned for
    the raw features)."""
    import torch

    stacked = np.vstack([x - x.mean(0) for x, _ in groups])
    scale = stacked.std(0)
    scale[scale == 0] = 1.0
    xs = [torch.tensor(x / scale, dtype=torch.float64) for x, _ in groups]
    p = [torch.tensor(np.clip(np.asarray(t, dtype=np.float64), 1e-4, 1 - 1e-4)) for _, t in groups]
    targets = [torch.softmax(torch.logit(t), 0) for t in p]
    w = torch.zeros(stacked.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = sum(-(y * torch.log_softmax(x @ w, 0)).sum() for x, y in zip(xs, targets)) / len(xs)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy() / scale


def _train_features(kb, labelled: list, out_dir: Path, teacher: str, top: int, progress: bool) -> DistilledReranker:
    """Embed the store's passages and sentences once (kept with the student), fit the weights, save the student."""
    embedder_name = kb.embedder.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(int(i) for i in kb.store.chunks.ids())
    names = FEATURES if len(ids) <= TOKEN_CHUNKS else FEATURES[:4]  # token vectors for a big store: too much disk
    # saved first so that the folder loads while it is prepared
    StudentConfig(embedder_name, [0.0] * len(names), top, teacher, names).save(out_dir)
    student = DistilledReranker(out_dir, kb.embedder)
    for s in range(0, len(ids), 2000):
        texts = [c.text for c in kb.store.chunks.get(ids[s : s + 2000]).values()]
        student.prepare(texts, progress=progress, tokens="late_interaction" in names)
    groups = [(student.features(q.question, [c.text for c in chunks]), scores) for q, chunks, scores in labelled]
    student.save(StudentConfig(embedder_name, [float(w) for w in fit_listwise(groups)], top, teacher, names))
    return student


def _measure(kb, rerankers: dict[str, tuple[Reranker | None, int]], heldout: list[Question]) -> dict[str, dict]:
    """nDCG and recall of the store's first stage with each (reranker, over its top N); None: alone."""
    settings = kb.retriever.settings
    return {name: evaluate(name, Retriever(kb.store, kb.embedder, settings, r, top).search, heldout).metrics
            for name, (r, top) in rerankers.items()}


def _student(kb, labelled: list, out_dir: Path, teacher_name: str, options: RerankerOptions,
             report: Callable[[str], None]) -> Reranker:
    if options.student == "features":
        report(f"fitting the student's weights to the teacher's scores of {len(labelled)} questions")
        return _train_features(kb, labelled, out_dir, teacher_name, max(options.tops), options.progress)
    from rag.adapt.cross_encoder import train_cross_encoder

    pairs = [(q.question, c.text, s) for q, chunks, scores in labelled for c, s in zip(chunks, scores)]
    report(f"training a cross-encoder on {len(pairs)} scored pairs")
    train_cross_encoder(resolve_model_path(kb.store.settings.embedder), pairs, out_dir, options.epochs,
                        options.batch_size, options.learning_rate, options.max_length, options.seed,
                        options.progress, kb.config.device)
    return CrossEncoderReranker(str(out_dir), device=kb.config.device)


def distil_reranker(kb, options: RerankerOptions = RerankerOptions(),
                    report: Callable[[str], None] = lambda msg: log.info(msg)) -> RerankerResult:
    if options.student == "cross-encoder":
        require("datasets", "finetune", "datasets")
    own = load_questions(options.questions) if options.questions else None  # checked first: bad input fails fast
    start = time.perf_counter()
    deadline = start + 0.85 * 60 * options.budget if options.budget else None  # the rest: the student and its test
    work = kb.root / "finetune"
    work.mkdir(exist_ok=True)
    seconds: dict[str, float] = {}
    by_id, _, train, test = training_questions(kb, options, work, report, min_train=8, min_test=4)
    seconds["questions"] = time.perf_counter() - start

    t = time.perf_counter()
    teacher = TeacherScores(work / "teacher.sqlite", _teacher(kb, options.teacher))
    try:
        scored = _labelled(kb, train, by_id, teacher, options, deadline, report)
        labelled = _round_trip(scored, options.keep)
        seconds["teacher"] = time.perf_counter() - t
        report(f"{len(labelled)} of {len(scored)} scored training questions kept (the teacher rates their passage "
               f">= {options.keep})")
        if len(labelled) < 8:
            raise ConfigError(f"only {len(labelled)} training questions passed the teacher: use more chunks or a "
                              "larger --budget")
        out_dir = _next_model_dir(kb.root)
        t = time.perf_counter()
        student = _student(kb, labelled, out_dir, teacher.name, options, report)
        seconds["training"] = time.perf_counter() - t

        t = time.perf_counter()
        heldout = [Question(q.question, gold=gold_phrase(by_id[q.chunk_id].text)) for q in test]
        runs = {"first stage": (None, 1), **{f"student@{n}": (student, n) for n in options.tops}}
        scores = _measure(kb, runs, heldout)
        by_top = {n: scores[f"student@{n}"]["ndcg@10"] for n in options.tops}
        top = max(options.tops, key=lambda n: (by_top[n], -n))
        if isinstance(student, DistilledReranker):
            student.save(StudentConfig(**{**asdict(student.config), "top": top}))
        teacher_top = kb.config.retrieval.rerank_top  # where the judge is measured as a reranker (default 10)
        teacher_scores = _measure(kb, {"teacher": (teacher, teacher_top)}, heldout)["teacher"] \
            if options.compare_teacher else None
        mine = _measure(kb, {"first stage": (None, 1), "student": (student, top)}, own) if own else None
        seconds["evaluation"] = time.perf_counter() - t
    finally:
        teacher.close()
    decide = mine or {"first stage": scores["first stage"], "student": scores[f"student@{top}"]}
    improved = decide["student"]["ndcg@10"] >= decide["first stage"]["ndcg@10"] + options.min_gain
    switched = options.force or (options.activate and improved)
    if switched:
        activate_reranker(kb.store.path, str(out_dir))
    result = RerankerResult(str(out_dir), options.student, len(labelled), len(test),
                            sum(len(chunks) for _, chunks, _ in labelled), top, scores["first stage"],
                            scores[f"student@{top}"], teacher_scores, switched, by_top, len(scored), seconds,
                            mine and mine["first stage"], mine and mine["student"])
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _next_model_dir(root: Path) -> Path:
    models = root / "models"
    models.mkdir(exist_ok=True)
    taken = [p.name.rsplit("-", 1)[1] for p in models.glob("reranker-*")]
    n = 1 + max((int(t) for t in taken if t.isdigit()), default=0)
    return models / f"reranker-{n}"
