"""Embedding with e5-small: the torch model in float32, the same model with bf16 products under autocast (the
default on a CPU with native bf16, ``embedder_dtype``), and, when onnxruntime is installed, an ONNX export quantized
to int8 (onnxruntime dynamic quantization), on the development stores' passages: passages/s, dense nDCG@10 and the
lowest cosine to the float32 vector of a passage. One run each, in this process.

sentence-transformers' own ONNX backend needs optimum-onnx, whose release here pins transformers below 5, so the
export is done with torch.onnx and onnxruntime directly (into benchmarks/data/onnx/, once).

    pip install onnx onnxruntime   # optional: the int8 rows
    python benchmarks/fetch_data.py && python benchmarks/retrieval_bench.py   # builds the stores
    python benchmarks/embedder_bench.py
"""
import sys, time
from pathlib import Path

import numpy as np
import torch
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from sentence_transformers import SentenceTransformer
from indexes.store import Store
from rag.types import Hit
from rag.evaluation import evaluate, load_questions

from ingest.embedders import _e5_path

folder = _e5_path()
st = SentenceTransformer(folder, device="cpu")
hf, tok = st[0].auto_model.eval(), st.tokenizer
out = HERE / "data" / "onnx"
sess = None
try:
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic, QuantType
except ImportError:
    print("onnxruntime is not installed: no int8 rows")
else:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "e5-int8.onnx").exists():
        enc = tok(["hello world"], return_tensors="pt")
        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__(); self.m = m
            def forward(self, ids, mask):
                return self.m(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.onnx.export(Wrap(hf), (enc["input_ids"], enc["attention_mask"]), str(out / "e5.onnx"), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                          "last_hidden_state": {0: "b", 1: "s"}}, opset_version=17, dynamo=False)
        quantize_dynamic(str(out / "e5.onnx"), str(out / "e5-int8.onnx"), weight_type=QuantType.QInt8)
    sess = ort.InferenceSession(str(out / "e5-int8.onnx"), providers=["CPUExecutionProvider"])

def onnx_embed(texts, bs=32):
    vecs = []
    order = np.argsort([len(t) for t in texts])
    for i in range(0, len(texts), bs):
        batch = [texts[j] for j in order[i:i+bs]]
        enc = tok(batch, padding=True, truncation=True, max_length=512, return_tensors="np")
        h = sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        v = (h * m).sum(1) / m.sum(1)
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    v = np.vstack(vecs); outv = np.empty_like(v); outv[order] = v
    return outv


from ingest.embedders import SentenceTransformerEmbedder

fp32, bf16 = SentenceTransformerEmbedder(folder, dtype="float32"), SentenceTransformerEmbedder(folder, dtype="bfloat16")
# The texts below carry their e5 prefixes already, so the embedders add none.
for e in (fp32, bf16):
    e.model
    e._document_prompt = ""
variants = [("torch fp32", fp32.embed_documents), ("torch bf16 autocast", bf16.embed_documents)]
if sess is not None:
    variants.append(("onnx int8", onnx_embed))
for set_name in ["python-faq", "ctex-faq"]:
    store = Store.open(HERE / "data" / "stores" / set_name, read_only=True)
    import sqlite3

    ids = [r[0] for r in sqlite3.connect(store.path / "chunks.sqlite").execute("SELECT id FROM chunks")]
    chunks = list(store.chunks.get(ids).values())
    texts = ["passage: " + c.text for c in chunks]
    res = {}
    for name, fn in variants:
        fn(texts[:8])
        t = time.perf_counter(); P = fn(texts); secs = time.perf_counter() - t
        qs = load_questions(HERE / "questions" / f"{set_name}.jsonl")
        def search(q, k, P=P, fn=fn):
            s = P @ fn(["query: " + q])[0]
            top = np.argsort(-s)[:k]
            return [Hit(chunks[i], float(s[i]), r) for r, i in enumerate(top, 1)]
        rep = evaluate(name, search, qs)
        res[name] = P
        print(f"{set_name} {name}: {len(texts)} passages in {secs:.1f} s ({len(texts)/secs:.0f}/s), dense nDCG@10 {rep.metrics['ndcg@10']:.3f}, recall@10 {rep.metrics['recall@10']:.3f}", flush=True)
    for name in res:
        if name != "torch fp32":
            print(f"{set_name} cosine(torch fp32, {name}) min {np.min(np.sum(res['torch fp32'] * res[name], 1)):.5f}")
