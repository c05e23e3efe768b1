"""Domain adaptation of the embedder, entirely local.

1. questions for a sample of chunks, written by the local LLM (cached, resumable; ``rag.adapt.synthetic``),
   split into train and held-out *by source document*;
2. hard negatives mined with the current model (``mine_hard_negatives``, a relative margin below the
   positive's score guards against false negatives);
3. sentence-transformers training with ``MultipleNegativesRankingLoss`` and duplicate-free batches;
4. the store re-embedded into a new index version with the new model, the held-out questions (and the
   user's own questions, when given) evaluated before and after, and the new version activated only if
   it is better (or when forced): on the user's questions when there are some, since synthetic held-out
   questions can approve a model that real questions find worse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from indexes.chunk_store import DocumentRecord
from indexes.errors import ConfigError, StoreError, require
from indexes.files import cache_dir
from indexes.store import DocumentUpdate, Store, StoreSettings
from indexes.text import search_text
from indexes.versions import activate, finish_version, list_versions, next_version_name, remove_unfinished, version_path
from ingest.embed import SentenceTransformerEmbedder
from ingest.embed.cache import EmbeddingCache
from ingest.embed.models import known_model, resolve_model_path
from ingest.pipeline import model_key
from rag.adapt.margins import teacher_examples, train_margin_embedder
from rag.adapt.query_kinds import query_kinds
from rag.adapt.synthetic import gold_phrase, training_questions
from rag.evaluation import Question, evaluate, load_questions
from rag.retrieval import Retriever
from rag.retrieval.rerank import active_reranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneOptions:
    chunks: int = 500  # chunks to write questions for
    kinds: tuple[str, ...] = ("question",)  # synthetic query kinds (rag.adapt.query_kinds)
    llm: str = "qwen2.5-coder-0.5b-instruct"  # question writer (light preset: generation is the slow part), or "ict"
    generation_batch: int = 8
    epochs: int = 1
    max_steps: int = 36  # cap on training steps: about 13 minutes on 2 CPU cores at batch 32 (raise it on a GPU)
    batch_size: int = 32
    learning_rate: float = 3e-5
    max_seq_length: int = 256
    # < 1 keeps this share of the trained weights, the rest from the original (WiSE-FT): a guard for higher
    # learning rates
    merge: float = 1.0
    mini_batch: int | None = None  # set (e.g. 16) to train large batches with CachedMultipleNegativesRankingLoss
    matryoshka: tuple[int, ...] | None = None  # e.g. (384, 256, 128): vectors that still work when truncated
    freeze_embeddings: bool = True  # the vocabulary matrix is most of a multilingual model: faster, overfits less
    hard_negatives: int = 1  # per question, mined with the current model (0: in-batch negatives only)
    heldout: float = 0.2
    seed: int = 0
    activate: bool = False  # switch to the new version if nDCG@10 improved by at least min_gain
    questions: Path | None = None  # your own questions (rag eval format): when given, they decide the switch
    start_from: str | None = None
    min_gain: float = 0.005
    force: bool = False  # switch even if it did not
    progress: bool = True
    # margin: MarginMSE on the judge's scores (GPL), better on the real questions of all three benchmark corpora |
    # contrastive: MNRL on the questions, no judge, several times faster
    recipe: str = "margin"
    teacher: str = "llm"  # margin recipe: the judge, its candidates per question and the minutes it may take
    candidates: int = 5
    budget: float | None = 60.0


RECIPES = ("contrastive", "margin")


@dataclass(frozen=True)
class FinetuneResult:
    version: str
    model: str
    train_questions: int
    heldout_questions: int
    before: dict
    after: dict
    activated: bool
    seconds: dict = field(default_factory=dict)
    questions_before: dict | None = None  # on FinetuneOptions.questions, when given
    questions_after: dict | None = None
    mode: str = "hybrid"  # the retrieval mode evaluated (the store's configured one)

    def to_dict(self) -> dict:
        return asdict(self)


def reembed(root: Path, source: Store, embedder: SentenceTransformerEmbedder, version: str, note: str,
            progress: bool = True) -> Store:
    """Copy the chunks of ``source`` into a new version embedded with ``embedder`` (not activated).

    Vectors go through the embedding cache, so an interrupted run resumes where it stopped."""
    from tqdm.auto import tqdm

    target = version_path(root, version)
    if target.exists():
        shutil.rmtree(target)
    s = source.settings
    store = Store.create(
        target,
        StoreSettings(
            embedder=embedder.name, dim=embedder.dim, index=s.index, index_options=s.index_options, ingest=s.ingest
        ),
    )
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    key = model_key(embedder)
    docs = list(source.documents().values())
    batch: list[tuple[DocumentRecord, list]] = []
    with tqdm(
        total=source.chunks.count(), desc=f"re-embedding into {version}", unit="chunk", disable=not progress
    ) as bar:

        def flush() -> None:
            chunks = [c for _, cs in batch for c in cs]
            vectors, _ = cache.embed(key, [search_text(c.headings, c.text) for c in chunks], embedder.embed_documents)
            updates, row = [], 0
            for record, cs in batch:
                updates.append(DocumentUpdate(record, cs, vectors[row : row + len(cs)]))
                row += len(cs)
            store.commit(updates)
            bar.update(len(chunks))
            batch.clear()

        pending = 0
        for record in docs:
            chunks = source.chunks.chunks_of(record.source)
            batch.append((record, chunks))
            pending += len(chunks)
            if pending >= 1000:
                flush()
                pending = 0
        if batch:
            flush()
    cache.close()
    store.refresh_lexical()
    finish_version(target, note)
    return store


def start_model(root: Path, active: str, spec: str | None) -> str:
    """The embedder training starts from: ``spec`` (a version name stands for the embedder that built it), else
    the active one, which after an activation is itself fine-tuned: repeated runs build on each other."""
    if not spec:
        return active
    model = next((v.embedder for v in list_versions(root) if v.name == spec), spec)
    if not known_model(model):
        names = ", ".join(v.name for v in list_versions(root))
        raise ConfigError(
            f"cannot start from {spec!r}: name a version of this store ({names}), an embedder preset, "
            "a model folder or a hub id"
        )
    return model


def _check_options(options: FinetuneOptions, dim: int) -> None:
    """Bad settings fail before any slow work starts."""
    query_kinds(options.kinds)
    if options.hard_negatives < 0 or options.epochs < 1 or options.batch_size < 2 or options.learning_rate <= 0:
        raise ConfigError(
            "hard negatives must be 0 or more, epochs at least 1, batch size at least 2 and the learning rate above 0"
        )
    if options.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {options.recipe!r}: choose one of {', '.join(RECIPES)}")
    if not 0 < options.merge <= 1:
        raise ConfigError(f"merge {options.merge} must lie in (0, 1]: the share of the trained weights kept")
    if options.matryoshka and not all(0 < d <= dim for d in options.matryoshka):
        raise ConfigError(f"Matryoshka dimensions {options.matryoshka} must lie between 1 and the model's {dim}")


def train_embedder(base: str, pairs: list[tuple[str, ...]], out_dir: Path, options: FinetuneOptions, work: Path,
                   corpus: list[str] | None = None, device: str | None = None) -> None:
    """Train ``base`` on (question, passage, *negatives) tuples, all of one length, with
    MultipleNegativesRankingLoss and save it to ``out_dir``.

    With ``corpus`` and plain pairs, ``options.hard_negatives`` negatives per pair are mined from it with the base
    model, below its top two and at least 5% below the positive's score (a guard against unlabelled answers:
    measured, mining the very top ranks helped on the CTeX FAQ and hurt on the Python FAQ, whose answers
    overlap). Batches never hold the same text twice."""
    width = {len(p) for p in pairs}
    if len(width) != 1 or min(width) < 2:
        raise ValueError("training examples must all be (question, passage, *negatives) of one length")
    st = require("sentence_transformers", None, "sentence-transformers")
    require("datasets", "finetune", "datasets")  # missing: said before the model loads
    try:  # sentence-transformers >= 6 moved them
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers import losses
        from sentence_transformers.training_args import BatchSamplers

    model = st.SentenceTransformer(base, device=device)
    _check_options(
        options, (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    )
    model.max_seq_length = min(model.max_seq_length, options.max_seq_length)
    if options.freeze_embeddings:
        for module in model.modules():
            if hasattr(module, "word_embeddings"):
                module.word_embeddings.requires_grad_(False)
    qp, dp, data = _training_data(model, pairs, corpus, options)
    columns = {c: (qp if c == "anchor" else dp) for c in data.column_names}
    steps = max(1, min(options.max_steps, options.epochs * -(-len(data) // options.batch_size)))
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(work), max_steps=steps, per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=columns, save_strategy="no", report_to="none", logging_steps=5, seed=options.seed,
        disable_tqdm=not options.progress, use_cpu=device == "cpu")
    loss = _loss(losses, model, options)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()} if options.merge < 1.0 else None
    trainer = st.SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is for the result (--json)
        trainer.train()
    if original is not None:
        _interpolate(model, original, options.merge)
    model.max_seq_length = 512
    model.save(str(out_dir))


def _training_data(model, pairs: list[tuple[str, ...]], corpus: list[str] | None, options: FinetuneOptions):
    """The query and document prompts, and the pairs as a dataset with mined hard negatives where asked."""
    st = require("sentence_transformers", None, "sentence-transformers")
    datasets = require("datasets", "finetune", "datasets")
    width = {len(p) for p in pairs}
    prompts = model.prompts or {}
    qp, dp = prompts.get("query", ""), prompts.get("document", "")
    names = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, width.pop() - 1)]
    data = datasets.Dataset.from_dict({name: [p[i] for p in pairs] for i, name in enumerate(names)})
    if corpus and len(names) == 2 and options.hard_negatives > 0:
        data = st.util.mine_hard_negatives(
            data,
            model,
            corpus=corpus,
            range_min=2,
            range_max=30,
            relative_margin=0.05,
            num_negatives=options.hard_negatives,
            sampling_strategy="top",
            query_prompt=qp or None,
            corpus_prompt=dp or None,
            batch_size=32,
            verbose=False,
        )
    return qp, dp, data


def _loss(losses, model, options: FinetuneOptions):
    """MultipleNegativesRankingLoss, cached (GradCache) for a mini-batch and wrapped for Matryoshka dimensions."""
    if options.mini_batch:  # GradCache: the batch's in-batch negatives at the memory cost of a mini-batch
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=options.mini_batch)
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    if options.matryoshka:
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(options.matryoshka))
    return loss


def _interpolate(model, base: dict, weight: float) -> None:
    """``model`` := weight * model + (1 - weight) * base (a state dict), parameter by parameter (WiSE-FT)."""
    model.load_state_dict(
        {k: weight * v + (1 - weight) * base[k] if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )


def _compare(kb, new_store, new_embedder, test: list, by_id: dict, own: list | None):
    """nDCG and recall before and after, on the held-out synthetic questions and on the user's own (None without)."""
    heldout = [Question(q.question, gold=gold_phrase(by_id[q.chunk_id].text)) for q in test]
    # the retrieval users get (hybrid by default): a better dense side can still make it worse
    settings = kb.retriever.settings
    old = Retriever(kb.store, kb.embedder, settings)
    new = Retriever(new_store, new_embedder, settings)
    before = evaluate("before", old.search, heldout).metrics
    after = evaluate("after", new.search, heldout).metrics
    q_before = q_after = None
    if own:
        q_before = evaluate("before", old.search, own).metrics
        q_after = evaluate("after", new.search, own).metrics
    new_store.close()
    return before, after, q_before, q_after


