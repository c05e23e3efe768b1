"""File helpers every layer shares: atomic writes, and the cache where converted models and embeddings live
(``$RAG_CACHE_DIR`` or ``~/.cache/rag``). They sit in the lowest layer so no import runs upward to reach them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("RAG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "rag"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it first with ``build(tmp_dir)`` if absent.

    The folder is built under a temporary name and renamed into place, so an
    interrupted build is redone next time instead of leaving a half-written model.
    """
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename into place, fsyncing so a crash leaves old or new, never half. The
    temporary name is this process's, so two processes writing the same file never share one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
