"""Commands that build and look after a store: ingest, info, versions, activate, and the shared embedding cache."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from indexes.errors import RagError
from indexes.files import cache_dir
from indexes.versions import activate, version_path
from ingest.embed.cache import EmbeddingCache
from rag.adapt.embedder import versions_table
from rag.cli.options import add_command, json_option, store_options
from rag.devices import devices
from rag.retrieval.rerank import activate_reranker, active_reranker


def register(sub) -> None:
    sp = add_command(sub, "ingest", "add documents (files or folders) to a store, incrementally", _cmd_ingest,
                     creates=lambda args: True)
    sp.add_argument("paths", nargs="+", type=Path)
    store_options(sp)
    sp.add_argument("--index", choices=["faiss", "chroma", "milvus", "numpy"],
                    help="vector backend for a new store (default faiss)")
    sp.add_argument("--uri", help="chroma or milvus: the server holding a new store's vectors (http://host:port)")
    sp.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="read, chunk and embed on the Ray cluster at ADDRESS (host:port); alone: a local one")
    sp.add_argument(
        "--faiss-type", choices=["flat", "hnsw", "ivf"], help="FAISS index type for a new store (default flat)"
    )
    sp.add_argument(
        "--include", action="append", help="glob of files to take (repeatable; default: pdf, md, txt, rst, html)"
    )
    sp.add_argument("--exclude", action="append", help="glob of files to skip (repeatable)")
    sp.add_argument("--chunk-tokens", type=int, help="chunk size in embedder tokens for a new store (default 384)")
    sp.add_argument("--prune", action="store_true", help="remove documents that are gone from the given folders")
    json_option(sp)

    sp = add_command(sub, "info", "describe a store", _cmd_info)
    store_options(sp)
    json_option(sp)

    sp = add_command(sub, "versions", "list the index versions of a store", _cmd_versions)
    store_options(sp)
    sp = add_command(sub, "activate", "switch a store to another index version (rollback), with the reranker that "
                     "version had", _cmd_activate)
    sp.add_argument("version")
    sp.add_argument("--reranker", help="also set that version's trained reranker: a folder name under the store's "
                    "models/ (e.g. reranker-1) or none")
    store_options(sp)

    sp = add_command(
        sub,
        "cache",
        "show the embedding cache (vectors per model), or prune what was not used lately",
        _cmd_cache,
        store=False,
    )
    sp.add_argument(
        "--prune", type=_days, metavar="DAYS", help="delete vectors that no ingest or re-embedding used for DAYS days"
    )


def _cmd_ingest(kb, args) -> int:
    for p in args.paths:
        if not p.exists():
            raise RagError(f"{p} does not exist")
    report = kb.ingest(
        args.paths,
        prune=args.prune,
        progress=sys.stderr.isatty() and not args.json,
        ray=True if args.ray == "local" else args.ray,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "files": [f.__dict__ | {"warnings": list(f.warnings)} for f in report.files],
                    "embedded": report.embedded,
                    "from_cache": report.from_cache,
                    "seconds": round(report.seconds, 2),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "removed", "failed"))
        print(f"{counts}; {report.embedded} chunks embedded, {report.from_cache} from cache, in {report.seconds:.1f}s")
        for f in report.files:
            if f.status == "failed":
                print(f"  FAILED  {f.source}: {f.reason}")
            for w in f.warnings:
                print(f"  warning {f.source}: {w}")
    return 1 if report.failed else 0


def _cmd_info(kb, args) -> int:
    info = kb.info()
    info["devices"] = devices(
        kb.config, kb.store.settings.index, bool(kb.store.settings.index_options.get("gpu")), kb.store.settings.embedder
    )
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
    else:
        for key, value in info.items():
            if key != "warnings":
                print(f"{key:14} {value}")
        for source, warnings in info["warnings"].items():
            for w in warnings:
                print(f"warning        {source}: {w}")
    return 0


def _cmd_versions(kb, args) -> int:
    for v in versions_table(kb.root):
        reranker = f"  reranker {Path(v['reranker']).name}" if v["reranker"] else ""
        print(f"{'*' if v['active'] else ' '} {v['version']:6} {v['embedder']}{reranker}  {v['note']}")
    return 0


def _cmd_activate(kb, args) -> int:
    model = None if args.reranker in (None, "none") else kb.root / "models" / args.reranker
    if model is not None and not model.is_dir():
        raise RagError(f"no trained reranker {args.reranker!r} in {kb.root / 'models'}: see rag versions")
    activate(kb.root, args.version)
    path = version_path(kb.root, args.version)
    if args.reranker is not None:
        activate_reranker(path, model and str(model))
    reranker = active_reranker(path)
    print(f"{args.version} is now active" + (f", reranking with {Path(reranker).name}" if reranker else ""))
    return 0


def _days(text: str) -> float:
    try:
        if (days := float(text)) >= 0:
            return days
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0 or more)")


def _cmd_cache(args) -> int:
    """Without a store: the cache is shared by every store of this user."""
    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    try:

        def size() -> float:  # MB, with the write-ahead log that holds the latest writes
            return (
                sum(
                    p.stat().st_size for p in (cache.path, cache.path.with_name(cache.path.name + "-wal")) if p.exists()
                )
                / 1e6
            )

        before = size()
        if args.prune is not None:
            gone = cache.prune(args.prune)
            print(f"removed {gone} vectors not used in {args.prune:g} days: {before:.1f} MB -> {size():.1f} MB")
            return 0
        print(f"{cache.path}  {before:.1f} MB")
        for model, count, used in cache.models():
            print(f"{count:>9} vectors  last used {datetime.datetime.fromtimestamp(used):%Y-%m-%d}  {model}")
        return 0
    finally:
        cache.close()
