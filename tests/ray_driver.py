"""A Ray ingest driver run in its own process by the tests (Ray's global state stays out of the test process).

    python tests/ray_driver.py STORE DOCS ADDRESS [--backend B] [--uri U] [--slow] [--commit-every N] [--prune]
        [--db URL]

Prints ``COMMITTED source`` as documents commit and, at the end, the report as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import Config, IndexConfig, IngestConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from tests.conftest import HashEmbedder, SlowHashEmbedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store"), ap.add_argument("docs"), ap.add_argument("address")
    ap.add_argument("--backend", default="faiss"), ap.add_argument("--uri")
    ap.add_argument("--slow", action="store_true"), ap.add_argument("--prune", action="store_true")
    ap.add_argument("--commit-every", type=int, default=2000)
    ap.add_argument("--db", help="a shared store: STORE is its name in this database")
    args = ap.parse_args()
    config = Config(
        index=IndexConfig(backend=args.backend, uri=args.uri, gpu=False),
        ingest=IngestConfig(commit_every=args.commit_every),
        db=args.db,
    )
    kb = KnowledgeBase.open(args.store, config, embedder=SlowHashEmbedder() if args.slow else HashEmbedder())

    def heard(source: str, stage: str, reason: str) -> None:
        if stage == "committed":
            print("COMMITTED", source, flush=True)

    report = kb.ingest([args.docs], prune=args.prune, progress=False, on_file=heard, ray=args.address)
    print(
        json.dumps(
            {"embedded": report.embedded, "driver_bytes": report.driver_bytes,
             "files": [[f.source, f.status, f.chunks, f.reason] for f in report.files]}
        ),
        flush=True,
    )
    kb.close()


if __name__ == "__main__":
    main()
