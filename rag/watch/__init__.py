"""Folder sync (``rag watch``): a store kept in step with folders.

At start (once the watcher listens) the store catches up with the folders through the incremental ingest (changed
files re-indexed, files that are gone removed), so a watcher killed at any moment loses nothing and doubles nothing:
the manifest, committed atomically, is the only state. Then file events (watchfiles: inotify, FSEvents,
ReadDirectoryChangesW; polling with ``poll``) are gathered, and a file is indexed once it has been quiet for
``quiet_s`` (a file still being written waits). Each round of changes is one ingest (one commit per ``commit_every``
chunks) plus one removal; a renamed file's passages come from the embedding cache, so nothing is embedded again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from indexes.errors import ConfigError, StoreBusyError, require
from ingest.loaders import wanted
from ingest.pipeline import IngestReport
from rag.knowledge_base import KnowledgeBase

__all__ = ["FolderWatch"]


class FolderWatch:
    def __init__(self, kb: KnowledgeBase, folders: Sequence[str | Path], quiet_s: float = 2.0, poll: bool = False,
                 report: Callable[[str], None] = lambda line: None) -> None:
        self.kb = kb
        self.folders = [Path(f).resolve() for f in folders]
        missing = [str(f) for f in self.folders if not f.is_dir()]
        if missing:
            raise ConfigError(f"not a folder: {', '.join(missing)}; rag watch takes folders (create them first)")
        self.quiet_s, self.poll, self.report = quiet_s, poll, report
        self._pending: set[Path] = set()
        self._blocked = False  # the last round found another writer
        self.rounds = 0  # rounds of changes applied (each one ingest and at most one removal)

    def catch_up(self) -> IngestReport:
        """Bring the store in step with the folders as they are now: what a restart after a crash runs first."""
        result = self.kb.ingest(self.folders, prune=True, progress=False)
        self.report(f"caught up with {len(self.folders)} folder(s): {_summary(result)}")
        return result

    def run(self, stop: threading.Event | None = None) -> None:
        """Catch up, then watch until ``stop`` is set (or Ctrl-C), applying each quiet round of changes. The catch-up
        runs once the watcher is listening, so a change made meanwhile is not missed."""
        require("watchfiles", "watch")
        logging.getLogger("watchfiles.main").setLevel(logging.ERROR)  # its Ctrl-C notice: we say "stopped"
        poll, how = self._how()
        try:
            try:
                self._watch(stop, poll, how)
            except OSError as exc:  # no file events here (e.g. the inotify watch limit): poll instead
                if poll:
                    raise
                self._watch(stop, True, f"polling every 0.5 s, as file events failed here ({exc})")
        except KeyboardInterrupt:  # Ctrl-C while a round was applied, not while waiting: commits are atomic
            self.report("stopped during a round: what it committed stays, the next start catches up the rest")
            return
        self.report("stopped" + (f"; {len(self._pending)} change(s) not yet quiet are left for the next start"
                                 if self._pending else ""))

    def _how(self) -> tuple[bool, str]:
        """Whether to poll, and why: asked to, or a folder on a network file system (changes made by other machines
        send no events there)."""
        if self.poll:
            return True, "polling every 0.5 s (--poll)"
        remote = [f"{f} ({kind})" for f in self.folders if (kind := network_fs(f))]
        if remote:
            return True, f"polling every 0.5 s, as {', '.join(remote)} is on a network file system"
        return False, "file events (--poll to poll instead)"

    def _watch(self, stop: threading.Event | None, poll: bool, how: str) -> None:
        import watchfiles

        live = False
        for changes in watchfiles.watch(*self.folders, stop_event=stop, force_polling=poll, poll_delay_ms=500,
                                        rust_timeout=max(100, int(self.quiet_s * 500)), yield_on_timeout=True,
                                        debounce=1600, raise_interrupt=False):
            if not live:
                live = True
                self.catch_up()
                self.report(f"watching {', '.join(map(str, self.folders))} with {how}; a file is indexed after "
                            f"{self.quiet_s:g} s without changes")
            self._pending.update(Path(p) for _, p in changes)
            self.settle()

    def settle(self, now: float | None = None) -> None:
        """Apply the pending changes whose files have been quiet for ``quiet_s``; the others wait for a later call."""
        if not self._pending:
            return
        now = time.time() if now is None else now
        ready = {p for p in self._pending if not _busy(p, now, self.quiet_s)}
        if ready:
            self._pending -= ready
            self.apply(ready)

    def apply(self, paths: set[Path]) -> None:
        """One round: index what exists (files, or folders that appeared), then drop what the store holds under
        paths that are gone."""
        include, exclude = self.kb.config.ingest.include, self.kb.config.ingest.exclude
        known = self.kb.store.documents()
        present = sorted(p for p in paths if (p.is_dir() and self._new_folder(p, known))
                         or (p.is_file() and self._wanted(p, include, exclude)))
        started = time.perf_counter()
        try:
            result = self.kb.ingest(present, progress=False) if present else None
            gone = [p for p in paths if not p.exists()]
            removed = self._remove_under(gone) if gone else 0
        except StoreBusyError:
            self._pending |= paths  # another writer (an ingest, an upload): this round waits for a later call
            if not self._blocked:
                self.report(f"{time.strftime('%H:%M:%S')} another process is writing to the store; waiting for it")
            self._blocked = True
            return
        self._blocked = False
        if result is None and not removed:
            return
        self.rounds += 1
        done = _summary(result) if result is not None else "nothing to index"
        self.report(f"{time.strftime('%H:%M:%S')} {done}; {removed} removed ({time.perf_counter() - started:.1f} s)")
        for f in result.failed if result is not None else ():
            self.report(f"  failed: {f.source}: {f.reason}")

    def _wanted(self, path: Path, include, exclude) -> bool:
        root = next((f for f in self.folders if f in path.parents), None)
        return root is not None and wanted(path.relative_to(root), include, exclude)

    def _new_folder(self, path: Path, known) -> bool:
        """A folder that appeared (made, moved or renamed in): none of its files is indexed yet. A known folder's
        event (polling reports folders whose listing changed) needs no walk: its files have their own events."""
        return path not in self.folders and not any(path in Path(s).parents for s in known)

    def _remove_under(self, gone: list[Path]) -> int:
        """Remove the indexed sources that are, or are under, a path that no longer exists (a deleted folder)."""
        sources = [s for s in self.kb.store.documents()
                   if any(Path(s) == g or g in Path(s).parents for g in gone) and not Path(s).exists()]
        return self.kb.remove(sources) if sources else 0


NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "fuse.sshfs", "fuse.rclone",
              "davfs", "fuse.davfs2")


def network_fs(path: Path, mounts: str | None = None) -> str | None:
    """The type of the network file system ``path`` is on (from ``/proc/mounts``, or ``mounts``), or None."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None  # not Linux: FSEvents and ReadDirectoryChangesW report local folders; --poll for the rest
    best, kind = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind if kind in NETWORK_FS else None


def _busy(path: Path, now: float, quiet_s: float) -> bool:
    try:
        return now - path.stat().st_mtime < quiet_s
    except OSError:
        return False  # gone: nothing to wait for


def _summary(r: IngestReport) -> str:
    return (f"{r.count('added')} added, {r.count('updated')} updated, {r.count('unchanged')} unchanged, "
            f"{r.count('removed')} removed, {len(r.failed)} failed; {r.embedded} passages embedded, "
            f"{r.from_cache} from cache")
