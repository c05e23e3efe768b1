"""Incremental ingestion: walk, load, chunk, embed (cached) and commit to a store.

The manifest (in the chunk store) maps each document to its content hash. Unchanged
files are skipped without being read twice; changed files are replaced; with
``prune`` files that are gone from the given folders are removed. Work is committed
in batches, so an interrupted run keeps what it finished and the next run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from indexes.chunk_store import DocumentRecord
from indexes.errors import ConfigError
from indexes.store import DocumentUpdate, Store
from ingest.cache import cache_dir
from ingest import chunking
from ingest.chunking import Chunker
from ingest.embed_cache import EmbeddingCache
from ingest.embedders import Embedder
from ingest.loaders import DEFAULT_INCLUDE, LoadError, load, walk
from indexes.text import search_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileResult:
    source: str
    status: str  # added | updated | unchanged | removed | failed
    chunks: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestReport:
    files: tuple[FileResult, ...]
    embedded: int
    from_cache: int
    seconds: float

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)


@dataclass(frozen=True)
class IngestOptions:
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    prune: bool = False
    chunk_tokens: int = 384
    chunk_overlap: int = 48
    commit_every: int = 2000  # chunks per atomic commit
    progress: bool = True
    force: frozenset[str] = frozenset()  # sources to re-chunk and re-embed even if unchanged (re-index)
    skip_duplicates: bool = False  # a new file whose content another source already holds is reported unchanged
    on_file: Callable[[str, str, str], None] | None = None  # (source, stage, reason): parsing, embedding, then
    # committed, unchanged or failed; e.g. the server's per-file job progress


def model_key(embedder: Embedder) -> str:
    """Cache key for an embedder: its name, plus the weights' size and mtime for a local folder."""
    path = Path(embedder.name)
    if path.is_dir():
        stamp = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in sorted(path.glob("*.safetensors"))]
        return f"{path.resolve()}:{hashlib.sha1(repr(stamp).encode()).hexdigest()[:12]}"
    return embedder.name


def ingest(store: Store, embedder: Embedder, paths: Sequence[Path], options: IngestOptions = IngestOptions()) -> IngestReport:
    from tqdm.auto import tqdm

    if options.chunk_tokens > embedder.max_tokens:
        raise ConfigError(f"chunk size {options.chunk_tokens} tokens exceeds what {embedder.name} reads "
                          f"({embedder.max_tokens}); lower it with --chunk-tokens")
    started = time.perf_counter()
    chunker = Chunker(embedder.count_tokens, options.chunk_tokens, options.chunk_overlap)
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    key = model_key(embedder)
    manifest = store.documents()
    by_hash = {d.content_hash: s for s, d in manifest.items()}
    results: list[FileResult] = []
    pending: list[tuple[DocumentUpdate, str]] = []
    pending_chunks = 0
    embedded = cached = 0
    seen: set[str] = set()
    roots = [Path(p).resolve() for p in paths]

    def tell(source: str, stage: str, reason: str = "") -> None:
        if options.on_file is not None:
            options.on_file(source, stage, reason)

    def flush() -> None:
        nonlocal pending, pending_chunks, embedded, cached
        if not pending:
            return
        for u, _ in pending:
            tell(u.record.source, "embedding")
        chunks = [c for u, _ in pending for c in u.chunks]
        texts = [search_text(c.headings, c.text) for c in chunks]
        vectors, computed = cache.embed(key, texts, lambda t: embedder.embed_documents(t, progress=options.progress))
        embedded += computed
        cached += len(texts) - computed
        updates, row = [], 0
        for u, _ in pending:
            n = len(u.chunks)
            updates.append(DocumentUpdate(u.record, u.chunks, vectors[row : row + n]))
            row += n
        store.commit(updates)
        for u, status in pending:
            results.append(FileResult(u.record.source, status, len(u.chunks), warnings=u.record.warnings))
            tell(u.record.source, "committed", status)
        pending, pending_chunks = [], 0

    with store.writer():
        files = list(walk(roots, options.include, options.exclude))
        for path in tqdm(files, desc="ingest", unit="file", disable=not options.progress):
            source = str(path.resolve())
            seen.add(source)
            try:
                data = path.read_bytes()
            except OSError as exc:
                results.append(FileResult(source, "failed", reason=f"cannot read: {exc.strerror}"))
                tell(source, "failed", results[-1].reason)
                continue
            digest = f"{hashlib.sha256(data).hexdigest()}/{chunking.CHUNKING_VERSION}"
            old = manifest.get(source)
            if old is not None and old.content_hash == digest and source not in options.force:
                results.append(FileResult(source, "unchanged", old.n_chunks))
                tell(source, "unchanged")
                continue
            twin = by_hash.get(digest) if options.skip_duplicates else None
            if twin is not None and twin != source:
                results.append(FileResult(source, "unchanged", reason=f"same content as {Path(twin).name}, already indexed"))
                tell(source, "unchanged", results[-1].reason)
                continue
            tell(source, "parsing")
            try:
                doc = load(path, data, source)
                chunks = chunker.chunk(doc, digest)
            except LoadError as exc:
                results.append(FileResult(source, "failed", reason=str(exc)))
                tell(source, "failed", str(exc))
                continue
            except Exception as exc:  # a loader bug must not stop the other files
                log.exception("unexpected error loading %s", source)
                results.append(FileResult(source, "failed", reason=f"unexpected error: {exc}"))
                tell(source, "failed", results[-1].reason)
                continue
            record = DocumentRecord(source, digest, len(data), len(chunks), datetime.now(timezone.utc).isoformat(timespec="seconds"), doc.warnings)
            pending.append((DocumentUpdate(record, chunks, None), "updated" if old else "added"))
            pending_chunks += len(chunks)
            if pending_chunks >= options.commit_every:
                flush()
        flush()
        if options.prune:
            gone = [s for s in manifest if s not in seen and any(_under(Path(s), r) for r in roots)]
            if gone:
                store.commit([], removed_sources=gone)
                results.extend(FileResult(s, "removed", manifest[s].n_chunks) for s in gone)
        if any(r.status in ("added", "updated", "removed") for r in results):
            store.refresh_lexical()
    cache.close()
    return IngestReport(tuple(results), embedded, cached, time.perf_counter() - started)


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
