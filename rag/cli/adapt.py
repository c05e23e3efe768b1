"""``rag finetune embedder`` and ``rag finetune llm``: adapting the models to a store's documents, each command with
its own options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from indexes.errors import ConfigError
from rag.adapt.embedder import RECIPES, FinetuneOptions, finetune_embedder
from rag.adapt.llm import LLMFinetuneOptions, finetune_llm
from rag.adapt.query_kinds import query_kinds
from rag.adapt.reranker import STUDENTS, RerankerOptions, distil_reranker
from rag.cli.options import add_command, json_option, store_options

_QUESTION_LLM = "qwen2.5-coder-0.5b-instruct"


def register(sub) -> None:
    finetune = sub.add_parser("finetune", help="adapt the embedder or the LLM to this store's documents",
                              description="adapt the embedder or the LLM to this store's documents")
    kinds = finetune.add_subparsers(dest="what", required=True)
    _register_embedder(kinds)
    _register_reranker(kinds)

    sp = add_command(kinds, "llm", "train a LoRA adapter for answering from this store's passages", _cmd_llm)
    store_options(sp)
    sp.add_argument("--examples", type=Path, help="JSONL of question/answer(/gold); default: made from the corpus")
    sp.add_argument("--base", default=_QUESTION_LLM, help="the model the LoRA adapter is trained on")
    sp.add_argument("--max-examples", type=int, default=120, help="examples made from the corpus")
    sp.add_argument("--epochs", type=int, default=1, help="passes over the training data")
    json_option(sp)


def _register_embedder(kinds) -> None:
    sp = add_command(kinds, "embedder", "local questions about the chunks, training, re-embedding into a new index "
                     "version", _cmd_embedder)
    store_options(sp)
    sp.add_argument("--chunks", type=int, default=500, help="chunks to write training questions for (default 500)")
    sp.add_argument("--question-llm", default=_QUESTION_LLM, help="LLM that writes the questions")
    sp.add_argument("--query-kinds", type=_kinds, default=("question",), metavar="KINDS",
                    help="synthetic queries to train on: question (default), keywords, statement, comma-separated")
    sp.add_argument("--epochs", type=int, default=1, help="passes over the training data")
    sp.add_argument("--lr", type=float, default=3e-5, help="learning rate")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--from", dest="start_from", metavar="MODEL",
                    help="model to train, a version (e.g. v1, the original) or model; default the active one")
    sp.add_argument("--mini-batch", type=int, help="cached MNRL with this mini-batch, for batches larger than memory")
    sp.add_argument("--matryoshka", type=_dims, help="Matryoshka dimensions, e.g. 384,256,128")
    sp.add_argument("--merge", type=float, default=1.0,
                    help="share of the trained weights kept, the rest from the original (1 = plain fine-tuning)")
    sp.add_argument("--hard-negatives", type=int, default=1,
                    help="hard negatives per question, mined with the current model (0 = none)")
    sp.add_argument("--recipe", choices=RECIPES, default="margin",
                    help="margin (default: the LLM judge's scores of each question's candidates, as GPL; shares rag "
                         "finetune reranker's cache; up to --budget minutes) or contrastive (the questions as hard "
                         "labels: no judge, minutes)")
    sp.add_argument("--teacher", default="llm", help="margin recipe: the judge (llm, llm:MODEL or llm:URL)")
    sp.add_argument("--candidates", type=int, default=5, help="margin recipe: passages the judge scores per question")
    sp.add_argument("--budget", type=_minutes, default=60.0,
                    help="margin recipe: minutes for the run (default 60; 0: no limit); the judge stops when its "
                         "share is spent")
    sp.add_argument("--activate", action="store_true", help="switch to the new index version if nDCG@10 improved")
    sp.add_argument(
        "--questions", type=Path, help="your own questions (rag eval format); when given, they decide the switch"
    )
    sp.add_argument("--force", action="store_true", help="switch to the new version whatever the result")
    json_option(sp)



def _register_reranker(kinds) -> None:
    sp = add_command(kinds, "reranker", "distil the LLM judge's relevance scores into a fast student that reranks "
                     "this store's results", _cmd_reranker)
    store_options(sp)
    sp.add_argument("--chunks", type=int, default=100, help="chunks to write questions for (default 100)")
    sp.add_argument("--question-llm", default=_QUESTION_LLM, help="LLM that writes the questions")
    sp.add_argument("--query-kinds", type=_kinds, default=("question",), metavar="KINDS",
                    help="synthetic queries to train on: question (default), keywords, statement, comma-separated")
    sp.add_argument("--teacher", default="llm", help="the judge: llm (the store's LLM, default) or llm:MODEL")
    sp.add_argument("--student", choices=STUDENTS, default="features",
                    help="features (default: weights over the embedder's similarities) or cross-encoder")
    sp.add_argument("--candidates", type=int, default=5, help="first-stage passages the teacher scores per question")
    sp.add_argument("--budget", type=_minutes, default=60.0,
                    help="minutes for the whole run (default 60; 0: no limit); the teacher stops when its share is "
                         "spent, and a re-run reuses every score")
    sp.add_argument("--compare-teacher", action="store_true",
                    help="also measure the teacher on the held-out questions (the judge again: slow)")
    sp.add_argument("--epochs", type=int, default=2, help="passes over the scored pairs (cross-encoder)")
    sp.add_argument("--questions", type=Path,
                    help="your own questions (rag eval format); when given, they decide the switch")
    sp.add_argument("--activate", action="store_true", help="make it the store's reranker if it beats the first stage")
    sp.add_argument("--force", action="store_true", help="make it the store's reranker whatever the result")
    json_option(sp)


def _dims(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimensions separated by commas, e.g. 384,256,128 (got {text!r})") from None


def _minutes(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes (0 for no limit)")
    return value or None


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return query_kinds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_embedder(kb, args) -> int:
    options = FinetuneOptions(chunks=args.chunks, kinds=args.query_kinds, llm=args.question_llm, epochs=args.epochs,
                              batch_size=args.batch_size,
                              learning_rate=args.lr, merge=args.merge, mini_batch=args.mini_batch,
                              matryoshka=args.matryoshka, questions=args.questions, hard_negatives=args.hard_negatives,
                              activate=args.activate, force=args.force, start_from=args.start_from,
                              recipe=args.recipe, teacher=args.teacher, candidates=args.candidates,
                              budget=args.budget, progress=sys.stderr.isatty())
    result = finetune_embedder(kb, options, report=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"new index version {result.version}, model {result.model}")
    print(f"{result.train_questions} training questions, {result.heldout_questions} held out (by document)")
    metrics = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
    print(f"{result.mode + ' retrieval':26}" + "".join(f"{m:>11}" for m in metrics))
    rows = [("held-out synthetic, before", result.before), ("held-out synthetic, after", result.after)]
    if result.questions_before is not None:
        rows += [
            (f"{args.questions.name}, before", result.questions_before),
            (f"{args.questions.name}, after", result.questions_after),
        ]
    for name, m in rows:
        print(f"{name[:26]:26}" + "".join(f"{m[c]:>11.3f}" for c in metrics))
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    print(
        f"{'activated' if result.activated else 'not activated'}: `rag activate {result.version}` switches, `rag "
        "versions` lists"
    )
    if not result.activated and result.questions_before is None:
        print("only synthetic questions decided, and they can disagree with real ones (docs/finetuning.md): measure "
              f"a few of your own with `rag eval` under `rag activate {result.version}` and under the version before "
              "it, or give them to this command with --questions")
    return 0


def _cmd_reranker(kb, args) -> int:
    options = RerankerOptions(chunks=args.chunks, kinds=args.query_kinds, llm=args.question_llm, teacher=args.teacher,
                              student=args.student,
                              candidates=args.candidates, budget=args.budget, compare_teacher=args.compare_teacher,
                              epochs=args.epochs, questions=args.questions, activate=args.activate, force=args.force,
                              progress=sys.stderr.isatty())
    result = distil_reranker(kb, options, report=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"reranker {result.model} ({result.student_kind}): {result.train_questions} training questions "
          f"({result.pairs} scored pairs), {result.heldout_questions} held out (by document)")
    print("held-out nDCG@10 by first-stage depth N: "
          + ", ".join(f"N={n} {v:.3f}" for n, v in result.by_top.items()) + f"; kept N={result.top}")
    metrics = ("recall@1", "recall@5", "mrr@10", "ndcg@10", "median_ms")
    print(f"{'held-out questions':26}" + "".join(f"{m:>11}" for m in metrics))
    rows = [("first stage", result.first_stage), ("first stage + student", result.student)]
    if result.teacher is not None:
        rows.append(("first stage + teacher", result.teacher))
    if result.questions_student is not None:
        rows += [(f"{args.questions.name}: first stage", result.questions_first_stage),
                 (f"{args.questions.name}: + student", result.questions_student)]
    for name, m in rows:
        print(f"{name[:26]:26}" + "".join(f"{m[c]:>11.3f}" for c in metrics))
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    print("activated: searches and answers of this store rerank with it" if result.activated
          else "not activated: --force makes it the store's reranker")
    return 0


def _cmd_llm(kb, args) -> int:
    options = LLMFinetuneOptions(
        base=args.base, examples=args.max_examples, epochs=args.epochs, progress=sys.stderr.isatty()
    )
    result = finetune_llm(kb, options, args.examples, report=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        print(json.dumps(result.__dict__, ensure_ascii=False, indent=2))
        return 0
    print(f"adapter {result.adapter} ({result.train_examples} training examples, {result.heldout_examples} held out)")
    for name, m in (("before", result.before), ("after", result.after)):
        print(
            f"{name:7} answer contains gold {m['contains_gold']:.2f}, cites the right passage "
            f"{m['cites_gold_passage']:.2f}, "
            f"pastes the context back {m['echoes_context']:.2f}"
        )
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    print(f"use it with: rag ask QUESTION --store {args.store} --llm {result.adapter}")
    return 0
