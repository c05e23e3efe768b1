"""``KnowledgeBase``: the one entry point. Ingest documents, search them, ask and chat with citations."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from indexes.errors import ConfigError, StoreBusyError, StoreError
from indexes.store import Store, StoreSettings
from indexes.versions import active_path
from ingest.embed import DEFAULT_EMBEDDER, Embedder, SentenceTransformerEmbedder, query_time
from ingest.pipeline import IngestOptions, IngestReport, ingest
from ingest.texts import Text, add_texts
from rag.answer.generation import count_tokens, standalone_question
from rag.answer.prompts import language_of
from rag.answer.stream import AnswerStream
from rag.config import Config, IndexConfig
from rag.retrieval import Filters, RetrievalSettings, Retriever
from rag.retrieval.context import drop_near_duplicates, widen
from rag.retrieval.rerank import load_reranker
from rag.types import Answer, Generator, Hit

log = logging.getLogger(__name__)


class KnowledgeBase:
    """A store plus the models that read and answer from it. Models load on first use.

    >>> kb = KnowledgeBase.open("my-store")
    >>> kb.ingest(["docs/"])
    >>> kb.ask("How do I reset the device?").text
    """

    def __init__(self, store: Store, embedder: Embedder, config: Config, generator: Generator | None = None,
                 root: Path | None = None) -> None:
        self.store, self.embedder, self.config = store, embedder, config
        self.root = root or store.path  # the store directory; index versions live under it
        self._generator = generator
        self._owns_generator = generator is None  # loaded here, so freed by close(); a given one is the caller's
        self._generation = store.chunks.generation
        r = config.retrieval
        reranker = load_reranker(r.rerank, lambda: self.generator, config.device, store.path, embedder)
        self.retriever = Retriever(
            store,
            embedder,
            RetrievalSettings(r.mode, r.fusion, r.rrf_k, r.dense_weight, r.candidates, r.language_bias),
            reranker,
            r.rerank_top,
        )

    @classmethod
    def open(cls, path: str | Path, config: Config | None = None, *, embedder: Embedder | None = None,
             generator: Generator | None = None, create: bool = True, read_only: bool = False) -> "KnowledgeBase":
        """Open the store at ``path``, creating it (when ``create``) with ``config``'s embedder and index; with
        ``config.db`` set, ``path`` names a store in that PostgreSQL database (the shared mode).

        Opening a store with an embedder other than the one that built it is an error, not garbage results.
        ``read_only`` opens it for reading beside a writer in another process (see ``Store.open``).
        """
        config = config or Config()
        if config.db:
            return cls._open_shared(str(path), config, embedder, generator, create, read_only)
        root = Path(path)
        path = active_path(root)  # the store directory itself unless another index version was activated
        if Store.exists(path):
            store = Store.open(path, read_only=read_only)
            return cls(store, _checked_embedder(store, config, embedder, str(path)), config, generator, root)
        if not create:
            raise StoreError(f"no store at {path}: create one with `rag ingest DOCS --store {path}`")
        embedder = embedder or _embedder(config, config.embedder or DEFAULT_EMBEDDER)
        store = Store.create(path, _new_settings(config, embedder, _index_options(config.index)))
        return cls(store, embedder, config, generator, root)

    @classmethod
    def _open_shared(cls, name: str, config: Config, embedder: Embedder | None, generator: Generator | None,
                     create: bool, read_only: bool) -> "KnowledgeBase":
        """The store ``name`` in the database ``config.db`` (the shared mode: ``indexes.shared``)."""
        from indexes.shared import store as shared

        try:
            store = shared.open_store(config.db, name, read_only=read_only)
            return cls(store, _checked_embedder(store, config, embedder, name), config, generator)
        except shared.NoSuchStoreError:
            if not create:
                raise
        embedder = embedder or _embedder(config, config.embedder or DEFAULT_EMBEDDER)
        index = config.index
        options = {"uri": index.uri, "collection": index.collection or shared.milvus_collection(config.db, name)}
        return cls(shared.create(config.db, name, _new_settings(config, embedder, options)), embedder, config,
                   generator)

    def refreshed(self) -> "KnowledgeBase":
        """For a reader beside a writer in another process (``read_only``): this knowledge base while nothing new is
        committed, else one at the newest complete generation (or the newly activated version) that shares its
        models; this one's store is then closed."""
        store = self.store
        current = store.chunks.generation == self._generation and active_path(self.root) == store.path
        if current or not store.lexical_ready:
            return self
        fresh = KnowledgeBase.open(self.root, self.config, embedder=self.embedder, generator=self._generator,
                                   create=False, read_only=store.read_only)
        fresh._owns_generator, self._owns_generator = self._owns_generator, False
        self.close()
        return fresh

    def close(self) -> None:
        """Close the store and free the LLM this knowledge base loaded (a generator passed in stays loaded)."""
        self.store.close()
        if self._owns_generator and self._generator is not None and hasattr(self._generator, "close"):
            self._generator.close()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ingestion ----------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], prune: bool = False, progress: bool = True, force: Sequence[str] = (),
               on_file: Callable[[str, str, str], None] | None = None, skip_duplicates: bool = False,
               ray: str | bool | None = None) -> IngestReport:
        """Add or update documents; ``force`` re-indexes those sources even if unchanged; ``on_file`` hears each
        file's stages; ``skip_duplicates`` reports a file unchanged whose content another source holds (see
        ``IngestOptions``).
        ``ray``: read, chunk and embed on the Ray cluster at this address (``True``: a new local one); see
        ``ingest.ray_runner``."""
        self._check_dim()
        c = self.config.ingest
        chunking = self.store.settings.ingest
        options = IngestOptions(
            include=c.include,
            exclude=c.exclude,
            prune=prune,
            chunk_tokens=int(chunking.get("chunk_tokens", c.chunk_tokens)),
            chunk_overlap=int(chunking.get("chunk_overlap", c.chunk_overlap)),
            commit_every=c.commit_every,
            ocr=c.ocr,
            progress=progress,
            force=frozenset(force),
            on_file=on_file,
            skip_duplicates=skip_duplicates,
        )
        prepare = getattr(self.embedder, "prepare_queries", None)
        if prepare is not None:
            prepare()  # the onnxruntime export, once, here: before Ray workers would each make it, and for questions
        if ray is not None and ray is not False:
            from ingest.ray_runner import ingest_on_ray

            return ingest_on_ray(
                self.store, self.embedder, [Path(p) for p in paths], options, None if ray is True else str(ray)
            )
        return ingest(self.store, self.embedder, [Path(p) for p in paths], options)

    def add_texts(self, texts: Sequence[Text]) -> int:
        """Index texts as they are, one chunk each under its own source, beside the files (see ``ingest.texts``);
        returns how many were embedded (unchanged ones are not)."""
        self._check_dim()
        return add_texts(self.store, self.embedder, texts)

    def remove(self, sources: Sequence[str]) -> int:
        """Delete documents (by source) in one atomic commit; returns how many were indexed."""
        known = self.store.documents()
        gone = [s for s in sources if s in known]
        if gone:
            with self.store.writer():
                busy = [s for s in gone if not self.store.claim(s)]
                try:
                    if busy:  # a shared store: another writer is indexing them now
                        raise StoreBusyError(f"another writer is ingesting {', '.join(busy[:3])}; remove it when "
                                             "that is done")
                    self.store.commit([], removed_sources=gone)
                finally:
                    self.store.release(gone)
                self.store.refresh_lexical()
        return len(gone)

    def _check_dim(self) -> None:
        if self.embedder.dim != self.store.settings.dim:
            raise StoreError(
                f"the embedder {self.embedder.name!r} gives {self.embedder.dim}-d vectors but the store holds "
                f"{self.store.settings.dim}-d ones; use the embedder the store was built with"
            )

    # -- retrieval and answers ----------------------------------------------
    def search(self, question: str, k: int | None = None, filters: Filters = Filters(),
               mode: str | None = None) -> list[Hit]:
        """Best chunks first; ``mode`` (dense, bm25, hybrid) overrides the configured one."""
        return self.retriever.search(question, k or self.config.retrieval.k, filters, mode)

    def search_timed(self, question: str, k: int | None = None, filters: Filters = Filters(),
                     mode: str | None = None) -> tuple[list[Hit], dict[str, float]]:
        """``search`` plus the milliseconds each stage took (embed, dense, bm25, fuse, rerank)."""
        return self.retriever.search_timed(question, k or self.config.retrieval.k, filters, mode)

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            from rag.llm import load_generator

            llm = self.config.llm
            self._generator = load_generator(
                llm.name, model=llm.server_model, device=llm.device or self.config.device, backend=llm.backend
            )
        return self._generator

    def context(self, question: str, k: int | None = None, filters: Filters = Filters(),
                mode: str | None = None) -> list[Hit]:
        """The passages the LLM sees: retrieved, near-duplicates dropped, widened to neighbours if configured."""
        r = self.config.retrieval
        k = k or r.k
        hits = self.search(question, 2 * k if r.dedupe < 1 else k, filters, mode)
        if r.dedupe < 1:
            hits = drop_near_duplicates(hits, r.dedupe)[:k]
        return widen(hits, self.store.chunks, r.neighbours)

    def ask(self, question: str, k: int | None = None, filters: Filters = Filters(),
            language: str | None = None) -> Answer:
        stream = self.ask_stream(question, k, filters, language)
        for _ in stream:
            pass
        return stream.answer

    def ask_stream(self, question: str, k: int | None = None, filters: Filters = Filters(),
                   language: str | None = None) -> "AnswerStream":
        """Iterate to receive the answer's text as it is generated; ``.answer`` holds the ``Answer`` afterwards."""
        hits = self.context(question, k, filters)
        return self.answer_stream(question, hits, language=language)

    def answer_stream(self, question: str, hits: list[Hit], max_new_tokens: int | None = None,
                      language: str | None = None) -> "AnswerStream":
        """An answer to ``question`` from these passages (e.g. retrieved by ``context``), streamed, in ``language``
        (default the question's; a rewritten follow-up passes the user's own, which the rewrite may have changed)."""
        llm = self.config.llm
        shown = hits
        if llm.compress and hits:
            from rag.answer.compress import compress

            generator = self.generator
            shown = compress(
                question, hits, self.embedder, llm.context_tokens, lambda text: count_tokens(generator, text)
            )
        return AnswerStream(
            question, hits, self.generator, max_new_tokens or llm.max_new_tokens, llm.check_citations, language, shown,
            query_time(self.embedder),
        )

    def chat(self) -> "Conversation":
        return Conversation(self)

    def info(self) -> dict:
        s = self.store.settings
        docs = self.store.documents()
        return {
            "store": getattr(self.store.chunks, "location", str(self.store.path)),
            "embedder": s.embedder,
            "dim": s.dim,
            "index": s.index,
            "index_options": s.index_options,
            "chunking": s.ingest,
            "documents": len(docs),
            "chunks": self.store.chunks.count(),
            "vectors": len(self.store.index),
            "generation": self.store.chunks.generation,
            "bytes_on_disk": self.store.size_on_disk(),
            "warnings": {d.source: list(d.warnings) for d in docs.values() if d.warnings},
        }


