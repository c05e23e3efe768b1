"""Incremental ingestion, atomic commits and bad input, with the fast hash embedder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from indexes.errors import StoreError
from rag.cli import main
from rag.config import Config, IndexConfig, apply_overrides
from rag.knowledge_base import KnowledgeBase
from rag.retrieval import Filters
from tests.conftest import ROOT
from tests.pdfgen import write_pdf

BACKENDS = ["faiss", "chroma", "milvus", "numpy", "chroma-server", "milvus-server"]
_NEEDS = {"chroma": "chromadb", "milvus": "milvus_lite"}


def _needs(backend: str) -> None:
    if backend.removesuffix("-server") in _NEEDS:
        pytest.importorskip(_NEEDS[backend.removesuffix("-server")])


def _kb(path, embedder, backend="faiss", uri=None):
    return KnowledgeBase.open(path, Config(index=IndexConfig(backend=backend, gpu=False, uri=uri)), embedder=embedder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reingest_skips_unchanged_replaces_changed_and_prunes(backend, corpus, tmp_path, hash_embedder, request):
    _needs(backend)
    uri = request.getfixturevalue(backend.replace("-", "_")) if backend.endswith("-server") else None
    kb = _kb(tmp_path / "store", hash_embedder, backend.removesuffix("-server"), uri)
    first = kb.ingest([corpus], progress=False)
    assert first.count("added") == 5 and not first.failed
    n_chunks = kb.store.chunks.count()
    assert len(kb.store.index) == n_chunks > 5

    again = kb.ingest([corpus], progress=False)
    assert again.count("unchanged") == 5 and again.embedded == 0 and again.from_cache == 0

    manual = corpus / "aurora-manual.md"
    old_ids = {c.id for c in kb.store.chunks.chunks_of(str(manual.resolve()))}
    manual.write_text(manual.read_text().replace("every three months", "every six weeks"))
    changed = kb.ingest([corpus], progress=False)
    assert changed.count("updated") == 1 and changed.count("unchanged") == 4
    new_chunks = kb.store.chunks.chunks_of(str(manual.resolve()))
    assert old_ids.isdisjoint(c.id for c in new_chunks)
    assert any("every six weeks" in c.text for c in new_chunks)
    assert not set(kb.store.index.ids().tolist()) & old_ids  # old vectors are gone from the backend too
    # unchanged chunk texts of the edited file came from the embedding cache
    assert changed.from_cache > 0 and changed.embedded < len(new_chunks)

    (corpus / "quick-start.txt").unlink()
    kb.ingest([corpus], progress=False)  # without --prune nothing is removed
    assert len(kb.store.documents()) == 5
    pruned = kb.ingest([corpus], prune=True, progress=False)
    assert pruned.count("removed") == 1 and len(kb.store.documents()) == 4
    assert len(kb.store.index) == kb.store.chunks.count()
    assert all("Factory reset" not in h.chunk.text for h in kb.search("factory reset wifi button", k=10))
    kb.close()


def test_a_new_chunking_version_rechunks_every_file_once_from_the_embedding_cache(corpus, tmp_path, hash_embedder,
                                                                                  monkeypatch):
    from ingest import chunking

    kb = _kb(tmp_path / "store", hash_embedder)
    kb.ingest([corpus], progress=False)
    n_chunks = kb.store.chunks.count()
    monkeypatch.setattr(chunking, "CHUNKING_VERSION", chunking.CHUNKING_VERSION + 1)
    upgraded = kb.ingest([corpus], progress=False)
    assert upgraded.count("updated") == 5 and upgraded.embedded == 0 and upgraded.from_cache == n_chunks
    assert kb.store.chunks.count() == len(kb.store.index) == n_chunks
    assert kb.ingest([corpus], progress=False).count("unchanged") == 5
    kb.close()


def test_bad_files_are_reported_and_the_rest_is_ingested(corpus, tmp_path, hash_embedder):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")
    (corpus / "empty.md").write_text("")
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e \x80\x81\xff\xfe".encode("latin-1"))
    write_pdf(corpus / "blank-page.pdf", [["A page with text about turbines."], []])
    kb = _kb(tmp_path / "store", hash_embedder)
    report = kb.ingest([corpus], progress=False)
    failed = {os.path.basename(f.source): f.reason for f in report.failed}
    assert set(failed) >= {"broken.pdf", "empty.md", "binary.txt"}
    assert "corrupt" in failed["broken.pdf"] and "empty" in failed["empty.md"] and "binary" in failed["binary.txt"]
    assert report.count("added") >= 6  # the five good files and the PDF with one blank page
    blank = next(f for f in report.files if f.source.endswith("blank-page.pdf"))
    assert any("page 2" in w and "no extractable text" in w for w in blank.warnings)

    # a file that was fine and is now corrupt keeps its last good chunks
    good = corpus / "release-notes.pdf"
    before = kb.store.chunks.chunks_of(str(good.resolve()))
    good.write_bytes(b"%PDF-1.4 truncated")
    report = kb.ingest([corpus], progress=False)
    assert any(f.source.endswith("release-notes.pdf") for f in report.failed)
    assert kb.store.chunks.chunks_of(str(good.resolve())) == before
    kb.close()


def test_pdf_pages_and_filters(corpus, tmp_path, hash_embedder):
    kb = _kb(tmp_path / "store", hash_embedder)
    kb.ingest([corpus], progress=False)
    hits = kb.search("smart meters P1 protocol", k=3)
    assert hits[0].chunk.source.endswith("release-notes.pdf") and hits[0].chunk.page == 2
    only_md = kb.search("smart meters P1 protocol", k=5, filters=Filters(source="*.md"))
    assert only_md and all(h.chunk.source.endswith(".md") for h in only_md)
    page1 = kb.search("smart meters", k=5, filters=Filters(source="*.pdf", page_max=1))
    assert page1 and all(h.chunk.page == 1 for h in page1)
    text = (corpus / "aurora-manual.md").read_text()
    for h in kb.search("error codes E07", k=5):
        if h.chunk.source.endswith("aurora-manual.md"):
            assert text[h.chunk.start : h.chunk.end] == h.chunk.text  # offsets are faithful to the source
    kb.close()


def test_chunks_store_their_page_range_and_a_store_from_before_page_ranges_and_metadata_opens(tmp_path):
    import sqlite3

    from indexes.chunk_store import ChunkStore
    from indexes.types import Chunk

    path = tmp_path / "chunks.sqlite"
    old = sqlite3.connect(path)  # the table as stores wrote it before chunks could cross a page break
    old.execute(
        "CREATE TABLE chunks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT "
        "NULL,"
        " start INTEGER NOT NULL, end INTEGER NOT NULL, page INTEGER, headings TEXT NOT NULL DEFAULT '[]')"
    )
    old.execute("INSERT INTO chunks VALUES (1, 'a.pdf', 0, 'old text', 0, 8, 1, '[]')")
    old.execute(
        "CREATE TABLE documents (source TEXT PRIMARY KEY, content_hash TEXT NOT NULL, size INTEGER NOT NULL,"
        " n_chunks INTEGER NOT NULL, ingested_at TEXT NOT NULL, warnings TEXT NOT NULL DEFAULT '[]')"
    )
    old.execute("INSERT INTO documents VALUES ('a.pdf', 'h', 8, 1, 'then', '[]')")
    old.commit()
    old.close()
    store = ChunkStore(path)
    assert store.get([1])[1] == Chunk(1, "a.pdf", "old text", 0, 8, 1, page_end=1)
    assert store.documents()["a.pdf"].metadata == {} and store.documents_of(["a.pdf", "b.pdf"])["a.pdf"].n_chunks == 1
    with store.transaction() as db:
        ChunkStore.insert_chunks(db, [(1, Chunk(2, "a.pdf", "runs on", 8, 15, 2, page_end=3))])
    assert store.get([2])[2].pages == "2-3"
    assert sorted(store.ids(page_min=3)) == [2] and sorted(store.ids(page_max=2)) == [1, 2]
    assert sorted(store.ids(page_min=2, page_max=2)) == [2] and sorted(store.ids(page_max=1)) == [1]
    store.close()


def test_opening_with_another_embedder_is_a_clear_error(corpus, tmp_path, hash_embedder):
    kb = _kb(tmp_path / "store", hash_embedder)
    kb.ingest([corpus], progress=False)
    kb.close()
    with pytest.raises(StoreError, match="built with the embedder 'test-hash'"):
        KnowledgeBase.open(tmp_path / "store", apply_overrides(Config(), ["embedder=all-minilm-l6-v2"]))


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from conftest import HashEmbedder
    from rag.config import Config, IndexConfig, IngestConfig
    from rag.knowledge_base import KnowledgeBase

    class Slow(HashEmbedder):
        def embed_documents(self, texts, progress=False):
            print("EMBEDDING", flush=True)
            time.sleep(0.3)
            return super().embed_documents(texts)

    cfg = Config(index=IndexConfig(backend={backend!r}, gpu=False), ingest=IngestConfig(commit_every=1))
    kb = KnowledgeBase.open({store!r}, cfg, embedder=Slow())
    kb.ingest([{docs!r}], progress=False)
    print("DONE", flush=True)
    """
)


