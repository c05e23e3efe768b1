"""First-stage query latency at scale: hybrid (BM25 + dense, RRF) over N synthetic chunks, this project
beside LangChain's EnsembleRetriever (BM25Retriever on rank_bm25 + FAISS), same chunks, same vectors, one run.

Chunk texts are 120 words drawn from a Zipf distribution over a 50,000-word vocabulary; vectors are
random unit vectors (a flat index costs the same whatever the content). The query embedding is done
once per query by the real default embedder on both sides and included in the times; no reranking, no LLM.

    pip install -e '.[bench]' rank_bm25
    python benchmarks/latency_bench.py [--chunks 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def synth_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    ranks = np.minimum(rng.zipf(1.3, size=(n, 120)) - 1, len(vocab) - 1)
    return [" ".join(vocab[row]) for row in ranks]


def percentile(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-langchain", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from indexes.chunk_store import DocumentRecord
    from indexes.store import DocumentUpdate
    from indexes.types import Chunk, make_chunk_id
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase

    texts = synth_texts(args.chunks)
    rng = np.random.default_rng(1)
    dim = 384
    vecs = rng.normal(size=(args.chunks, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    qrng = np.random.default_rng(2)
    queries = [
        " ".join(texts[i].split()[j : j + 6])
        for i, j in zip(qrng.integers(0, args.chunks, args.queries), qrng.integers(0, 100, args.queries))
    ]

    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.open(Path(tmp) / "store", Config(index=IndexConfig(gpu=False)))
        t = time.perf_counter()
        per_doc = 1000
        updates = []
        for d in range(0, args.chunks, per_doc):
            src = f"/synthetic/doc{d // per_doc}.txt"
            chunks = [
                Chunk(make_chunk_id(src, "h", i), src, texts[d + i], 0, len(texts[d + i]))
                for i in range(min(per_doc, args.chunks - d))
            ]
            updates.append(
                DocumentUpdate(DocumentRecord(src, "h", 0, len(chunks), "now"), chunks, vecs[d : d + len(chunks)])
            )
        kb.store.commit(updates)
        kb.store.refresh_lexical()
        build = time.perf_counter() - t
        kb.search("warm up", k=10)
        ours = []
        for q in queries:
            t = time.perf_counter()
            kb.search(q, k=10, mode="hybrid")
            ours.append(1000 * (time.perf_counter() - t))
        dense_only = []
        for q in queries[:50]:
            t = time.perf_counter()
            kb.search(q, k=10, mode="dense")
            dense_only.append(1000 * (time.perf_counter() - t))
        embed_ms = []
        for q in queries[:50]:
            t = time.perf_counter()
            kb.embedder.embed_query(q)
            embed_ms.append(1000 * (time.perf_counter() - t))
        print(f"{args.chunks} chunks, {args.queries} queries, k=10; store built in {build:.0f}s")
        print(f"{'system':44} {'median ms':>10} {'p95 ms':>8}")
        print(
            f"{'query embedding alone (e5-small, CPU)':44} {statistics.median(embed_ms):10.1f} "
            f"{percentile(embed_ms, 0.95):8.1f}"
        )
        print(
            f"{'rag dense (FAISS flat)':44} {statistics.median(dense_only):10.1f} {percentile(dense_only, 0.95):8.1f}"
        )
        print(
            f"{'rag hybrid (bm25s + FAISS flat, RRF)':44} {statistics.median(ours):10.1f} {percentile(ours, 0.95):8.1f}"
        )

        if not args.skip_langchain:
            from langchain_classic.retrievers import EnsembleRetriever
            from langchain_community.retrievers import BM25Retriever
            from langchain_community.vectorstores import FAISS
            from langchain_core.embeddings import Embeddings

            class Emb(Embeddings):  # the same model and prompts as ours, through LangChain's interface
                def embed_query(self, text):
                    return kb.embedder.embed_query(text).tolist()

                def embed_documents(self, texts):
                    raise RuntimeError("documents are pre-embedded")

            faiss_store = FAISS.from_embeddings(list(zip(texts, vecs.tolist())), Emb())
            bm25 = BM25Retriever.from_texts(texts, k=10)
            ensemble = EnsembleRetriever(
                retrievers=[bm25, faiss_store.as_retriever(search_kwargs={"k": 10})], weights=[0.5, 0.5]
            )
            theirs = []
            for q in queries[: min(len(queries), 30)]:
                t = time.perf_counter()
                ensemble.invoke(q)
                theirs.append(1000 * (time.perf_counter() - t))
            print(
                f"{'LangChain EnsembleRetriever (rank_bm25+FAISS)':44} {statistics.median(theirs):10.1f} "
                f"{percentile(theirs, 0.95):8.1f}"
            )
        kb.close()


if __name__ == "__main__":
    main()
