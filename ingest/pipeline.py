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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from indexes.chunk_store import DocumentRecord
from indexes.errors import ConfigError, MissingDependencyError
from indexes.files import cache_dir
from indexes.store import DocumentUpdate, Store
from indexes.text import search_text
from indexes.types import Chunk
from ingest import chunking
from ingest.chunking import Chunker
from ingest.embed import Embedder
from ingest.embed.cache import EmbeddingCache
from ingest.loaders import DEFAULT_INCLUDE, LoadError, load, walk

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
    driver_bytes: int = 0  # a Ray run: the data its driver received from the workers

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
    ocr: bool = True  # read PDF pages without a text layer with Tesseract (when installed)
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


@dataclass(frozen=True)
class FileWork:
    """A file the manifest says must be (re)indexed: new, changed, or forced."""

    path: Path
    source: str
    digest: str
    status: str  # added | updated
    data: bytes | None = None  # the bytes read for hashing, when the runner loads in this process


def scan(manifest: dict[str, DocumentRecord], paths: Sequence[Path], options: IngestOptions,
         keep_data: bool = True) -> Iterator[FileWork | FileResult]:
    """Walk and hash: a ``FileResult`` for each file that needs no work (unchanged, a duplicate, unreadable),
    a ``FileWork`` for each one to load. Unchanged files are read once, to hash them, and never parsed."""
    from tqdm.auto import tqdm

    by_hash = {d.content_hash: s for s, d in manifest.items()}
    # a file named twice (itself and its folder) is one file
    files = list(dict.fromkeys(p.resolve() for p in walk([Path(p).resolve() for p in paths], options.include,
                                                          options.exclude)))
    for path in tqdm(files, desc="scan" if not keep_data else "ingest", unit="file", disable=not options.progress):
        source = str(path.resolve())
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield FileResult(source, "failed", reason=f"cannot read: {exc.strerror}")
            continue
        digest = f"{hashlib.sha256(data).hexdigest()}/{chunking.CHUNKING_VERSION}"
        old = manifest.get(source)
        if old is not None and old.content_hash == digest and source not in options.force:
            yield FileResult(source, "unchanged", old.n_chunks)
            continue
        twin = by_hash.get(digest) if options.skip_duplicates else None
        if twin is not None and twin != source:
            yield FileResult(source, "unchanged", reason=f"same content as {Path(twin).name}, already indexed")
            continue
        if options.skip_duplicates:
            by_hash.setdefault(digest, source)  # a second file with these bytes in the same run is a duplicate too
        yield FileWork(path, source, digest, "updated" if old else "added", data if keep_data else None)


def claim(store: Store, work: FileWork, options: IngestOptions) -> FileResult | None:
    """Claim ``work`` for this writer; a ``FileResult`` instead when there is nothing to do: another writer is on it,
    or committed it since the scan (stores shared by several writers: ``indexes.shared``)."""
    if not store.claim(work.source):
        return FileResult(work.source, "unchanged", reason="another writer is ingesting it")
    if getattr(store.chunks, "coordinates_writers", False) and work.source not in options.force:
        now = store.chunks.documents_of([work.source]).get(work.source)
        if now is not None and now.content_hash == work.digest:
            store.release([work.source])
            return FileResult(work.source, "unchanged", now.n_chunks)
    return None


def load_document(work: FileWork, chunker: Chunker, ocr: bool = True) -> DocumentUpdate:
    """Load and chunk one file (``work.data`` or read now); the update has no vectors yet. Raises ``LoadError``."""
    data = work.data if work.data is not None else work.path.read_bytes()
    if work.data is None and f"{hashlib.sha256(data).hexdigest()}/{chunking.CHUNKING_VERSION}" != work.digest:
        raise LoadError("the file changed while it was being ingested; ingest again")
    doc = load(work.path, data, work.source, ocr)
    chunks = chunker.chunk(doc, work.digest)
    record = DocumentRecord(
        work.source,
        work.digest,
        len(data),
        len(chunks),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        doc.warnings,
    )
    return DocumentUpdate(record, chunks, None)


def embedded_text(chunk: Chunk) -> str:
    """What is embedded for a chunk: its heading path and normalised text (the stored text stays as it was)."""
    return search_text(chunk.headings, chunk.text)


def finish(store: Store, manifest: dict[str, DocumentRecord], seen: set[str], paths: Sequence[Path],
           options: IngestOptions, results: list[FileResult]) -> None:
    """The last steps of a run: with ``prune``, remove indexed sources under the given folders that the walk did not
    see; then rebuild the lexical index if anything changed."""
    if options.prune:
        roots = [Path(p).resolve() for p in paths]
        gone = [s for s in manifest if s not in seen and any(_under(Path(s), r) for r in roots)]
        gone = [s for s in gone if store.claim(s)]  # not one another writer is (re)indexing now
        if gone:
            store.commit([], removed_sources=gone)
            store.release(gone)
            results.extend(FileResult(s, "removed", manifest[s].n_chunks) for s in gone)
    if any(r.status in ("added", "updated", "removed") for r in results):
        store.refresh_lexical()


