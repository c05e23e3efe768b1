"""The shared mode: a store in PostgreSQL with its vectors on a Milvus server, written by several processes at once.

Each test gets its own database in a real PostgreSQL (initdb, 127.0.0.1) beside a ``milvus-lite server``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from indexes.errors import ConfigError, StoreError
from rag.config import Config, IndexConfig, IngestConfig
from rag.knowledge_base import KnowledgeBase
from rag.retrieval import Filters
from tests.conftest import ROOT

pytest.importorskip("milvus_lite")

_WRITER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from tests.conftest import HashEmbedder
    from rag.config import Config, IndexConfig, IngestConfig
    from rag.knowledge_base import KnowledgeBase

    class Slow(HashEmbedder):
        def embed_documents(self, texts, progress=False):
            print("EMBEDDING", flush=True)
            time.sleep({pause})
            return super().embed_documents(texts)

    cfg = Config(db={db!r}, index=IndexConfig(backend="milvus", uri={uri!r}), ingest=IngestConfig(commit_every=1))
    kb = KnowledgeBase.open("team", cfg, embedder=Slow())
    report = kb.ingest({docs!r}, progress=False)
    print("REPORT " + json.dumps({{f.source: f.status for f in report.files}}), flush=True)
    kb.close()
    """
)


def _config(pg_url: str, milvus: str, commit_every: int = 2000) -> Config:
    return Config(db=pg_url, index=IndexConfig(backend="milvus", uri=milvus),
                  ingest=IngestConfig(commit_every=commit_every))


def _writer(pg_url: str, milvus: str, docs: list[Path], pause: float = 0.2) -> subprocess.Popen:
    script = _WRITER.format(root=str(ROOT), db=pg_url, uri=milvus, docs=[str(d) for d in docs], pause=pause)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _docs(folder: Path, numbers, version: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in numbers:
        path = folder / f"doc{i}.md"
        path.write_text(f"# Doc {i}\n\nRevision {version}: gearbox model G{i} needs oil grade {i * 7 + version}.\n")
        out.append(path)
    return out


def _consistent(kb: KnowledgeBase) -> set[int]:
    """Every committed chunk has its vector and no vector lacks its chunk; every document's chunks are all there."""
    store = kb.store
    chunk_ids = {i for i, _ in store.chunks.search_texts()}
    assert set(store.index.ids().tolist()) == chunk_ids
    assert sum(d.n_chunks for d in store.documents().values()) == len(chunk_ids)
    return chunk_ids


def test_a_shared_store_ingests_searches_and_reopens_from_another_process(pg_url, milvus_server, corpus,
                                                                           hash_embedder):
    cfg = _config(pg_url, milvus_server)
    kb = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder)
    report = kb.ingest([corpus], progress=False)
    assert report.count("added") == len(list(corpus.rglob("*.*")))
    assert kb.search("outdoor unit air filter", k=1)[0].chunk.source.endswith("aurora-manual.md")
    assert kb.store.lexical_ready and kb.info()["generation"] >= 1
    chunk_ids = _consistent(kb)
    kb.close()

    reader = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder, create=False, read_only=True)
    assert {i for i, _ in reader.store.chunks.search_texts()} == chunk_ids
    assert reader.search("outdoor unit air filter", k=1, mode="bm25")[0].chunk.source.endswith("aurora-manual.md")
    hits = reader.search("filter", k=3, filters=Filters(source="*aurora*"))
    assert hits and all(h.chunk.source.endswith("aurora-manual.md") for h in hits)
    reader.close()

    again = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder)
    assert again.ingest([corpus], progress=False).count("unchanged") == report.count("added")
    assert again.remove([str((corpus / "aurora-manual.md").resolve())]) == 1
    _consistent(again)
    collection = again.store.index.collection
    again.close()

    from pymilvus import MilvusClient

    from indexes.shared import store as shared

    shared.drop(pg_url, "manuals")  # what DELETE /collections/manuals does in the shared mode
    assert shared.names(pg_url) == []
    client = MilvusClient(milvus_server)
    assert not client.has_collection(collection)
    client.close()


