"""``rag share``: copy a store directory into the shared mode (PostgreSQL + a Milvus server)."""

from __future__ import annotations

import sys
from pathlib import Path

from rag.cli.options import add_command


def register(sub) -> None:
    sp = add_command(sub, "share", "copy a store directory into a PostgreSQL database, its vectors onto a Milvus "
                     "server, so several machines can serve and write it (run again to finish a stopped copy)",
                     _cmd_share, store=False)
    sp.add_argument("--store", required=True, type=Path, help="the store directory to copy (only read)")
    sp.add_argument("--db", required=True, metavar="postgresql://...", help="the database to copy it into")
    sp.add_argument("--uri", required=True, metavar="http://HOST:PORT", help="the Milvus server for its vectors")
    sp.add_argument("--name", help="the store's name in the database (default: the directory's name)")


def _cmd_share(args) -> int:
    from indexes.shared.copy import copy_store, stored_vectors
    from indexes.store import Store
    from indexes.versions import active_path

    source = Store.open(active_path(args.store), read_only=True)
    name = args.name or args.store.resolve().name
    try:
        vectors_of = stored_vectors(source) or _embedding(source.settings.embedder)
        copied, kept = copy_store(source, args.db, name, args.uri, vectors_of, progress=sys.stderr.isatty())
    finally:
        source.close()
    print(f"{name}: copied {copied} documents; {kept} were there already. Use it with --db URL --store {name}",
          file=sys.stderr)
    note = local_model_note(source.settings.embedder)
    if note:
        print(note, file=sys.stderr)
    return 0


def local_model_note(embedder: str) -> str | None:
    """What a user must know when the shared store's embedder is a folder on this machine (a fine-tuned version):
    the database records its path, and every machine that searches or writes the store loads it from there."""
    path = Path(embedder)
    if not path.is_dir():
        return None
    return (f"note: its embedder is the folder {path.resolve()} on this machine; every machine that opens this "
            "shared store needs that folder at the same path (copy it there, or share the store from its "
            "original version: rag activate v1 --store DIR)")


def _embedding(embedder_name: str):
    """For a source whose index cannot give its vectors back (Chroma, Milvus): embed the chunks again, through the
    embedding cache."""
    from indexes.files import cache_dir
    from ingest.embed import SentenceTransformerEmbedder
    from ingest.embed.cache import EmbeddingCache
    from ingest.pipeline import embedded_text, model_key

    embedder = SentenceTransformerEmbedder(embedder_name)
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")

    def vectors_of(chunks):
        return cache.embed(model_key(embedder), [embedded_text(c) for c in chunks], embedder.embed_documents)[0]

    return vectors_of
