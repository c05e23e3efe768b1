"""Past one machine, for real on this one: ingestion on a Ray cluster, vectors on Milvus and Chroma servers.

Every server listens on 127.0.0.1 (checked with ``ss -ltn`` when it starts and after each run) and is stopped by
its process group id. Ray drivers run as subprocesses (``tests/ray_driver.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ray")

from rag.config import Config, IndexConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from tests.conftest import ROOT, HashEmbedder  # noqa: E402
from tests.servers import assert_loopback_only, listeners  # noqa: E402

DRIVER = [sys.executable, str(ROOT / "tests" / "ray_driver.py")]


def _drive(store, docs, address, *extra: str) -> dict:
    before = listeners()
    run = subprocess.run([*DRIVER, str(store), str(docs), address, *extra], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_loopback_only(before)  # the driver's own listeners too
    return json.loads(run.stdout.strip().splitlines()[-1])


def _contents(kb: KnowledgeBase) -> dict[int, tuple]:
    out = {}
    for source in kb.store.documents():
        for c in kb.store.chunks.chunks_of(source):
            out[c.id] = (c.source, c.text, c.start, c.end, c.page, c.page_end, c.headings)
    return out


@pytest.mark.parametrize("backend", ["faiss", "milvus-server"])
def test_ray_ingest_builds_the_same_store_as_a_local_run_and_stays_incremental(backend, ray_cluster, corpus, tmp_path,
                                                                               request):
    extra = []
    if backend == "milvus-server":
        pytest.importorskip("milvus_lite")
        extra = ["--backend", "milvus", "--uri", request.getfixturevalue("milvus_server")]
    report = _drive(tmp_path / "ray", corpus, ray_cluster, *extra)
    assert sorted(status for _, status, _, _ in report["files"]) == ["added"] * 5

    local = KnowledgeBase.open(tmp_path / "local", Config(index=IndexConfig(gpu=False)), embedder=HashEmbedder())
    from_local = local.ingest([corpus], progress=False)
    assert from_local.embedded == 0 and from_local.from_cache == report["embedded"]  # the Ray run filled the cache
    distributed = KnowledgeBase.open(tmp_path / "ray", embedder=HashEmbedder())
    assert _contents(distributed) == _contents(local) and report["embedded"] == local.store.chunks.count()
    question = local.embedder.embed_query("How often should the air filter be cleaned?")[None]
    ours, theirs = distributed.store.search(question, 10)[0], local.store.search(question, 10)[0]
    assert [c.id for c, _ in ours] == [c.id for c, _ in theirs]
    assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)  # the same vectors, to float tolerance
    assert [h.chunk.id for h in distributed.search("保修期多久", k=3)] == [
        h.chunk.id for h in local.search("保修期多久", k=3)
    ]
    distributed.close()

    again = _drive(tmp_path / "ray", corpus, ray_cluster, *extra)
    assert again["embedded"] == 0 and {s for _, s, _, _ in again["files"]} == {"unchanged"}

    manual = corpus / "aurora-manual.md"
    manual.write_text(manual.read_text().replace("every three months", "every six weeks"))
    (corpus / "quick-start.txt").unlink()
    changed = _drive(tmp_path / "ray", corpus, ray_cluster, *extra, "--prune")
    statuses = {os.path.basename(src): status for src, status, _, _ in changed["files"]}
    assert statuses["aurora-manual.md"] == "updated" and statuses["quick-start.txt"] == "removed"
    assert list(statuses.values()).count("unchanged") == 3
    distributed = KnowledgeBase.open(tmp_path / "ray", embedder=HashEmbedder())
    new_chunks = distributed.store.chunks.chunks_of(str(manual.resolve()))
    assert changed["embedded"] == len(new_chunks)  # only the changed file's chunks went through the actors
    assert any("every six weeks" in c.text for c in new_chunks)
    assert set(distributed.store.index.ids().tolist()) == set(_contents(distributed))
    distributed.close()
    local.close()


def test_killing_the_ray_driver_leaves_a_consistent_store_that_the_next_run_finishes(ray_cluster, tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(30):
        (docs / f"doc{i}.md").write_text(f"# Doc {i}\n\nUnique topic number {i} about gearbox model G{i}.\n")
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [*DRIVER, str(store), str(docs), ray_cluster, "--slow", "--commit-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    committed = 0
    for line in proc.stdout:
        committed += line.startswith("COMMITTED")
        if committed >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    kb = KnowledgeBase.open(store, embedder=HashEmbedder())
    held = kb.store.documents()
    assert 3 <= len(held) < 30
    # every committed chunk has its vector, nothing more
    assert set(kb.store.index.ids().tolist()) == set(_contents(kb))
    kb.close()
    report = _drive(store, docs, ray_cluster)
    statuses = [status for _, status, _, _ in report["files"]]
    assert statuses.count("unchanged") == len(held) and statuses.count("added") == 30 - len(held)
    kb = KnowledgeBase.open(store, embedder=HashEmbedder())
    assert len(kb.store.documents()) == 30 and kb.search("gearbox model G17", k=1)[0].chunk.source.endswith("doc17.md")
    kb.close()


def test_rag_ingest_on_ray_into_milvus_then_search_matches_the_embedded_default(ray_cluster, milvus_server, corpus,
                                                                                tmp_path, e5):
    """The command a user runs, with the real default embedder: Ray for ingestion, a Milvus server for the vectors."""
    cli = [sys.executable, "-m", "rag.cli"]
    before = listeners()
    run = subprocess.run(
        [
            *cli,
            "ingest",
            str(corpus),
            "--store",
            str(tmp_path / "cluster"),
            "--ray",
            ray_cluster,
            "--index",
            "milvus",
            "--uri",
            milvus_server,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert_loopback_only(before)
    assert json.loads(run.stdout)["embedded"] == 14
    local = KnowledgeBase.open(tmp_path / "local", Config(index=IndexConfig(gpu=False)), embedder=e5)
    local.ingest([corpus], progress=False)
    cluster = KnowledgeBase.open(tmp_path / "cluster", embedder=e5)  # as `rag search --store` opens it
    assert cluster.info()["index"] == "milvus" and cluster.info()["chunks"] == local.info()["chunks"]
    for question in ("How often should the air filter be cleaned?", "保修期多久？", "What changed in release 2?"):
        ours, theirs = cluster.search(question, k=5), local.search(question, k=5)
        assert [h.chunk.id for h in ours] == [h.chunk.id for h in theirs]
        assert np.allclose([h.score for h in ours], [h.score for h in theirs], atol=1e-4)
    cluster.close()
    local.close()


def test_a_ray_run_into_a_shared_store_writes_from_the_actors_and_equals_a_local_run(ray_cluster, milvus_server,
                                                                                    pg_url, corpus, tmp_path):
    report = _drive("team", corpus, ray_cluster, "--backend", "milvus", "--uri", milvus_server, "--db", pg_url)
    assert sorted(status for _, status, _, _ in report["files"]) == ["added"] * 5
    shared = KnowledgeBase.open("team", Config(db=pg_url, index=IndexConfig(backend="milvus", uri=milvus_server)),
                                embedder=HashEmbedder())
    local = KnowledgeBase.open(tmp_path / "local", Config(index=IndexConfig(gpu=False)), embedder=HashEmbedder())
    from_local = local.ingest([corpus], progress=False)
    assert from_local.from_cache == 0  # no vector came back to the driver (whose cache would have kept it)
    assert _contents(shared) == _contents(local) and report["embedded"] == local.store.chunks.count()
    assert set(shared.store.index.ids().tolist()) == set(_contents(local))  # every vector, nothing more
    carried = sum(len(text.encode()) for _, text, *_ in _contents(local).values()) + 4 * 64 * len(_contents(local))
    assert 0 < report["driver_bytes"] < carried / 2  # ids and manifest fields, not the texts and vectors
    assert shared.store.chunks.db.value("SELECT COUNT(*) FROM rag_staged") == 0  # all moved in by the commits
    for text in ("How often should the air filter be cleaned?", "保修期多久？"):
        question = local.embedder.embed_query(text)[None]
        ours, theirs = shared.store.search(question, 10)[0], local.store.search(question, 10)[0]
        assert [c.id for c, _ in ours] == [c.id for c, _ in theirs]
        assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)
    again = _drive("team", corpus, ray_cluster, "--backend", "milvus", "--uri", milvus_server, "--db", pg_url)
    assert sorted(status for _, status, _, _ in again["files"]) == ["unchanged"] * 5
    shared.close()
    local.close()


def test_the_ray_plan_gives_an_actor_per_gpu_or_per_four_cpus_and_always_leaves_cpu_for_the_readers():
    from ingest.ray_runner import RayPlan

    assert RayPlan.for_cluster({"CPU": 2}) == RayPlan(1, 1.0, 0.0)  # a 2-core machine: one actor, a core for reads
    big = RayPlan.for_cluster({"CPU": 64})
    assert big.actors == 15 and big.actors * big.actor_cpus <= 63
    assert RayPlan.for_cluster({"CPU": 64, "GPU": 4}) == RayPlan(4, 1.0, 1.0)
    assert RayPlan.for_cluster({"CPU": 1}).actor_cpus < 1  # fractional: one core still leaves room for a read task


def test_a_ray_address_where_nothing_listens_fails_at_once_with_what_to_do(tmp_path, corpus, monkeypatch):
    from indexes.errors import ConfigError
    from tests.servers import free_port

    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what the runner sets, restored after the test
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=HashEmbedder())
    with pytest.raises(ConfigError, match="nothing answers at the Ray address 127.0.0.1:.*ray start --head"):
        kb.ingest([corpus], progress=False, ray=f"127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        kb.ingest([corpus], progress=False, ray="head-node")
    assert kb.store.documents() == {}  # nothing was written
    kb.close()
