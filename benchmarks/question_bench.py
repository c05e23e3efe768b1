"""Question generation for fine-tuning: the same preset on llama.cpp (4-bit GGUF, one prompt at a time) and on
transformers (the bf16 copy, batches of 8), on the same sampled chunks of both development stores, one run each:
seconds per question and the share of questions the filter keeps (``rag.adapt.synthetic.clean``).

    python benchmarks/fetch_data.py && python benchmarks/retrieval_bench.py   # builds the stores
    python benchmarks/question_bench.py [--llm qwen2.5-coder-0.5b-instruct] [--chunks 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexes.store import Store  # noqa: E402
from rag.adapt.synthetic import LLMQuestionWriter, generate_questions, sample_chunks  # noqa: E402
from rag.llm import LlamaCppGenerator, TransformersGenerator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--chunks", type=int, default=8, help="chunks sampled per development store")
    args = ap.parse_args()
    chunks = []
    for name in ("python-faq", "ctex-faq"):
        store = Store.open(HERE / "data" / "stores" / name, read_only=True)
        chunks += sample_chunks(store, args.chunks, seed=1)
    print(f"{args.llm}, {len(chunks)} chunks (half English, half Chinese)")
    print(f"{'backend':34} {'questions':>9} {'kept':>6} {'s/question':>11} {'load s':>7}")
    for label, make in [("llama.cpp (GGUF, one at a time)", lambda: LlamaCppGenerator(args.llm)),
                        ("transformers (bf16 copy, batches of 8)", lambda: TransformersGenerator(args.llm))]:
        t = time.perf_counter()
        gen = make()
        gen.generate_batch([[{"role": "user", "content": "Say OK."}]], 4)  # loads the model, outside the timing
        load = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            qs = generate_questions(chunks, LLMQuestionWriter(gen), Path(tmp) / "q.jsonl", progress=False)
            secs = time.perf_counter() - t
        kept = sum(q.ok for q in qs)
        print(f"{label:34} {len(qs):9d} {kept / len(qs):6.2f} {secs / len(qs):11.2f} {load:7.1f}", flush=True)
        for q in qs[:: max(1, len(qs) // 4)]:
            print(f"    {'kept' if q.ok else 'dropped'}: {q.question[:90]}")
        del gen
    return 0


if __name__ == "__main__":
    sys.exit(main())