def _embedder(config: Config, name: str) -> Embedder:
    return SentenceTransformerEmbedder(name, device=config.device, dtype=config.embedder_dtype)


def _checked_embedder(store: Store, config: Config, embedder: Embedder | None, where: str) -> Embedder:
    """The embedder to read ``store`` with: the one given or configured, which must be the one that built it; the
    vectors' place must be the configured one too."""
    kept_at = store.settings.index_options.get("uri")
    if config.index.uri is not None and config.index.uri != kept_at:
        store.close()
        raise StoreError(
            f"store {where} keeps its vectors {f'at {kept_at}' if kept_at else 'in its own directory'}, "
            f"not at {config.index.uri}: a store's place is fixed when it is created; drop --uri, or "
            "ingest into a new --store to use that server"
        )
    wanted = embedder.name if embedder is not None else config.embedder
    built_with = store.settings.embedder
    if wanted is not None and wanted != built_with:
        store.close()
        raise StoreError(
            f"store {where} was built with the embedder {built_with!r} (dimension {store.settings.dim}); "
            f"you asked for {wanted!r}. Use --embedder {built_with}, or ingest into a new --store"
        )
    return embedder or _embedder(config, built_with)


def _new_settings(config: Config, embedder: Embedder, index_options: dict) -> StoreSettings:
    return StoreSettings(
        embedder=embedder.name,
        dim=embedder.dim,
        index=config.index.backend,
        index_options=index_options,
        ingest={"chunk_tokens": config.ingest.chunk_tokens, "chunk_overlap": config.ingest.chunk_overlap},
    )


