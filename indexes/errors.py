"""The project's exceptions: one base class, a few that say what went wrong and what to do."""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(RagError):
    """A setting or argument is invalid."""


class StoreError(RagError):
    """A store directory is missing, incompatible or damaged."""


class StoreBusyError(StoreError):
    """Another process holds the store's write lock (an ingest, a watcher): try again when it is done."""


class DatabaseUnavailableError(StoreError):
    """The shared mode's database cannot be reached (for now): try again."""


class MissingDependencyError(RagError, ImportError):
    """An optional package is not installed; the message names the install command."""


def require(module: str, extra: str | None, package: str | None = None):
    """Import ``module`` or raise one error naming the ``pip install`` that provides it (``extra`` None: a core
    dependency)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module
        if extra is None:
            raise MissingDependencyError(
                f"{pkg} is missing: run `pip install {pkg}` (it is a dependency of rag-kb)"
            ) from exc
        raise MissingDependencyError(
            f"{pkg} is needed for this feature but is not installed: "
            f"run `pip install 'rag-kb[{extra}]'` (or `pip install {pkg}`)"
        ) from exc


class NotFoundError(RagError):
    """A named thing (a collection, document, job, chat or version) does not exist."""


class ConflictError(RagError):
    """The request clashes with the current state (a name taken, a job still running)."""
