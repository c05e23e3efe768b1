"""What the commands share: registering a command, the store and query options, the config they make."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rag.config import Config, apply_overrides, load_config
from rag.retrieval import Filters

# command-line option -> setting it overrides
_SETTINGS = (("embedder", "embedder"), ("device", "device"), ("llm", "llm.name"), ("k", "retrieval.k"),
             ("mode", "retrieval.mode"), ("index", "index.backend"), ("uri", "index.uri"),
             ("faiss_type", "index.faiss_type"), ("chunk_tokens", "ingest.chunk_tokens"), ("db", "db"))


def add_command(sub, name: str, help: str, run: Callable, *, store: bool = True,
                creates: Callable[[argparse.Namespace], bool] = lambda args: False) -> argparse.ArgumentParser:
    """A subcommand that runs ``run(kb, args)`` on an opened store (``store``; a new one when ``creates(args)``), or
    ``run(args)`` without one."""
    sp = sub.add_parser(name, help=help, description=help)
    sp.set_defaults(run=run, opens_store=store, creates=creates)
    return sp


def config_options(sp: argparse.ArgumentParser, example: str = "retrieval.k=8") -> None:
    sp.add_argument("--config", type=Path, help="TOML config file")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a setting, e.g. --set {example} (repeatable)")


def store_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--store", required=True, type=Path, help="store directory (with --db: the store's name)")
    sp.add_argument("--db", metavar="postgresql://...",
                    help="keep the store in this PostgreSQL database, its vectors on Milvus: several machines share it")
    config_options(sp)
    sp.add_argument("--embedder", help="embedder preset, folder or hub id (default: the store's own)")
    sp.add_argument("--device", help="torch device, e.g. cpu or cuda")


def query_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-k", type=int, help="passages to retrieve (default 5)")
    sp.add_argument("--mode", choices=["dense", "bm25", "hybrid"], help="retrieval mode (default hybrid)")
    sp.add_argument("--source", help="only sources matching this glob, e.g. '*.pdf' or '*/manuals/*'")
    sp.add_argument("--page-min", type=int)
    sp.add_argument("--page-max", type=int)


def json_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help="print the result as JSON")


def config_of(args: argparse.Namespace) -> Config:
    """The config file with ``--set`` and the command's own options applied, in that order."""
    sets = list(args.overrides)
    for attr, key in _SETTINGS:
        value = getattr(args, attr, None)
        if value is not None:
            sets.append(f"{key}={value}")
    cfg = apply_overrides(load_config(args.config, []), sets)
    for attr in ("include", "exclude"):
        if getattr(args, attr, None):
            cfg = apply_overrides(cfg, [f"ingest.{attr}=" + ",".join(getattr(args, attr))])
    return cfg


def filters_of(args: argparse.Namespace) -> Filters:
    return Filters(source=args.source, page_min=args.page_min, page_max=args.page_max)


def where(source: str, pages: str) -> str:
    return source + (f" p.{pages}" if pages else "")
