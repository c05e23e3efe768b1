"""Generation speed of the default LLM preset: time to first token and decode tokens/s at about 500, 1,000 and
2,000 prompt tokens, and peak memory, for llama.cpp (the GGUF as it is) against transformers (the same GGUF
dequantized to bf16), on the same prompts, each backend in a process of its own so its memory is its own.

The prompts are real: development passages (``benchmarks/data``, from ``fetch_data.py``) around a question, cut to
the size. Results are cached per backend and size in ``benchmarks/data/generation.json``, so an interrupted run
goes on where it stopped.

    python benchmarks/generation_bench.py [--backends llama.cpp,transformers] [--sizes 500,1000,2000] [--new 48]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
CACHE = HERE / "data" / "generation.json"
LLM = "qwen2.5-coder-1.5b-instruct"


def prompt_of(size: int, count) -> list[dict]:
    """A grounded prompt of about ``size`` tokens: Python FAQ passages in the answer prompt, cut to fit."""
    from indexes.types import Chunk
    from ingest.loaders import load
    from rag.answer.prompts import answer_messages
    from rag.types import Hit

    texts = [load(p).text for p in sorted((HERE / "data" / "python-faq").glob("*.html"))]
    if not texts:
        raise SystemExit("no development data: run python benchmarks/fetch_data.py first")
    body = "\n\n".join(texts)
    question = "Why does Python use indentation for grouping statements?"
    lo, hi = 0, len(body)
    while hi - lo > 200:  # the passage length whose prompt has ``size`` tokens
        mid = (lo + hi) // 2
        hits = [Hit(Chunk(1, "faq.md", body[:mid], 0, mid), 1.0, 1)]
        n = sum(count(m["content"]) for m in answer_messages(question, hits))
        lo, hi = (mid, hi) if n < size else (lo, mid)
    return answer_messages(question, [Hit(Chunk(1, "faq.md", body[:lo], 0, lo), 1.0, 1)])


def measure(backend: str, sizes: list[int], new: int) -> None:
    """In a child process: print one JSON line per size."""
    from rag.llm import load_generator

    gen = load_generator(LLM, backend=backend)
    count = gen.count_tokens
    for size in sizes:
        messages = prompt_of(size, count)
        tokens = sum(count(m["content"]) for m in messages)
        if backend == "llama.cpp":
            gen._load().reset()  # no prefix cached from the size before
        start = time.perf_counter()
        first, parts = None, []
        for piece in gen.stream(messages, new):
            first = first or time.perf_counter() - start
            parts.append(piece)
        total = time.perf_counter() - start
        produced = count("".join(parts))
        print(
            json.dumps(
                {
                    "backend": backend,
                    "size": size,
                    "prompt_tokens": tokens,
                    "ttft_s": round(first or total, 2),
                    "total_s": round(total, 2),
                    "new_tokens": produced,
                    "decode_tok_s": round((produced - 1) / (total - first), 1) if first and produced > 1 else None,
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                }
            ),
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="llama.cpp,transformers")
    ap.add_argument("--sizes", default="500,1000,2000")
    ap.add_argument("--new", type=int, default=48, help="tokens generated per prompt (decode speed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        measure(args.child, sizes, args.new)
        return 0
    done = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for backend in args.backends.split(","):
        todo = [s for s in sizes if f"{backend}:{s}" not in done]
        if not todo:
            continue
        print(f"{backend}: sizes {todo} ...", file=sys.stderr, flush=True)
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", backend, "--sizes", ",".join(map(str, todo)), "--new", str(args.new)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in child.stdout:
            row = json.loads(line)
            done[f"{backend}:{row['size']}"] = row
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps(done, indent=1))
            print(
                f"  {backend} {row['prompt_tokens']} prompt tokens: first token {row['ttft_s']} s, "
                f"{row['decode_tok_s']} tokens/s",
                file=sys.stderr,
                flush=True,
            )
        child.wait()
    print(f"\n{LLM}, {args.new} new tokens per prompt, greedy")
    print(f"{'backend':13} {'prompt tok':>10} {'first token':>12} {'decode tok/s':>13} {'peak RSS':>9}")
    for backend in args.backends.split(","):
        for size in sizes:
            r = done.get(f"{backend}:{size}")
            if r:
                print(
                    f"{backend:13} {r['prompt_tokens']:>10} {r['ttft_s']:>11.1f}s "
                    f"{r['decode_tok_s'] or float('nan'):>13.1f} "
                    f"{r['peak_rss_mb']:>7} MB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