def test_shared_mode_refuses_a_local_index_a_wrong_url_and_a_missing_store(pg_url, milvus_server, hash_embedder):
    with pytest.raises(ConfigError, match="--index milvus --uri"):
        KnowledgeBase.open("x", Config(db=pg_url), embedder=hash_embedder)
    with pytest.raises(StoreError, match="cannot reach the database at 127.0.0.1:1/"):
        KnowledgeBase.open("x", _config("postgresql://rag@127.0.0.1:1/nothing", milvus_server), embedder=hash_embedder)
    with pytest.raises(StoreError, match="postgresql://"):
        KnowledgeBase.open("x", _config("sqlite:///x.db", milvus_server), embedder=hash_embedder)
    with pytest.raises(StoreError, match="no store named 'x'"):
        KnowledgeBase.open("x", _config(pg_url, milvus_server), embedder=hash_embedder, create=False)


def test_two_writers_on_overlapping_folders_ingest_every_document_exactly_once(pg_url, milvus_server, tmp_path,
                                                                               hash_embedder):
    KnowledgeBase.open("team", _config(pg_url, milvus_server), embedder=hash_embedder).close()
    first = _docs(tmp_path / "docs", range(0, 30))
    second = _docs(tmp_path / "docs", range(15, 45))
    writers = [_writer(pg_url, milvus_server, first), _writer(pg_url, milvus_server, second)]
    reports = []
    for proc in writers:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:]
        reports.append(json.loads(out.split("REPORT ", 1)[1]))
    added = [s for r in reports for s, status in r.items() if status == "added"]
    assert sorted(added) == sorted({str(p.resolve()) for p in first + second})  # each one by one writer only
    assert all(sum(s in r for r in reports) == 2 for s in map(str, (p.resolve() for p in first if p in second)))
    kb = KnowledgeBase.open("team", _config(pg_url, milvus_server), embedder=hash_embedder)
    assert len(kb.store.documents()) == 45
    _consistent(kb)
    assert kb.search("gearbox model G44 oil grade", k=1)[0].chunk.source.endswith("doc44.md")
    kb.close()


def test_kill_minus_nine_of_a_shared_writer_at_random_moments_leaves_a_consistent_store(pg_url, milvus_server,
                                                                                        tmp_path, hash_embedder):
    folder = tmp_path / "docs"
    KnowledgeBase.open("team", _config(pg_url, milvus_server), embedder=hash_embedder).close()
    rng = random.Random(7)
    for trial in range(10):
        docs = _docs(folder, range(12), version=trial)  # every trial changes every file: adds and removals
        proc = _writer(pg_url, milvus_server, docs, pause=0.05)
        seen, wanted = 0, rng.randint(1, 8)
        for line in proc.stdout:
            seen += line.startswith("EMBEDDING")
            if seen >= wanted:
                time.sleep(rng.uniform(0.0, 0.12))  # anywhere: embedding, journaling, writing Milvus, committing
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
        kb = KnowledgeBase.open("team", _config(pg_url, milvus_server), embedder=hash_embedder)  # recovers
        _consistent(kb)
        kb.close()
    kb = KnowledgeBase.open("team", _config(pg_url, milvus_server), embedder=hash_embedder)
    report = kb.ingest([folder], progress=False)  # the next run finishes the job
    assert report.count("added") + report.count("updated") + report.count("unchanged") == 12
    assert all(d.content_hash for d in kb.store.documents().values()) and len(kb.store.documents()) == 12
    _consistent(kb)
    assert kb.search("gearbox model G5 oil grade 44", k=1)[0].chunk.text.count("Revision 9") == 1
    kb.close()


def test_rag_share_says_when_the_embedder_is_a_folder_on_this_machine(tmp_path):
    from rag.cli.share import local_model_note

    model = tmp_path / "kb" / "models" / "v2-embedder"
    model.mkdir(parents=True)
    note = local_model_note(str(model))
    assert note is not None and str(model.resolve()) in note and "same path" in note
    assert local_model_note("multilingual-e5-small") is None
    assert local_model_note("intfloat/multilingual-e5-small") is None