def _index_options(index: IndexConfig) -> dict:
    """What a new store records about its vector backend: FAISS's type, or where a database keeps the vectors."""
    if index.backend == "faiss":
        return {"type": index.faiss_type, "gpu": index.gpu}
    if index.uri is None:
        if index.collection is not None:
            raise ConfigError("index.collection names a collection on a server: give the server with --uri too")
        return {}
    if index.backend not in ("chroma", "milvus"):
        raise ConfigError(f"--uri is for the chroma and milvus backends, not {index.backend!r}")
    return {"uri": index.uri, "collection": index.collection or f"rag_{uuid.uuid4().hex[:16]}"}


@dataclass
class Conversation:
    """A chat over the knowledge base: follow-ups are rewritten with the history before retrieval."""

    kb: KnowledgeBase
    history: list[tuple[str, str]] = field(default_factory=list)

    def standalone(self, question: str) -> str:
        return standalone_question(self.kb.generator, self.history, question)

    def ask_stream(self, question: str, k: int | None = None, filters: Filters = Filters()) -> "AnswerStream":
        """Stream one turn; the turn joins the history once the stream is exhausted."""
        stream = self.kb.ask_stream(self.standalone(question), k, filters, language_of(question))
        stream.on_done = lambda answer: self.history.append((question, answer.text))
        return stream

    def ask(self, question: str, k: int | None = None, filters: Filters = Filters()) -> Answer:
        answer = self.kb.ask(self.standalone(question), k, filters, language_of(question))
        self.history.append((question, answer.text))
        return answer
