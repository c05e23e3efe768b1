"""The ``rag`` command line. Each module registers its own commands: ``store`` (ingest, info, versions, activate,
cache), ``query`` (search, ask, chat, eval), ``adapt`` (finetune embedder, finetune llm), ``serve`` (serve, keys) and
``connect`` (mcp, watch) and ``share`` (share). Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from indexes.errors import RagError
from rag.cli import adapt, connect, query, serve, share, store
from rag.cli.options import config_of
from rag.cli.query import eval_retriever
from rag.knowledge_base import KnowledgeBase

__all__ = ["eval_retriever", "main"]

_NOISY = ("sentence_transformers", "transformers", "chromadb", "httpx", "pypdf", "bm25s", "datasets")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description="Offline retrieval-augmented generation over your documents.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (store, query, adapt, serve, connect, share):
        module.register(sub)
    return p


def _quiet_libraries(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        for noisy in _NOISY:
            logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("ingest.embed.onnx").setLevel(logging.INFO)  # its one-off export says what the wait is


def _run(args: argparse.Namespace) -> int:
    if not args.opens_store:
        return args.run(args)
    kb = KnowledgeBase.open(args.store, config_of(args), create=args.creates(args))
    try:
        return args.run(kb, args)
    finally:
        kb.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        return _run(args)
    except RagError as exc:
        print(f"rag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rag ... | head`: the reader has all it wanted
        try:  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0
