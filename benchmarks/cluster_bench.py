"""The distributed path beside the embedded default, on the development sets, one run: ingest time and nDCG@10.

Embedded default: the local runner, FAISS in the store directory. Cluster: ``rag ingest --ray`` on a Ray cluster
and the vectors on a Milvus server (both started here on 127.0.0.1 unless ``--ray``/``--milvus`` are given).

    python benchmarks/fetch_data.py
    python benchmarks/cluster_bench.py [--sets python-faq,ctex-faq] [--ray HOST:PORT] [--milvus http://HOST:PORT]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(command: list[str], port: int, env: dict | None = None):
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    ap.add_argument("--ray", help="a Ray cluster's address (default: start a one-node cluster on 127.0.0.1)")
    ap.add_argument("--milvus", help="a Milvus server's URI (default: start `milvus-lite server` on 127.0.0.1)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from indexes.files import cache_dir
    from rag.cli import eval_retriever
    from rag.config import Config, IndexConfig
    from rag.evaluation import evaluate, load_questions
    from rag.knowledge_base import KnowledgeBase

    models = cache_dir() / "models"
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ray_address, milvus = args.ray, args.milvus
        if ray_address is None:
            port = _free_port()
            stack.enter_context(
                _server(
                    [
                        str(BIN / "ray"),
                        "start",
                        "--head",
                        "--block",
                        "--node-ip-address=127.0.0.1",
                        f"--port={port}",
                        "--include-dashboard=false",
                        "--disable-usage-stats",
                        f"--temp-dir={tmp / 'ray'}",
                    ],
                    port,
                    {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                )
            )
            ray_address = f"127.0.0.1:{port}"
        if milvus is None:
            port = _free_port()
            stack.enter_context(
                _server(
                    [
                        str(BIN / "milvus-lite"),
                        "server",
                        "--data-dir",
                        str(tmp / "milvus"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    port,
                )
            )
            milvus = f"http://127.0.0.1:{port}"
        print("| set | runner, vectors | ingest s | chunks | dense nDCG@10 | hybrid nDCG@10 | hybrid median ms |")
        print("|---|---|---|---|---|---|---|")
        for name in args.sets.split(","):
            folder = HERE / "data" / name
            if not folder.exists():
                raise SystemExit(f"{folder} is missing: run `python benchmarks/fetch_data.py` first")
            questions = load_questions(HERE / "questions" / f"{name}.jsonl")
            runs = {
                "local, FAISS (default)": (Config(index=IndexConfig(gpu=False)), None),
                f"Ray {ray_address}, Milvus server": (
                    Config(index=IndexConfig(backend="milvus", uri=milvus)),
                    ray_address,
                ),
            }
            for label, (config, address) in runs.items():
                # a fresh embedding cache, the prepared models shared
                cache = tmp / "cache" / f"{name}-{label.split(',')[0]}"
                cache.mkdir(parents=True)
                (cache / "models").symlink_to(models)
                os.environ["RAG_CACHE_DIR"] = str(cache)
                kb = KnowledgeBase.open(tmp / name / label.split(",")[0], config)
                kb.embedder.model  # load outside the timing
                started = time.perf_counter()
                kb.ingest([folder], progress=False, ray=address)
                seconds = time.perf_counter() - started
                scores = {}
                for mode in ("dense", "hybrid"):
                    retriever = eval_retriever(kb, mode)
                    scores[mode] = evaluate(mode, lambda q, k, r=retriever: r.search(q, k), questions)
                hybrid = scores["hybrid"]
                median = hybrid.metrics["median_ms"]
                print(
                    f"| {name} | {label} | {seconds:.1f} | {kb.store.chunks.count()} | "
                    f"{scores['dense'].metrics['ndcg@10']:.3f} "
                    f"| {hybrid.metrics['ndcg@10']:.3f} | {median:.0f} |",
                    flush=True,
                )
                kb.close()
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
