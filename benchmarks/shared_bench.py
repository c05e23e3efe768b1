"""The shared mode (PostgreSQL + a Milvus server) beside the embedded default (a directory, SQLite, FAISS), one run.

Search: hybrid search latency p50/p95 over the set's questions, one client, and throughput with 4 client threads
on one knowledge base. Ingest on Ray into the shared store: the driver carrying every text and vector (as for a
store directory) against the actors writing to PostgreSQL and Milvus themselves. PostgreSQL, Milvus and Ray are
started here on 127.0.0.1 unless given.

    python benchmarks/fetch_data.py
    python benchmarks/shared_bench.py [--set python-faq] [--db postgresql://...] [--milvus http://HOST:PORT]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BIN = Path(sys.executable).parent


def _servers(stack: ExitStack, tmp: Path, args) -> tuple[str, str, str]:
    from tests.servers import free_port, postgres, server

    db, milvus = args.db, args.milvus
    if db is None:
        db = stack.enter_context(postgres(free_port()))
    if milvus is None:
        port = free_port()
        stack.enter_context(server([str(BIN / "milvus-lite"), "server", "--data-dir", str(tmp / "milvus"), "--host",
                                    "127.0.0.1", "--port", str(port)], port, tmp / "milvus.log"))
        milvus = f"http://127.0.0.1:{port}"
    port = free_port()
    stack.enter_context(server([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                                f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
                                f"--temp-dir={tmp / 'ray'}"], port, tmp / "ray.log",
                               {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}))
    return db, milvus, f"127.0.0.1:{port}"


def _fresh_cache(tmp: Path, label: str) -> None:
    """An empty embedding cache (the prepared models shared), so no run reuses another's vectors."""
    from indexes.files import cache_dir

    models = cache_dir() / "models"
    cache = tmp / "cache" / label
    cache.mkdir(parents=True)
    (cache / "models").symlink_to(models)
    os.environ["RAG_CACHE_DIR"] = str(cache)


def _search_row(label: str, kb, questions: list[str]) -> str:
    kb.search(questions[0], k=10)  # warm: the BM25 index of this generation, the query encoder
    times = []
    for q in questions:
        started = time.perf_counter()
        kb.search(q, k=10)
        times.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda q: kb.search(q, k=10), questions * 2))
    qps = 2 * len(questions) / (time.perf_counter() - started)
    p95 = statistics.quantiles(times, n=20)[-1]
    return f"| {label} | {statistics.median(times):.1f} | {p95:.1f} | {qps:.1f} |"


def _ingest_row(label: str, kb, folder: Path, address: str, direct: bool) -> str:
    from ingest.pipeline import IngestOptions
    from ingest.ray_runner import ingest_on_ray

    started = time.perf_counter()
    report = ingest_on_ray(kb.store, kb.embedder, [folder], IngestOptions(progress=False), address, direct=direct)
    seconds = time.perf_counter() - started
    chunks = kb.store.chunks.count()
    return (f"| {label} | {seconds:.1f} | {chunks} | {chunks / seconds:.1f} | {report.embedded} | "
            f"{report.driver_bytes / 1e6:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="python-faq")
    ap.add_argument("--db", help="a PostgreSQL URL (default: a throw-away cluster on 127.0.0.1)")
    ap.add_argument("--milvus", help="a Milvus server's URI (default: `milvus-lite server` on 127.0.0.1)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from rag.config import Config, IndexConfig
    from rag.evaluation import load_questions
    from rag.knowledge_base import KnowledgeBase

    folder = HERE / "data" / args.set
    if not folder.exists():
        raise SystemExit(f"{folder} is missing: run `python benchmarks/fetch_data.py` first")
    questions = [q.question for q in load_questions(HERE / "questions" / f"{args.set}.jsonl")]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db, milvus, ray_address = _servers(stack, tmp, args)
        shared = Config(db=db, index=IndexConfig(backend="milvus", uri=milvus))

        print(f"Search, {args.set}, {len(questions)} questions, hybrid, k=10 (one client; 4 threads for throughput)")
        print("| store | p50 ms | p95 ms | queries/s (4 threads) |\n|---|---|---|---|")
        _fresh_cache(tmp, "search")
        local = KnowledgeBase.open(tmp / "local", Config(index=IndexConfig(gpu=False)))
        local.ingest([folder], progress=False)
        print(_search_row("embedded default (SQLite + FAISS)", local, questions), flush=True)
        team = KnowledgeBase.open("search", shared, embedder=local.embedder)
        team.ingest([folder], progress=False)  # vectors from the cache: the same store, shared
        print(_search_row("shared (PostgreSQL + Milvus server)", team, questions), flush=True)
        team.close()

        print(f"\nIngest on Ray ({ray_address}), {args.set}, into a shared store, fresh embedding cache each")
        print("| path | seconds | chunks | chunks/s | embedded | MB the driver received |\n|---|---|---|---|---|---|")
        for label, direct in (("driver carries texts and vectors", False), ("actors write directly", True)):
            _fresh_cache(tmp, label.split()[0])
            kb = KnowledgeBase.open(f"ingest-{label.split()[0]}", shared, embedder=local.embedder)
            print(_ingest_row(label, kb, folder, ray_address, direct), flush=True)
            kb.close()
        local.close()
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
