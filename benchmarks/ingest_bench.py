"""Ingest throughput: this project beside the equivalent LangChain pipeline, same files, same model, one run.

LangChain side: a loader per file type (PyPDFLoader, BSHTMLLoader, TextLoader),
RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100), HuggingFaceEmbeddings,
FAISS.from_documents. Our side: ``rag ingest`` into a fresh FAISS store, then a second,
incremental run over the unchanged folder. The embedding cache is disabled for the
first run (a fresh cache directory), so both sides embed everything.

    pip install -e '.[bench]'
    python benchmarks/ingest_bench.py FOLDER [--model multilingual-e5-small]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_ours(folder: Path, model: str) -> tuple[float, float, int, int]:
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase

    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.open(Path(tmp) / "store", Config(embedder=model, index=IndexConfig(gpu=False)))
        kb.embedder.model  # load outside the timing, as on the LangChain side
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
        loader = PyPDFLoader(str(path)) if suffix == ".pdf" else BSHTMLLoader(str(path), bs_kwargs={"features": "html.parser"}) if suffix in (".html", ".htm") else TextLoader(str(path), autodetect_encoding=True)
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
    args = ap.parse_args()
    cache = tempfile.mkdtemp()
    models = Path(os.environ.get("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag") / "models"
    from ingest.embedders import resolve_model_path

    model_path = resolve_model_path(args.model)
    os.environ["RAG_CACHE_DIR"] = cache  # a fresh embedding cache: the first run embeds everything
    (Path(cache) / "models").symlink_to(models)
    size = sum(p.stat().st_size for p in args.folder.rglob("*") if p.is_file())
    ours, again, n_ours, files_ours = run_ours(args.folder, args.model)
    lc, n_lc, files_lc = run_langchain(args.folder, model_path)
    print(f"corpus: {args.folder} ({size / 1e6:.1f} MB), model: {args.model}, {os.cpu_count()} CPU cores")
    print(f"{'pipeline':34} {'files':>6} {'chunks':>7} {'seconds':>8} {'MB/s':>6} {'chunks/s':>9}")
    print(f"{'rag ingest (first run)':34} {files_ours:6d} {n_ours:7d} {ours:8.1f} {size / 1e6 / ours:6.2f} {n_ours / ours:9.1f}")
    print(f"{'rag ingest (unchanged, re-run)':34} {files_ours:6d} {0:7d} {again:8.1f} {'':>6} {'':>9}")
    print(f"{'LangChain (loader+splitter+HF+FAISS)':34} {files_lc:6d} {n_lc:7d} {lc:8.1f} {size / 1e6 / lc:6.2f} {n_lc / lc:9.1f}")


if __name__ == "__main__":
    main()