@pytest.mark.parametrize("backend", ["faiss", "chroma", "milvus"])
def test_kill_minus_nine_during_ingest_leaves_a_working_store(backend, corpus, tmp_path, hash_embedder):
    _needs(backend)
    store = tmp_path / "store"
    kb = _kb(store, hash_embedder, backend)
    kb.ingest([corpus / "aurora-manual.md"], progress=False)
    committed = kb.store.chunks.count()
    kb.close()
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):
        (many / f"doc{i}.md").write_text(f"# Doc {i}\n\nUnique topic number {i} about gearbox model G{i}.\n")

    script = _KILL_SCRIPT.format(
        root=str(ROOT), tests=str(ROOT / "tests"), backend=backend, store=str(store), docs=str(many)
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("EMBEDDING")
        if seen >= 3:  # killed in the middle of the run, with some batches committed
            time.sleep(0.15)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    kb = _kb(store, hash_embedder, backend)
    docs = kb.store.documents()
    assert 1 < len(docs) < 41
    assert kb.store.chunks.count() >= committed
    assert set(kb.store.index.ids().tolist()) == {i for i, _ in kb.store.chunks.search_texts()}
    assert kb.search("outdoor unit air filter", k=1)[0].chunk.source.endswith("aurora-manual.md")
    report = kb.ingest([many], progress=False)  # the next run finishes the job
    assert report.count("added") + report.count("unchanged") == 40
    assert len(kb.store.documents()) == 41
    kb.close()


def test_embedding_cache_prunes_by_age_and_upgrades_an_old_cache(tmp_path, monkeypatch):
    import sqlite3
    import time

    from ingest.embed.cache import EmbeddingCache

    path = tmp_path / "embeddings.sqlite"
    db = sqlite3.connect(path)  # the layout before vectors had ages
    db.execute("CREATE TABLE vectors (model TEXT, hash BLOB, vector BLOB, PRIMARY KEY (model, hash))")
    db.execute("INSERT INTO vectors VALUES ('old-model', x'00', ?)", (np.ones(2, np.float32).tobytes(),))
    db.commit()
    db.close()

    def compute(texts):
        return np.ones((len(texts), 2))

    cache = EmbeddingCache(path)
    assert [(m, n) for m, n, _ in cache.models()] == [("old-model", 1)]
    assert cache.prune(1) == 0  # an upgraded cache's vectors start their age now
    clock = time.time()
    monkeypatch.setattr(time, "time", lambda: clock + 10 * 86400)
    cache.embed("m", ["a", "b"], compute)
    monkeypatch.setattr(time, "time", lambda: clock + 40 * 86400)
    assert cache.embed("m", ["a"], compute)[1] == 0  # a hit: "a" is used on day 40, "b" last on day 10
    assert cache.prune(20) == 2  # old-model (day 0) and "b"
    assert [(m, n) for m, n, _ in cache.models()] == [("m", 1)]
    assert cache.embed("m", ["a", "b"], compute)[1] == 1
    cache.close()


def test_cache_command_lists_and_prunes(tmp_path, capsys):
    from indexes.files import cache_dir
    from ingest.embed.cache import EmbeddingCache

    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    cache.embed("some-model", ["x", "y"], lambda texts: np.ones((len(texts), 3)))
    cache.close()
    assert main(["cache"]) == 0
    assert "2 vectors" in capsys.readouterr().out
    assert main(["cache", "--prune", "0"]) == 0
    assert "removed 2 vectors" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cache", "--prune", "soon"])
    assert "not a number of days" in capsys.readouterr().err


def test_output_cut_short_by_the_reader_is_not_an_error(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())  # as in `rag cache | head -0`
    assert main(["cache"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_milvus_file_held_by_another_process_and_a_misplaced_uri_are_clear_errors(corpus, tmp_path, hash_embedder):
    pytest.importorskip("milvus_lite")
    from indexes.errors import ConfigError

    kb = _kb(tmp_path / "store", hash_embedder, "milvus")
    kb.ingest([corpus / "aurora-manual.md"], progress=False)
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from indexes.store import Store\n"
        f"Store.open({str(tmp_path / 'store')!r}, read_only=True)\n"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and "open in another process" in other.stderr and "milvus-lite server" in other.stderr
    kb.close()
    with pytest.raises(ConfigError, match="--uri is for the chroma and milvus"):
        _kb(tmp_path / "numpy-store", hash_embedder, "numpy", uri="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="a Milvus URI is http"):
        _kb(tmp_path / "bad-uri", hash_embedder, "milvus", uri="milvus.example:19530")


@pytest.mark.parametrize("backend", ["chroma-server", "milvus-server"])
def test_a_second_store_cannot_take_over_another_stores_server_collection(backend, corpus, tmp_path, hash_embedder,
                                                                          request):
    _needs(backend)
    uri = request.getfixturevalue(backend.replace("-", "_"))
    config = Config(
        index=IndexConfig(backend=backend.removesuffix("-server"), uri=uri, collection=f"shared_{tmp_path.name[-8:]}")
    )
    first = KnowledgeBase.open(tmp_path / "first", config, embedder=hash_embedder)
    first.ingest([corpus], progress=False)
    with pytest.raises(StoreError, match="already exists"):
        KnowledgeBase.open(tmp_path / "second", config, embedder=hash_embedder)
    first.close()
    # its own store opens it, settings from store.json
    again = KnowledgeBase.open(tmp_path / "first", embedder=hash_embedder)
    assert len(again.store.index) == again.store.chunks.count() > 5
    again.close()
    moved = Config(index=IndexConfig(backend=backend.removesuffix("-server"), uri="http://127.0.0.1:1"))
    with pytest.raises(StoreError, match="keeps its vectors at http://127.0.0.1:"):
        KnowledgeBase.open(tmp_path / "first", moved, embedder=hash_embedder)
