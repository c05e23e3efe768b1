"""First token on a fresh llama.cpp context, as in a new process, with and without the prompt's opening saved on
disk (``rag/llm/prefix_cache.py``): the default answer prompts of the first development questions, each measured both
ways, alternated, in one process with the model loaded.

    python benchmarks/fetch_data.py && python benchmarks/answer_bench.py --prompts compressed   # builds the stores
    python benchmarks/prefix_bench.py [--sets python-faq,ctex-faq] [--limit 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    ap.add_argument("--limit", type=int, default=4)
    args = ap.parse_args()
    from indexes.files import cache_dir
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase

    times: dict[str, list[float]] = {"without": [], "with": []}
    for set_name in args.sets.split(","):
        kb = KnowledgeBase.open(HERE / "data" / "stores" / set_name, Config(index=IndexConfig(gpu=False)))
        questions = [
            json.loads(line)["question"]
            for line in (HERE / "questions" / f"{set_name}.jsonl").read_text().splitlines()
            if line.strip()
        ][: args.limit]
        for q in questions:
            messages = kb.answer_stream(q, kb.context(q, 5)).messages()
            for kind in times:
                if kind == "without":
                    shutil.rmtree(cache_dir() / "llama-prefix", ignore_errors=True)
                kb.generator.close()
                kb.generator.load()
                start = time.perf_counter()
                next(iter(kb.generator.stream(messages, 4)))
                times[kind].append(time.perf_counter() - start)
                print(
                    f"  {set_name} {kind} saved opening: first token {times[kind][-1]:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
        kb.close()
    for kind, ts in times.items():
        print(
            f"{kind} the saved opening: median first token {statistics.median(ts):.2f} s "
            f"({', '.join(f'{t:.1f}' for t in ts)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
