"""What ``rag finetune reranker`` and ``rag finetune embedder`` give on each corpus, measured on questions never used
in training: nDCG@10 of hybrid retrieval alone, with the distilled student, with its teacher (the LLM judge), and on
the embedders trained by each recipe (contrastive and margin) with and without the student; the median latency each
reranker adds per question, and the wall time of each training step.

    python benchmarks/fetch_data.py
    python benchmarks/adapt_bench.py [--sets python-faq,ctex-faq,python-howto] [--budget 60] [--retrain] [--embedders]

Each corpus gets a store under ``benchmarks/data/stores/adapt-SET``, built on first use; the student is trained
there once (``--retrain`` trains a new one; the judge's scores are cached in the store, so that costs what is new).
The judge's own nDCG over the real questions is cached too (``finetune/teacher.sqlite``); its latency is measured
uncached on the first ``--judge-questions`` questions. ``--embedders`` adds an index version per recipe, trained once
from the original embedder on the student's questions and candidates (not activated), and its rows.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexes.store import Store  # noqa: E402
from indexes.versions import list_versions, version_path  # noqa: E402
from ingest.embed import SentenceTransformerEmbedder  # noqa: E402
from rag.adapt.embedder import RECIPES, FinetuneOptions, finetune_embedder  # noqa: E402
from rag.adapt.reranker import RerankerOptions, TeacherScores, _teacher, distil_reranker  # noqa: E402
from rag.config import Config, IndexConfig  # noqa: E402
from rag.evaluation import evaluate, load_questions  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.retrieval import Retriever  # noqa: E402
from rag.retrieval.distilled import DistilledReranker  # noqa: E402
from rag.retrieval.rerank import active_reranker  # noqa: E402

SETS = ("python-faq", "ctex-faq", "python-howto")


def _store(name: str) -> KnowledgeBase:
    path = HERE / "data" / "stores" / f"adapt-{name}"
    fresh = not path.exists()
    kb = KnowledgeBase.open(path, Config(index=IndexConfig(gpu=False)))
    if fresh:
        kb.ingest([HERE / "data" / name], progress=sys.stderr.isatty())
    return kb


def _student(kb, budget: float, retrain: bool) -> dict:
    """The result of the store's active student, or else the newest feature student (training one first when there is
    none, or when asked)."""
    done = sorted((kb.root / "models").glob("reranker-*/result.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    done = [p for p in done if json.loads(p.read_text()).get("student_kind") == "features"]
    active = active_reranker(kb.store.path)
    done.sort(key=lambda p: str(p.parent.resolve()) == active)  # the active one last
    if done and not retrain:
        return {**json.loads(done[-1].read_text()), "model": str(done[-1].parent)}  # where it is now
    options = RerankerOptions(budget=budget, progress=sys.stderr.isatty())
    return distil_reranker(kb, options, report=lambda m: print(f"  {m}", file=sys.stderr)).to_dict()


def _embedder_versions(kb) -> dict[str, tuple[str, dict]]:
    """recipe -> (index version, training seconds): the newest version each recipe made, trained when missing."""
    found: dict[str, str] = {}
    for v in list_versions(kb.root):
        if m := re.search(r"\((\w+) recipe\)", v.note):
            found[m.group(1)] = v.name
    out = {}
    for recipe in RECIPES:
        result = kb.root / "finetune" / f"{found.get(recipe)}-result.json"
        if recipe not in found or not result.exists():
            options = FinetuneOptions(chunks=100, candidates=5, budget=None, recipe=recipe, start_from="v1",
                                      progress=sys.stderr.isatty())
            found[recipe] = finetune_embedder(kb, options, report=lambda m: print(f"  {m}", file=sys.stderr)).version
            result = kb.root / "finetune" / f"{found[recipe]}-result.json"
        out[recipe] = (found[recipe], json.loads(result.read_text())["seconds"])
    return out


def _embedder_rows(kb, versions: dict, student, top: int, questions) -> dict[str, dict]:
    rows = {}
    for recipe, (version, _) in versions.items():
        info = next(v for v in list_versions(kb.root) if v.name == version)
        store = Store.open(version_path(kb.root, version), read_only=True)
        embedder = SentenceTransformerEmbedder(info.embedder)
        for label, reranker in ((f"{recipe} embedder", None), (f"{recipe} embedder + student", student)):
            search = Retriever(store, embedder, kb.retriever.settings, reranker, top).search
            rows[label] = evaluate(label, search, questions).metrics
        store.close()
    return rows


def _judge_seconds(kb, judge, questions, n: int) -> float:
    first = Retriever(kb.store, kb.embedder, kb.retriever.settings)
    seconds = []
    for q in questions:
        passages = [h.chunk.text for h in first.search(q.question, n)]
        t = time.perf_counter()
        judge.scores(q.question, passages)
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def bench(name: str, budget: float, retrain: bool, judge_questions: int, embedders: bool) -> dict:
    """``judge_questions`` 0: no judge row (its scores on the real questions may not be cached yet: slow)."""
    kb = _store(name)
    result = _student(kb, budget, retrain)
    versions = _embedder_versions(kb) if embedders else {}
    questions = load_questions(HERE / "questions" / f"{name}.jsonl")
    settings = kb.retriever.settings
    student = DistilledReranker(result["model"], kb.embedder)
    judge = _teacher(kb, "llm")
    cached = TeacherScores(kb.root / "finetune" / "teacher.sqlite", judge)
    top = result["top"]
    runs = {
        "hybrid": Retriever(kb.store, kb.embedder, settings),
        f"hybrid + student (N={top})": Retriever(kb.store, kb.embedder, settings, student, top),
    }
    if judge_questions:
        runs["hybrid + judge (N=10)"] = Retriever(kb.store, kb.embedder, settings, cached, 10)
    rows = {label: evaluate(label, r.search, questions).metrics for label, r in runs.items()}
    rows |= _embedder_rows(kb, versions, student, top, questions)
    judge_s = _judge_seconds(kb, judge, questions[:judge_questions], 10) if judge_questions else float("nan")
    cached.close()
    kb.close()
    base = rows["hybrid"]["median_ms"]
    return {"set": name, "questions": len(questions), "rows": rows, "top": top,
            "student_ms": rows[f"hybrid + student (N={top})"]["median_ms"] - base, "judge_s": judge_s,
            "training": result["seconds"], "pairs": result["pairs"], "train_questions": result["train_questions"],
            "gate": (result["student"]["ndcg@10"], result["first_stage"]["ndcg@10"]),
            "embedder_training": {recipe: seconds for recipe, (_, seconds) in versions.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--budget", type=float, default=60.0, help="minutes for each student's training")
    ap.add_argument("--retrain", action="store_true", help="train a new student even where one exists")
    ap.add_argument("--embedders", action="store_true",
                    help="also train (once) and measure an embedder per recipe, with and without the student")
    ap.add_argument("--judge-questions", type=int, default=3,
                    help="questions the judge's latency is measured on (0: leave the judge out)")
    args = ap.parse_args()
    out = [bench(name, args.budget, args.retrain, args.judge_questions, args.embedders)
           for name in args.sets.split(",")]
    for b in out:
        rows = b["rows"]
        hybrid = rows["hybrid"]["ndcg@10"]
        judge = rows["hybrid + judge (N=10)"]["ndcg@10"] if "hybrid + judge (N=10)" in rows else float("nan")
        student = rows[f"hybrid + student (N={b['top']})"]["ndcg@10"]
        share = (student - hybrid) / (judge - hybrid) if judge > hybrid else float("nan")
        print(f"\n{b['set']}: {b['questions']} questions never used in training; student from "
              f"{b['train_questions']} questions, {b['pairs']} judged pairs")
        print(f"{'':34}{'nDCG@10':>9}{'recall@1':>10}{'added per question':>20}")
        for label, m in rows.items():
            costs = {"hybrid": "", "hybrid + judge (N=10)": f"{b['judge_s']:.1f} s"}
            added = costs.get(label, f"{b['student_ms']:.0f} ms" if "student" in label else "")
            print(f"{label:34}{m['ndcg@10']:>9.3f}{m['recall@1']:>10.3f}{added:>20}")
        print(f"student keeps {share:.0%} of the judge's gain ({student - hybrid:+.3f} of {judge - hybrid:+.3f}); "
              "training: " + ", ".join(f"{k} {v:.0f} s" for k, v in b["training"].items()))
        mine, first = b["gate"]
        if mine < first:
            print(f"the held-out synthetic questions refuse this student ({mine:.3f} against the first stage's "
                  f"{first:.3f}): --activate would keep the first stage alone")
        for recipe, seconds in b["embedder_training"].items():
            print(f"{recipe} embedder: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