def check_chunking(embedder: Embedder, options: IngestOptions) -> Chunker:
    if options.chunk_tokens > embedder.max_tokens:
        raise ConfigError(
            f"chunk size {options.chunk_tokens} tokens exceeds what {embedder.name} reads "
            f"({embedder.max_tokens}); lower it with --chunk-tokens"
        )
    return Chunker(embedder.count_tokens, options.chunk_tokens, options.chunk_overlap)


class Committer:
    """The one commit loop of both runners: documents wait until ``commit_every`` chunks are ready, then commit in one
    transaction; each file's result is recorded and reported (``options.on_file``) once. ``prepare`` runs on each
    batch just before its commit (the local runner embeds there), ``after`` just after (the Ray runner caches the
    vectors its workers made)."""

    def __init__(self, store: Store, options: IngestOptions,
                 prepare: Callable[[list[DocumentUpdate]], list[DocumentUpdate]] = list,
                 after: Callable[[list[DocumentUpdate]], None] = lambda updates: None,
                 staged_by: str | None = None) -> None:
        self.store, self.options, self.prepare, self.after = store, options, prepare, after
        self.staged_by = staged_by  # the Ray run whose actors wrote the chunks and vectors (see Store.commit)
        self.results: list[FileResult] = []
        self._ready: list[tuple[DocumentUpdate, str]] = []
        self._ready_chunks = 0

    def tell(self, source: str, stage: str, reason: str = "") -> None:
        if self.options.on_file is not None:
            self.options.on_file(source, stage, reason)

    def record(self, result: FileResult) -> None:
        """A file settled without a commit: unchanged, removed or failed."""
        if result.status == "failed":
            self.store.release([result.source])
        self.results.append(result)
        self.tell(result.source, result.status, result.reason)

    def fail(self, source: str, reason: str) -> None:
        self.record(FileResult(source, "failed", reason=reason))

    def add(self, update: DocumentUpdate, status: str) -> None:
        self._ready.append((update, status))
        self._ready_chunks += len(update.chunks)
        if self._ready_chunks >= self.options.commit_every:
            self.flush()

    def flush(self) -> None:
        if not self._ready:
            return
        statuses = [status for _, status in self._ready]
        updates = self.prepare([u for u, _ in self._ready])
        self.store.commit(updates, staged_by=self.staged_by)
        self.store.release([u.record.source for u in updates])
        self.after(updates)
        for u, status in zip(updates, statuses):
            self.results.append(FileResult(u.record.source, status, len(u.chunks), warnings=u.record.warnings))
            self.tell(u.record.source, "committed", status)
        self._ready, self._ready_chunks = [], 0


class _CachedEmbedding:
    """Embeds a batch's chunks through the embedding cache, counting what was computed and what was found."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, options: IngestOptions) -> None:
        self.embedder, self.cache, self.options = embedder, cache, options
        self.key = model_key(embedder)
        self.embedded = self.cached = 0

    def __call__(self, pending: list[DocumentUpdate]) -> list[DocumentUpdate]:
        if self.options.on_file is not None:
            for u in pending:
                self.options.on_file(u.record.source, "embedding", "")
        texts = [embedded_text(c) for u in pending for c in u.chunks]
        progress = self.options.progress
        vectors, computed = self.cache.embed(
            self.key, texts, lambda t: self.embedder.embed_documents(t, progress=progress)
        )
        self.embedded += computed
        self.cached += len(texts) - computed
        updates, row = [], 0
        for u in pending:
            n = len(u.chunks)
            updates.append(DocumentUpdate(u.record, u.chunks, vectors[row : row + n]))
            row += n
        return updates


def ingest(store: Store, embedder: Embedder, paths: Sequence[Path],
           options: IngestOptions = IngestOptions()) -> IngestReport:
    """The local runner: scan, load and chunk, embed (through the embedding cache) and commit, in this process."""
    started = time.perf_counter()
    chunker = check_chunking(embedder, options)
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    manifest = store.documents()
    embedding = _CachedEmbedding(embedder, cache, options)
    committer = Committer(store, options, prepare=embedding)
    seen: set[str] = set()
    with store.writer():
        for item in scan(manifest, paths, options):
            seen.add(item.source)
            if isinstance(item, FileResult):
                committer.record(item)
                continue
            if (settled := claim(store, item, options)) is not None:
                committer.record(settled)
                continue
            committer.tell(item.source, "parsing")
            try:
                committer.add(load_document(item, chunker, options.ocr), item.status)
            except (LoadError, MissingDependencyError) as exc:  # unreadable, or its format's extra is not installed
                committer.fail(item.source, str(exc))
            except Exception as exc:  # a loader bug must not stop the other files
                log.exception("unexpected error loading %s", item.source)
                committer.fail(item.source, f"unexpected error: {exc}")
        committer.flush()
        finish(store, manifest, seen, paths, options, committer.results)
    cache.close()
    return IngestReport(tuple(committer.results), embedding.embedded, embedding.cached, time.perf_counter() - started)


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
