"""Ingest throughput: this project beside the equivalent LangChain pipeline, same files, same model, one run.

LangChain side: a loader per file type (PyPDFLoader, BSHTMLLoader, TextLoader),
RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100), HuggingFaceEmbeddings,
FAISS.from_documents. Our side: ``rag ingest`` into a fresh FAISS store, then a second,
incremental run over the unchanged folder, once with the defaults (bf16 products on a CPU that has them, else
float32 on onnxruntime's fused export) and once on torch in float32. Each of our runs gets a fresh embedding cache,
so both sides embed everything.

    pip install -e '.[bench]'
    python benchmarks/ingest_bench.py FOLDER [--model multilingual-e5-small] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
MODELS = Path(os.environ.get("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag") / "models"


def run_ours(folder: Path, model: str, torch_fp32: bool = False) -> tuple[float, float, int, int]:
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        os.environ["RAG_CACHE_DIR"] = cache  # a fresh embedding cache: the first run embeds everything
        (Path(cache) / "models").symlink_to(MODELS)
        kb = KnowledgeBase.open(Path(tmp) / "store", Config(embedder=model, index=IndexConfig(gpu=False),
                                                            embedder_dtype="float32" if torch_fp32 else "auto"))
        if torch_fp32:
            kb.embedder._onnx = False  # never looked up: torch embeds
        kb.embedder.model  # load outside the timing, as on the LangChain side
        kb.embedder.on_onnxruntime()
        t = time.perf_counter()
        report = kb.ingest([folder], progress=False)
        first = time.perf_counter() - t
        t = time.perf_counter()
        kb.ingest([folder], progress=False)
        second = time.perf_counter() - t
        chunks = kb.store.chunks.count()
        kb.close()
    return first, second, chunks, len(report.files) - len(report.failed)


def run_langchain(folder: Path, model_path: str) -> tuple[float, int, int]:
    from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader, TextLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from ingest.loaders import walk

    emb = HuggingFaceEmbeddings(model_name=model_path, encode_kwargs={"normalize_embeddings": True})
    emb.embed_query("warm up")
    t = time.perf_counter()
    docs, ok = [], 0
    for path in walk([folder]):
        suffix = path.suffix.lower()
        loader = (
            PyPDFLoader(str(path))
            if suffix == ".pdf"
            else BSHTMLLoader(str(path), bs_kwargs={"features": "html.parser"})
            if suffix in (".html", ".htm")
            else TextLoader(str(path), autodetect_encoding=True)
        )
        try:
            docs.extend(loader.load())
            ok += 1
        except Exception:
            pass
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100).split_documents(docs)
    FAISS.from_documents(chunks, emb)
    return time.perf_counter() - t, len(chunks), ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default="multilingual-e5-small")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from ingest.embed import SentenceTransformerEmbedder
    from ingest.embed.models import inference_dtype, resolve_model_path

    model_path = resolve_model_path(args.model)
    size = sum(p.stat().st_size for p in args.folder.rglob("*") if p.is_file())
    runs: dict[str, list[float]] = {"ours": [], "fp32": [], "lc": []}
    for _ in range(args.repeat):  # alternated, so a slow spell of the machine hits both sides
        ours, again, n_ours, files_ours = run_ours(args.folder, args.model)
        runs["ours"].append(ours)
        runs["fp32"].append(run_ours(args.folder, args.model, torch_fp32=True)[0])
        lc, n_lc, files_lc = run_langchain(args.folder, model_path)
        runs["lc"].append(lc)
    ours, fp32, lc = (statistics.median(runs[k]) for k in ("ours", "fp32", "lc"))
    every = lambda k: ", ".join(f"{t:.1f}" for t in runs[k])  # noqa: E731
    print(
        f"corpus: {args.folder} ({size / 1e6:.1f} MB), model: {args.model}, {os.cpu_count()} CPU cores, "
        f"median of {args.repeat} alternated runs"
    )
    print(f"{'pipeline':36} {'files':>6} {'chunks':>7} {'seconds':>8} {'MB/s':>6} {'chunks/s':>9}  every run (s)")
    probe = SentenceTransformerEmbedder(args.model)
    engine = "onnxruntime, float32" if probe.on_onnxruntime() else "torch, " + inference_dtype("auto", "cpu")
    auto = f"rag ingest ({engine})"
    print(
        f"{auto:36} {files_ours:6d} {n_ours:7d} {ours:8.1f} {size / 1e6 / ours:6.2f} {n_ours / ours:9.1f}  "
        f"{every('ours')}"
    )
    print(
        f"{'rag ingest (torch, float32)':36} {files_ours:6d} {n_ours:7d} {fp32:8.1f} {size / 1e6 / fp32:6.2f} "
        f"{n_ours / fp32:9.1f}  {every('fp32')}"
    )
    print(f"{'rag ingest (unchanged, re-run)':36} {files_ours:6d} {0:7d} {again:8.1f}")
    print(
        f"{'LangChain (loader+splitter+HF+FAISS)':36} {files_lc:6d} {n_lc:7d} {lc:8.1f} {size / 1e6 / lc:6.2f} "
        f"{n_lc / lc:9.1f}  {every('lc')}"
    )
    print(f"rag ingest is {lc / ours:.2f}x the LangChain pipeline's speed ({lc / fp32:.2f}x on torch in float32)")


if __name__ == "__main__":
    main()
