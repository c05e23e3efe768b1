"""``python -m tests.page_server ROOT PORT``: a live server for the browser tests, on 127.0.0.1, with the test
embedder, the extractive LLM streamed a word at a time (so a page can be seen receiving tokens), and jobs run in
the server's process, each file stage held 0.3 s. A question containing "slowly" streams one word a second (to test the
stop button)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import uvicorn

from rag.answer.extractive import ExtractiveGenerator
from rag.serve.app import create_app
from rag.serve.settings import ServeSettings
from rag.serve.worker import run_job
from tests.conftest import HashEmbedder


class WordByWord(ExtractiveGenerator):
    def stream(self, messages, max_new_tokens=512):
        prompt = messages[-1]["content"]
        if "Context passages:" in prompt and "slowly" in prompt:
            for i in range(120):
                time.sleep(1.0)
                yield f"word{i} "
            return
        for piece in super().stream(messages, max_new_tokens):
            for word in piece.split(" "):
                time.sleep(0.04)
                yield word + " "


def main() -> None:
    root, port = Path(sys.argv[1]), int(sys.argv[2])
    emb = HashEmbedder()

    def runner(spec, emit):  # each stage lasts a moment, as with a real embedder, so a page can show it
        def slow(event):
            emit(event)
            time.sleep(0.3)

        return run_job(spec, slow, embedder=emb)

    app = create_app(
        ServeSettings(root=root), generator=WordByWord(), embedder_factory=lambda name: emb, runner=runner, warm=False
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
