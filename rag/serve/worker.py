"""One ingestion job, run in its own process: ``python -m rag.serve.worker`` reads the job as JSON on stdin and
prints one JSON line per file stage, then ``{"done": ...}``.

A separate, lower-priority process keeps questions fast while a job embeds (the scheduler favours the server),
isolates a crashing loader, and dies with the server (``PR_SET_PDEATHSIG``); the store's atomic commit makes a
killed job leave the last committed state, and the server re-runs unfinished jobs when it starts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ingest.embed import Embedder

Emit = Callable[[dict], None]


def run_job(spec: dict, emit: Emit, embedder: Embedder | None = None) -> dict:
    """Run one job: ``kind`` ingest (``files``: paths), reindex or delete (``sources``). Same code in or out of
    process."""
    from rag.config import config_from_dict
    from rag.knowledge_base import KnowledgeBase

    kb = KnowledgeBase.open(spec["store"], config_from_dict(spec["config"]), embedder=embedder, create=False)
    try:
        if spec["kind"] == "delete":
            for source in spec["sources"]:
                emit({"source": source, "stage": "parsing"})
            kb.remove(spec["sources"])
            for source in spec["sources"]:
                if Path(source).parent.name == "uploads":  # a file the server stored; others belong to the user
                    Path(source).unlink(missing_ok=True)
                emit({"source": source, "stage": "committed", "reason": "removed"})
            return {"removed": len(spec["sources"])}
        todo = []
        for path in (Path(p) for p in spec.get("files", spec.get("sources", []))):
            if path.is_file():
                todo.append(path)
            else:
                emit({"source": str(path), "stage": "failed", "reason": "the uploaded file is gone"})
        force = [str(p.resolve()) for p in todo] if spec["kind"] == "reindex" else []

        def progress(source: str, stage: str, reason: str) -> None:
            if stage != "committed":  # said below, once the whole run is searchable (its lexical index written too)
                emit({"source": source, "stage": stage, "reason": reason})

        report = kb.ingest(
            todo, progress=False, force=force, skip_duplicates=spec["kind"] == "ingest", on_file=progress
        )
        for f in report.files:
            if f.status in ("added", "updated"):
                emit({"source": f.source, "stage": "committed", "reason": f.status})
            elif f.status == "unchanged" and f.reason:  # an upload of content already indexed: not kept
                Path(f.source).unlink(missing_ok=True)
        return {"embedded": report.embedded, "from_cache": report.from_cache, "seconds": round(report.seconds, 2)}
    finally:
        kb.close()


def main() -> int:
    os.nice(10)
    spec = json.loads(sys.stdin.read())

    def emit(event: dict) -> None:
        print(json.dumps(event, ensure_ascii=False), flush=True)

    try:
        emit({"done": run_job(spec, emit)})
    except Exception as exc:  # reported to the server as the job's error, in one line
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