def _train(kb, options: FinetuneOptions, base: str, questions: tuple, out_dir: Path, work: Path,
           report: Callable[[str], None]) -> None:
    """Train ``base`` on the training questions with ``options.recipe``, into ``out_dir``."""
    by_id, writer, train = questions
    if options.recipe == "margin":
        examples = teacher_examples(kb, options, train, by_id, report)
        report(f"training {base} on the judge's margins for {len(examples)} questions")
        train_margin_embedder(resolve_model_path(base), examples, out_dir, options, work / "trainer", kb.config.device)
        return

    def positive(q) -> str:
        c = by_id[q.chunk_id]
        text = c.text.replace(q.question, " ") if writer.copies_passage else c.text  # inverse cloze: query removed
        return search_text(c.headings, text)

    corpus = [text for _, text in kb.store.chunks.search_texts()] if options.hard_negatives else None
    pairs = list(dict.fromkeys((q.question, positive(q)) for q in train))  # a question written twice trains once
    report(f"training {base} on {len(pairs)} questions")
    train_embedder(resolve_model_path(base), pairs, out_dir, options, work / "trainer", corpus, kb.config.device)


def finetune_embedder(kb, options: FinetuneOptions = FinetuneOptions(),
                      report: Callable[[str], None] = lambda msg: log.info(msg)) -> FinetuneResult:
    require("datasets", "finetune", "datasets")
    if getattr(kb.store.chunks, "coordinates_writers", False):
        raise StoreError("index versions are not kept in a shared database yet: fine-tune the embedder on a store "
                         "directory, then copy it in with `rag share`")
    root: Path = kb.root
    own = load_questions(options.questions) if options.questions else None  # checked first: bad input fails fast
    _check_options(options, kb.embedder.dim)
    base = start_model(root, kb.store.settings.embedder, options.start_from)
    seconds: dict[str, float] = {}
    work = root / "finetune"
    work.mkdir(exist_ok=True)

    t = time.perf_counter()
    by_id, writer, train, test = training_questions(kb, options, work, report, min_train=16, min_test=5)
    seconds["questions"] = time.perf_counter() - t

    t = time.perf_counter()
    for name in remove_unfinished(root):
        report(f"removed version {name}: an earlier run was stopped while it built it")
    version = next_version_name(root)
    out_dir = root / "models" / f"{version}-embedder"

    _train(kb, options, base, (by_id, writer, train), out_dir, work, report)
    seconds["training"] = time.perf_counter() - t

    t = time.perf_counter()
    # one load: re-embedding, then evaluation
    new_embedder = SentenceTransformerEmbedder(str(out_dir), device=kb.config.device)
    note = f"embedder fine-tuned from {base} ({options.recipe} recipe)"
    new_store = reembed(root, kb.store, new_embedder, version, note, options.progress)
    seconds["reembed"] = time.perf_counter() - t
    t = time.perf_counter()
    # its torch-free query encoder now, not at a user's first question: a new version queries as fast as the old
    if new_embedder.prepare_queries():
        seconds["query_encoder"] = time.perf_counter() - t

    settings = kb.retriever.settings
    before, after, q_before, q_after = _compare(kb, new_store, new_embedder, test, by_id, own)
    decide_before, decide_after = (q_before, q_after) if own else (before, after)
    improved = decide_after["ndcg@10"] >= decide_before["ndcg@10"] + options.min_gain
    switched = options.force or (options.activate and improved)
    if switched:
        activate(root, version)
    result = FinetuneResult(version, str(out_dir), len(train), len(test), before, after, switched, seconds, q_before,
                            q_after, settings.mode)
    (work / f"{version}-result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def versions_table(root: Path) -> list[dict]:
    """Each index version: its embedder, its trained reranker (``rag finetune reranker``; None: none), and its note."""
    return [
        {
            "version": v.name,
            "active": v.active,
            "embedder": v.embedder,
            "dim": v.dim,
            "complete": v.complete,
            "reranker": active_reranker(v.path),
            "note": v.note if v.complete else "unfinished: interrupted while it was built; cannot be activated",
        }
        for v in list_versions(root)
    ]