def test_rag_share_copies_a_store_directory_and_a_second_run_finishes_a_stopped_copy(pg_url, milvus_server, corpus,
                                                                                     tmp_path, hash_embedder, capsys):
    from rag.cli import main

    local = KnowledgeBase.open(tmp_path / "manuals", Config(), embedder=hash_embedder)
    local.ingest([corpus], progress=False)
    question = "How often should the air filter be cleaned?"
    expected = [(h.chunk.id, h.score) for h in local.search(question, k=5, mode="dense")]

    assert main(["share", "--store", str(tmp_path / "manuals"), "--db", pg_url, "--uri", milvus_server]) == 0
    assert f"copied {len(local.store.documents())} documents; 0 were there" in capsys.readouterr().err
    kb = KnowledgeBase.open("manuals", _config(pg_url, milvus_server), embedder=hash_embedder)
    assert kb.store.documents() == local.store.documents()
    assert _consistent(kb) == {i for i, _ in local.store.chunks.search_texts()}
    got = [(h.chunk.id, h.score) for h in kb.search(question, k=5, mode="dense")]
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(got, expected))
    assert kb.search(question, k=1, mode="bm25")[0].chunk.id == local.search(question, k=1, mode="bm25")[0].chunk.id
    one = next(iter(kb.store.documents()))
    kb.store.commit([], removed_sources=[one])  # as if the copy had stopped before that document
    kb.close()

    assert main(["share", "--store", str(tmp_path / "manuals"), "--db", pg_url, "--uri", milvus_server]) == 0
    assert f"copied 1 documents; {len(local.store.documents()) - 1} were there" in capsys.readouterr().err
    kb = KnowledgeBase.open("manuals", _config(pg_url, milvus_server), embedder=hash_embedder)
    assert kb.store.documents() == local.store.documents()
    _consistent(kb)
    kb.close()
    local.close()


def test_a_reader_reconnects_when_its_connection_is_cut_and_a_writer_gets_one_clear_error(pg_url, milvus_server,
                                                                                         corpus, hash_embedder):
    import psycopg

    from indexes.errors import DatabaseUnavailableError

    cfg = _config(pg_url, milvus_server)
    writer = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder)
    writer.ingest([corpus], progress=False)
    reader = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder, create=False, read_only=True)
    with psycopg.connect(pg_url, autocommit=True) as admin:  # as a database restart would
        for kb in (reader, writer):
            admin.execute("SELECT pg_terminate_backend(%s)", (kb.store.chunks.db.value("SELECT pg_backend_pid()"),))
    assert reader.search("outdoor unit air filter", k=1)[0].chunk.source.endswith("aurora-manual.md")
    with pytest.raises(DatabaseUnavailableError, match="lost the connection to the database at 127.0.0.1"):
        writer.store.chunks.count()  # its claims and journal were its connection's: no silent new identity
    reader.close()
    writer.close()


def test_a_document_another_writer_holds_is_neither_removed_nor_pruned(pg_url, milvus_server, corpus, hash_embedder):
    from indexes.errors import StoreBusyError

    cfg = _config(pg_url, milvus_server)
    first = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder)
    first.ingest([corpus], progress=False)
    second = KnowledgeBase.open("manuals", cfg, embedder=hash_embedder)  # another writer (its own connection)
    held = str((corpus / "aurora-manual.md").resolve())
    assert first.store.claim(held) and not second.store.claim(held)
    with pytest.raises(StoreBusyError, match="another writer is ingesting"):
        second.remove([held])
    (corpus / "aurora-manual.md").unlink()
    assert second.ingest([corpus], prune=True, progress=False).count("removed") == 0
    first.store.release([held])
    assert second.ingest([corpus], prune=True, progress=False).count("removed") == 1
    assert held not in second.store.documents()
    _consistent(second)
    first.close()
    second.close()
