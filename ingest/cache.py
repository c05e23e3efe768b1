"""Where converted models and cached embeddings live: ``$RAG_CACHE_DIR`` or ``~/.cache/rag``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("RAG_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "rag")
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
