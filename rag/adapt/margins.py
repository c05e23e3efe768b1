"""The embedder learns from the judge's scores (``rag finetune embedder --recipe margin``), as GPL does (Wang et al.,
NAACL 2022): for each training question, its first-stage candidates scored by the judge (the same cache as ``rag
finetune reranker``), the judge's favourite as the positive and the others as negatives, and a MarginMSE loss that
asks the embedder's similarity margins to follow the judge's. Soft margins, unlike the contrastive recipe's hard
labels, do not push away a candidate the judge also rates as an answer."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from indexes.errors import ConfigError, require
from indexes.text import search_text

SCALE = 20.0  # the embedder's cosine times this is compared with the judge's log-odds margins (as MNRL's scale)
CLIP = 8.0  # log-odds margins beyond this say no more
# Texts a training step encodes at most: a batch of 32 questions with 4 negatives each (160 passages) took 22 GB
# and was killed on a 24 GB machine (attention maps kept for the backward pass); 16 of them (80) trained.
MAX_TEXTS_PER_STEP = 64


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def teacher_examples(kb, options, train: list, by_id: dict, report: Callable[[str], None]) -> list[tuple]:
    """(question, positive, *negatives, margins) from the judge's scores of each training question's candidates:
    the positive is the candidate it rates highest; margins are its log-odds over each negative, clipped."""
    from rag.adapt.reranker import TeacherScores, _labelled, _teacher

    deadline = time.perf_counter() + 0.7 * 60 * options.budget if options.budget else None
    teacher = TeacherScores(kb.root / "finetune" / "teacher.sqlite", _teacher(kb, options.teacher))
    try:
        labelled = _labelled(kb, train, by_id, teacher, options, deadline, report)
    finally:
        teacher.close()
    examples = []
    for q, chunks, scores in labelled:
        order = sorted(range(len(chunks)), key=lambda i: -scores[i])
        texts = [search_text(chunks[i].headings, chunks[i].text) for i in order]
        best = _log_odds(scores[order[0]])
        margins = [min(CLIP, best - _log_odds(scores[i])) for i in order[1:]]
        examples.append((q.question, *texts, margins))
    if len(examples) < 8:
        raise ConfigError(f"only {len(examples)} questions were scored by the judge: use a larger --budget")
    return examples


def train_margin_embedder(base: str, examples: list[tuple], out_dir: Path, options, work: Path,
                          device: str | None = None) -> None:
    """Train ``base`` with MarginMSE on (question, positive, *negatives, margins) and save it to ``out_dir``."""
    st = require("sentence_transformers", None, "sentence-transformers")
    datasets = require("datasets", "finetune", "datasets")
    try:  # sentence-transformers >= 6 moved them
        from sentence_transformers.sentence_transformer import losses
    except ImportError:
        from sentence_transformers import losses
    from sentence_transformers.util import pairwise_cos_sim

    width = min(len(e) for e in examples) - 1  # question, positive, negatives (all cut to the shortest list)
    model = st.SentenceTransformer(base, device=device)
    model.max_seq_length = min(model.max_seq_length, options.max_seq_length)
    if options.freeze_embeddings:
        for module in model.modules():
            if hasattr(module, "word_embeddings"):
                module.word_embeddings.requires_grad_(False)
    names = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, width - 1)]
    columns = {name: [e[i] for e in examples] for i, name in enumerate(names)}
    columns["label"] = [list(e[-1][: width - 2]) for e in examples]
    data = datasets.Dataset.from_dict(columns)
    prompts = model.prompts or {}
    qp, dp = prompts.get("query", ""), prompts.get("document", "")
    batch = max(2, min(options.batch_size, MAX_TEXTS_PER_STEP // width))
    steps = max(1, min(options.max_steps, options.epochs * -(-len(data) // batch)))
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(work), max_steps=steps, per_device_train_batch_size=batch,
        learning_rate=options.learning_rate, warmup_steps=0.1,
        prompts={c: (qp if c == "anchor" else dp) for c in names}, save_strategy="no", report_to="none",
        logging_steps=5, seed=options.seed, disable_tqdm=not options.progress, use_cpu=device == "cpu")
    loss = losses.MarginMSELoss(model, similarity_fct=lambda a, b: SCALE * pairwise_cos_sim(a, b))
    trainer = st.SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is for the result (--json)
        trainer.train()
    model.max_seq_length = 512
    model.save(str(out_dir))
