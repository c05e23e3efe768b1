"""Embedding with e5-small, every passage of the development stores: torch in float32, torch with bf16 products in the
linear layers (where the CPU has bf16 hardware), onnxruntime on the fused float32 export the embedder uses
(``ingest/embed/onnx.py``), and that export quantized to int8 (onnxruntime dynamic quantization, per channel, made
once into benchmarks/data/onnx/). Passages/s, dense nDCG@10 with the same float32 question vectors, and the lowest
cosine to torch float32's vector of a passage. One run each, in this process.

    python benchmarks/fetch_data.py && python benchmarks/answer_bench.py --prompts compressed   # builds the stores
    python benchmarks/embedder_bench.py
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexes.store import Store  # noqa: E402
from ingest.embed import SentenceTransformerEmbedder  # noqa: E402
from ingest.embed.models import native_bf16, resolve_model_path  # noqa: E402
from ingest.embed.onnx import OnnxEncoder, onnx_encoder  # noqa: E402
from rag.evaluation import evaluate, load_questions  # noqa: E402
from rag.types import Hit  # noqa: E402


def int8_encoder(folder: Path) -> OnnxEncoder:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = HERE / "data" / "onnx" / "e5-fused-int8.onnx"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(folder / "model.onnx"), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         # 1: float, for the fused ops' outputs
                         reduce_range=True, extra_options={"DefaultTensorType": 1})
    encoder = OnnxEncoder(folder)
    encoder._session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return encoder


def main() -> int:
    model_folder = resolve_model_path("multilingual-e5-small")
    fused = onnx_encoder(model_folder)
    if fused is None:
        raise SystemExit("the e5 export is not available: is onnxruntime installed?")
    variants = {}
    for name, dtype in (("torch float32", "float32"), ("torch, bf16 linear layers", "bfloat16")):
        if dtype == "bfloat16" and not native_bf16():
            continue  # emulated bf16 is slower than float32
        on_torch = SentenceTransformerEmbedder("multilingual-e5-small", device="cpu", dtype=dtype)
        on_torch._onnx = False  # never looked up: torch embeds
        on_torch.model
        on_torch._document_prompt = ""  # the texts below carry their prefix
        variants[name] = on_torch.embed_documents
    variants["onnxruntime float32, fused"] = fused.embed
    variants["onnxruntime int8, fused"] = int8_encoder(fused.folder).embed
    for set_name in ["python-faq", "ctex-faq"]:
        store = Store.open(HERE / "data" / "stores" / set_name, read_only=True)
        ids = [r[0] for r in sqlite3.connect(store.path / "chunks.sqlite").execute("SELECT id FROM chunks")]
        chunks = list(store.chunks.get(ids).values())
        texts = ["passage: " + c.text for c in chunks]
        questions = load_questions(HERE / "questions" / f"{set_name}.jsonl")
        question_vectors = fused.embed(["query: " + q.question for q in questions])
        row_of = {q.question: i for i, q in enumerate(questions)}
        reference = None
        for name, embed in variants.items():
            embed(texts[:4])  # warm up
            start = time.perf_counter()
            vectors = embed(texts)
            seconds = time.perf_counter() - start
            reference = vectors if reference is None else reference

            def search(question: str, k: int, vectors=vectors) -> list[Hit]:
                scores = vectors @ question_vectors[row_of[question]]
                return [Hit(chunks[i], float(scores[i]), r) for r, i in enumerate(np.argsort(-scores)[:k], 1)]

            ndcg = evaluate(name, search, questions).metrics["ndcg@10"]
            print(
                f"{set_name} {name:28} {len(texts)} passages {seconds:5.1f} s ({len(texts) / seconds:4.1f}/s), "
                f"dense nDCG@10 {ndcg:.3f}, lowest cosine to torch float32 "
                f"{np.min(np.sum(reference * vectors, 1)):.5f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
