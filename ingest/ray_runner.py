"""The Ray runner: the same ingestion steps as ``ingest.pipeline.ingest``, on a Ray cluster.

The driver scans (walk and hash against the manifest: unchanged files are never read again); Ray Data reads and
chunks the files that changed in tasks and embeds their chunks in an actor pool (one model load per actor, a GPU
each where the cluster has them); the vectors stream back to the driver, which commits each document once all of
its chunks are in, in batches of ``commit_every`` chunks, exactly as the local runner does. The store is therefore
the same as a local run's (same chunk ids and texts; vectors equal to float tolerance), and a driver killed at
any moment leaves the last committed batch, with the next run doing only what is left. Workers read files by path,
so every node must see the folder at the same path (a shared filesystem). The actors cannot read the driver's
embedding cache, but the driver writes what they computed into it, so a later local run reuses those vectors.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexes.chunk_store import DocumentRecord
from indexes.errors import ConfigError, MissingDependencyError, require
from indexes.files import cache_dir
from indexes.store import DocumentUpdate, Store
from indexes.types import Chunk
from ingest.chunking import Chunker
from ingest.embed import Embedder
from ingest.embed.cache import EmbeddingCache
from ingest.loaders import LoadError
from ingest.pipeline import (
    Committer,
    FileResult,
    FileWork,
    IngestOptions,
    IngestReport,
    check_chunking,
    claim,
    embedded_text,
    finish,
    load_document,
    model_key,
    scan,
)
from ingest.ray_sink import DirectWriter, chunk_of, sink_of

log = logging.getLogger(__name__)

_READ_CPUS = 0.5  # per read-and-chunk task: fractional, so embedding actors never starve the readers


@dataclass(frozen=True)
class RayPlan:
    """How the job is spread: ``actors`` embedding actors with ``actor_cpus`` and ``actor_gpus`` each."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    batch_size: int = 64

    @classmethod
    def for_cluster(cls, resources: dict, actors: int | None = None) -> "RayPlan":
        """One actor per GPU; on CPUs, one actor per 4 CPUs (at least one), leaving a CPU for the readers."""
        cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if gpus:
            return cls(actors or gpus, 1.0, 1.0)
        n = actors or max(1, int((cpus - 1) // 4))
        return cls(n, max(0.25, min(4.0, (cpus - 1) / n)), 0.0)


# One embedder per worker process: Ray reuses workers across tasks, so a read task loads its tokenizer once.
_WORKER_EMBEDDER: dict[str, Embedder] = {}


def _worker_embedder(embedder: Embedder) -> Embedder:
    return _WORKER_EMBEDDER.setdefault(f"{type(embedder).__qualname__}:{embedder.name}", embedder)


class _ReadAndChunk:
    """A Ray Data ``flat_map`` step: one file in, its chunks out (or one row saying why it failed)."""

    def __init__(self, embedder: Embedder, chunk_tokens: int, chunk_overlap: int, ocr: bool = True) -> None:
        self.embedder, self.chunk_tokens, self.chunk_overlap, self.ocr = embedder, chunk_tokens, chunk_overlap, ocr

    def __call__(self, row: dict) -> list[dict]:
        embedder = _worker_embedder(self.embedder)
        work = FileWork(Path(row["path"]), row["source"], row["digest"], row["status"])
        base = {"source": work.source, "status": work.status, "digest": work.digest}
        try:
            chunker = Chunker(embedder.count_tokens, self.chunk_tokens, self.chunk_overlap)
            update = load_document(work, chunker, self.ocr)
        except (LoadError, MissingDependencyError) as exc:
            return [{**base, **_EMPTY, "failed": str(exc)}]
        except Exception as exc:  # a loader bug must not stop the other files
            return [{**base, **_EMPTY, "failed": f"unexpected error: {exc}"}]
        r = update.record
        doc = {**base, "size": r.size, "n_chunks": r.n_chunks, "ingested_at": r.ingested_at,
               "warnings": json.dumps(list(r.warnings), ensure_ascii=False), "failed": ""}
        if not update.chunks:
            return [{**_EMPTY, **doc}]
        return [{**doc, "ordinal": i, "id": c.id, "text": c.text, "start": c.start, "end": c.end, "page": _page(c.page),
                 "page_end": _page(c.page_end), "headings": json.dumps(list(c.headings), ensure_ascii=False),
                 "embed": embedded_text(c)}
                for i, c in enumerate(update.chunks)]


_EMPTY = {"size": 0, "n_chunks": 0, "ingested_at": "", "warnings": "[]", "ordinal": -1, "id": 0, "text": "", "start": 0,
          "end": 0, "page": -1, "page_end": -1, "headings": "[]", "embed": ""}


def _page(page: int | None) -> int:
    return -1 if page is None else page  # Arrow columns of one type: -1 stands for "no page"


class _Embed:
    """The actor of the embedding pool: loads the model once, embeds batch after batch."""

    def __init__(self, embedder: Embedder, threads: int, sink: dict | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.embedder = embedder
        self.writer = DirectWriter(sink) if sink is not None else None

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t, o in zip(batch["embed"], batch["ordinal"]) if o >= 0]
        vectors = self.embedder.embed_documents(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)
        out = np.zeros((len(batch["embed"]), self.embedder.dim), np.float32)
        out[np.asarray(batch["ordinal"]) >= 0] = vectors
        if self.writer is not None:  # the shared mode: written here, only ids go on to the driver
            return self.writer.write(batch, out)
        batch = dict(batch)
        batch["vector"] = out
        del batch["embed"]
        return batch


def _ray_token_available() -> bool:
    """Whether a Ray token is set up here, where Ray itself looks for one (its environment variables, ~/.ray)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def ingest_on_ray(store: Store, embedder: Embedder, paths: Sequence[Path], options: IngestOptions, address: str | None,
                  actors: int | None = None, direct: bool = True) -> IngestReport:
    """``ingest`` with reading, chunking and embedding on the Ray cluster at ``address`` (None: start one here).
    ``direct``: in the shared mode, the actors write chunks and vectors themselves (``ingest.ray_sink``); False
    brings them to the driver as for a store directory."""
    if address is not None and "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
        # `ray start` turns token authentication on where a token exists; a driver given an address must then say so
        os.environ["RAY_AUTH_MODE"] = "token"
    if address is None or _is_loopback(address):
        # a cluster of this machine alone: with multi-node clusters off, Ray listens on and dials 127.0.0.1 only
        # (measured; otherwise it swaps 127.0.0.1 for the machine's routable address). Read when ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require("ray", "ray", "ray[data]")
    if address is not None:
        _check_reachable(address)
    started = time.perf_counter()
    check_chunking(embedder, options)
    manifest = store.documents()
    embedded = received = 0
    with store.writer():
        work: list[FileWork] = []
        seen: set[str] = set()
        cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
        sink = sink_of(store) if direct else None
        remember = (lambda updates: None) if sink else (lambda updates: _remember(cache, model_key(embedder), updates))
        committer = Committer(store, options, after=remember, staged_by=sink["run"] if sink else None)
        for item in scan(manifest, paths, options, keep_data=False):
            seen.add(item.source)
            settled = item if isinstance(item, FileResult) else claim(store, item, options)
            if settled is not None:
                committer.record(settled)
            else:
                work.append(item)
        try:
            if work:
                embedded, received = _run(ray, embedder, work, options, address, actors, committer, sink)
                log.info("ray: the driver received %.1f MB for %d chunks", received / 1e6, embedded)
        finally:
            cache.close()
        finish(store, manifest, seen, paths, options, committer.results)
    return IngestReport(tuple(committer.results), embedded, 0, time.perf_counter() - started, received)


def _run(ray, embedder: Embedder, work: list[FileWork], options: IngestOptions, address: str | None,
         actors: int | None, committer: Committer, sink: dict | None) -> tuple[int, int]:
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, ...: translate at the boundary
            raise ConfigError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: {exc}") from exc
    try:
        plan = RayPlan.for_cluster(ray.cluster_resources(), actors)
        log.info(
            "ray: %d files, %d embedding actors (%.2f CPU, %.0f GPU each)",
            len(work),
            plan.actors,
            plan.actor_cpus,
            plan.actor_gpus,
        )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = options.progress
        # its INFO is per-run noise
        logging.getLogger("ray.data").setLevel(logging.WARNING if options.progress else logging.ERROR)
        rows = [{"path": str(w.path), "source": w.source, "digest": w.digest, "status": w.status} for w in work]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 200))
        read = _ReadAndChunk(embedder, options.chunk_tokens, options.chunk_overlap, options.ocr)
        ds = ds.flat_map(read, num_cpus=_READ_CPUS)
        ds = ds.map_batches(
            _Embed,
            fn_constructor_kwargs={"embedder": embedder, "threads": int(plan.actor_cpus), "sink": sink},
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.actor_cpus,
            num_gpus=plan.actor_gpus,
            batch_size=plan.batch_size,
            batch_format="numpy",
        )
        return _commit_as_they_come(ds.iter_batches(batch_size=plan.batch_size, batch_format="numpy"), committer)
    finally:
        if started_here:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, on a wrong address: Ray itself waits for a cluster that is not there."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"a Ray address is HOST:PORT (the head's GCS port, 6379 by default), got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"nothing answers at the Ray address {address} ({exc.strerror or exc}): start a head there with "
            "`ray start --head --port PORT`, or run `rag ingest --ray` alone for a cluster of this machine"
        ) from exc


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1")


def _remember(cache: EmbeddingCache, key: str, updates: list[DocumentUpdate]) -> None:
    """Put the vectors the actors computed into the driver's embedding cache, so a later local run (or a changed
    file's unchanged chunks there) does not embed them again."""
    texts = [embedded_text(c) for u in updates for c in u.chunks]
    if texts:
        by_text = dict(zip(texts, np.vstack([u.vectors for u in updates if len(u.chunks)])))
        cache.embed(key, texts, lambda todo: np.vstack([by_text[t] for t in todo]))


def _commit_as_they_come(batches, committer: Committer) -> tuple[int, int]:
    """Group rows by document and hand each document to the committer once all its chunks are in; the number of
    chunks the workers embedded, and the bytes the driver received."""
    partial: dict[str, list[tuple[int, Chunk, np.ndarray]]] = {}
    embedded = received = 0
    for batch in batches:
        received += _payload(batch)
        for i in range(len(batch["source"])):
            source = str(batch["source"][i])
            if batch["failed"][i]:
                committer.fail(source, str(batch["failed"][i]))
                continue
            n = int(batch["n_chunks"][i])
            got = partial.setdefault(source, [])
            if int(batch["ordinal"][i]) >= 0:
                got.append((int(batch["ordinal"][i]), chunk_of(batch, i),
                            batch["vector"][i] if "vector" in batch else None))
                embedded += 1
            if len(got) == n:
                committer.add(
                    _update(
                        sorted(partial.pop(source), key=lambda item: item[0]), batch, i, committer.store.settings.dim
                    ),
                    str(batch["status"][i]),
                )
    committer.flush()
    return embedded, received


def _payload(batch: dict) -> int:
    """The bytes of a batch's data (the texts' UTF-8, the numbers' and vectors' binary size)."""
    return sum(sum(len(str(x).encode()) for x in col) if col.dtype == object else col.nbytes for col in batch.values())


def _update(got: list[tuple[int, Chunk, np.ndarray]], batch: dict, i: int, dim: int) -> DocumentUpdate:
    record = DocumentRecord(
        str(batch["source"][i]),
        str(batch["digest"][i]),
        int(batch["size"][i]),
        len(got),
        str(batch["ingested_at"][i]),
        tuple(json.loads(str(batch["warnings"][i]))),
    )
    if got and got[0][2] is None:  # written by the actors: the driver has the ids only
        return DocumentUpdate(record, [c for _, c, _ in got], None)
    vectors = np.vstack([v for _, _, v in got]) if got else np.zeros((0, dim), np.float32)
    return DocumentUpdate(record, [c for _, c, _ in got], vectors)
