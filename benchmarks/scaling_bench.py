"""Index memory and query cost at 384 dimensions, measured here, for the sizing arithmetic in docs/scaling.md.

FAISS flat, HNSW (M=32, efSearch=64) and IVF-PQ (nlist=1024, 48 bytes a vector, nprobe=16) on N random unit
vectors: bytes per vector as serialised, build seconds, single-thread milliseconds per query, recall@10 against
flat. Each query is a stored vector plus noise, so "found its source" (the share of queries whose top 10 hold the vector
they were made from) is a meaningful recall on random data; recall@10 against flat is not (on random vectors the other
nine neighbours are ties, which no real corpus has), so it is not printed.

    python benchmarks/scaling_bench.py [--n 200000] [--queries 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    dim, rng, cores = 384, np.random.default_rng(0), faiss.omp_get_max_threads()
    data = rng.normal(size=(args.n, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    sources = rng.choice(args.n, args.queries, replace=False)
    queries = data[sources] + 0.02 * rng.normal(size=(args.queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def build(kind: str):
        if kind == "flat":
            return faiss.IndexFlatIP(dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            return index
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, 1024, 48, 8, faiss.METRIC_INNER_PRODUCT)
        return index

    print(f"N = {args.n:,} vectors of {dim} dims, {args.queries} queries, k = 10\n")
    print("| index | bytes/vector | build s (all cores) | ms/query (1 thread) | found its source |")
    print("|---|---|---|---|---|")
    for kind in ("flat", "hnsw", "ivfpq"):
        faiss.omp_set_num_threads(cores)
        index = build(kind)
        started = time.perf_counter()
        if kind == "ivfpq":
            index.train(data[:50_000])
        index.add(data)
        built = time.perf_counter() - started
        if kind == "hnsw":
            index.hnsw.efSearch = 64
        if kind == "ivfpq":
            index.nprobe = 16
        faiss.omp_set_num_threads(1)
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        per_query = (time.perf_counter() - started) / args.queries * 1000
        recall = np.mean([source in row for source, row in zip(sources, found)])
        size = faiss.serialize_index(index).nbytes / args.n
        print(f"| {kind} | {size:,.0f} | {built:.1f} | {per_query:.2f} | {recall:.3f} |", flush=True)


if __name__ == "__main__":
    main()
