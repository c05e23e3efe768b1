"""Cost of the LLM-judge reranker per question: the default 1.5B preset judging the top 10 hybrid passages of
development questions, on llama.cpp (P(yes) after one evaluation per passage on a shared question prefix) and on
transformers (bf16, batched forward passes), in one run, each backend in turn in this process.

    python benchmarks/fetch_data.py
    python benchmarks/judge_bench.py [--set python-faq] [--questions 3] [--top 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rag.config import Config, IndexConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.llm import LlamaCppGenerator, TransformersGenerator  # noqa: E402
from rag.retrieval.rerank import LlamaCppJudgeReranker, LLMJudgeReranker  # noqa: E402

LLM = "qwen2.5-coder-1.5b-instruct"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="python-faq")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    store = HERE / "data" / "stores" / args.set
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)), create=False)
    questions = [
        json.loads(line)["question"]
        for line in (HERE / "questions" / f"{args.set}.jsonl").read_text().splitlines()
        if line.strip()
    ][: args.questions]
    lists = [[h.chunk.text for h in kb.search(q, args.top)] for q in questions]
    kb.close()
    judges = {
        "llama.cpp": lambda: LlamaCppJudgeReranker(LlamaCppGenerator(LLM)),
        "transformers": lambda: LLMJudgeReranker(TransformersGenerator(LLM)),
    }
    rows = []
    for name, make in judges.items():
        judge = make()
        judge.scores("warm-up", ["load the model"])
        seconds = []
        for q, passages in zip(questions, lists):
            start = time.perf_counter()
            judge.scores(q, passages)
            seconds.append(time.perf_counter() - start)
            print(f"  {name}: {seconds[-1]:.1f} s for {len(passages)} passages", file=sys.stderr, flush=True)
        rows.append((name, statistics.median(seconds)))
        if hasattr(judge.generator, "close"):
            judge.generator.close()
    print(f"\n{LLM}, top {args.top} passages of {len(questions)} {args.set} questions")
    for name, median in rows:
        print(f"{name:13} median {median:6.1f} s per question ({median / args.top:.2f} s per passage)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
