"""Collections bound to folders (``rag serve --watch NAME=FOLDER``): each is kept in step by a ``rag watch`` child
process, killed with the server. The child writes through the store's own lock and commits, so the server's readers
pick its work up at the next complete generation, as they do an upload job's; a collection that does not exist yet is
created first with the server's embedder and index."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

from indexes.errors import ConfigError
from rag.serve.collections import Collections, check_name
from rag.serve.jobs import _die_with_parent

log = logging.getLogger(__name__)


def parse_bindings(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """``NAME=FOLDER`` pairs, checked: a valid collection name and an existing folder."""
    out = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not folder:
            raise ConfigError(f"--watch takes NAME=FOLDER (got {spec!r}), e.g. --watch manuals=/srv/manuals")
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"--watch {spec}: {path} is not a folder")
        out.append((check_name(name), str(path)))
    return tuple(out)


class FolderBindings:
    def __init__(self, collections: Collections, bindings: tuple[tuple[str, str], ...]) -> None:
        self.collections, self.bindings = collections, bindings
        self._procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for name, folder in self.bindings:
            if name not in self.collections.names():
                self.collections.create(name)
            proc = subprocess.Popen(
                [sys.executable, "-m", "rag.cli", "watch", folder, "--store", str(self.collections.root / name)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                preexec_fn=_die_with_parent,
            )
            threading.Thread(target=_relay, args=(proc, name), name=f"watch-{name}", daemon=True).start()
            self._procs.append(proc)
            log.info("collection %r follows the folder %s", name, folder)

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _relay(proc: subprocess.Popen, name: str) -> None:
    """The watcher's report lines, into the server's log."""
    for line in proc.stderr:
        log.info("watch %s: %s", name, line.rstrip())
    if proc.wait() not in (0, -15):
        log.error("the watcher of collection %r exited with status %s", name, proc.returncode)
