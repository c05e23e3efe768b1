"""The ``rag`` command line: ingest, search, ask, chat, info. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from indexes.errors import RagError
from rag.config import Config, apply_overrides, load_config
from rag.retrieval import Filters


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description="Offline retrieval-augmented generation over your documents.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--store", required=True, type=Path, help="store directory")
        sp.add_argument("--config", type=Path, help="TOML config file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set retrieval.k=8 (repeatable)")
        sp.add_argument("--embedder", help="embedder preset, folder or hub id (default: the store's own)")
        sp.add_argument("--device", help="torch device, e.g. cpu or cuda")

    def query_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-k", type=int, help="passages to retrieve (default 5)")
        sp.add_argument("--mode", choices=["dense", "bm25", "hybrid"], help="retrieval mode (default hybrid)")
        sp.add_argument("--source", help="only sources matching this glob, e.g. '*.pdf' or '*/manuals/*'")
        sp.add_argument("--page-min", type=int)
        sp.add_argument("--page-max", type=int)

    sp = sub.add_parser("ingest", help="add documents (files or folders) to a store, incrementally")
    sp.add_argument("paths", nargs="+", type=Path)
    common(sp)
    sp.add_argument("--index", choices=["faiss", "chroma", "milvus", "numpy"], help="vector backend for a new store (default faiss)")
    sp.add_argument("--uri", help="chroma or milvus: the server holding a new store's vectors (http://host:port)")
    sp.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="read, chunk and embed on the Ray cluster at ADDRESS (host:port); alone: a local one")
    sp.add_argument("--faiss-type", choices=["flat", "hnsw", "ivf"], help="FAISS index type for a new store (default flat)")
    sp.add_argument("--include", action="append", help="glob of files to take (repeatable; default: pdf, md, txt, rst, html)")
    sp.add_argument("--exclude", action="append", help="glob of files to skip (repeatable)")
    sp.add_argument("--chunk-tokens", type=int, help="chunk size in embedder tokens for a new store (default 384)")
    sp.add_argument("--prune", action="store_true", help="remove documents that are gone from the given folders")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")

    sp = sub.add_parser("search", help="print the best passages for a question")
    sp.add_argument("question")
    common(sp)
    query_opts(sp)
    sp.add_argument("--json", action="store_true")

    for name, help_ in (("ask", "answer a question from the store, with citations"), ("chat", "a conversation over the store")):
        sp = sub.add_parser(name, help=help_)
        if name == "ask":
            sp.add_argument("question")
            sp.add_argument("--json", action="store_true")
        common(sp)
        query_opts(sp)
        sp.add_argument("--llm", help="preset, .gguf file, model or LoRA adapter folder, hub id, http(s) endpoint, or 'extractive'")

    sp = sub.add_parser("eval", help="measure retrieval on a JSONL question file (Recall@k, MRR, nDCG)")
    sp.add_argument("questions", type=Path)
    common(sp)
    sp.add_argument("--corpus", type=Path, action="append", help="ingest these documents first (incremental)")
    sp.add_argument("--configs", default="dense,bm25,hybrid,hybrid-weighted",
                    help="comma-separated configurations to compare: " + ", ".join(EVAL_CONFIGS))
    sp.add_argument("--failures", type=int, default=5, help="failed questions to show per configuration")
    sp.add_argument("--json", action="store_true")

    sp = sub.add_parser("cache", help="show the embedding cache (vectors per model), or prune what was not used lately")
    sp.add_argument("--prune", type=_days, metavar="DAYS", help="delete vectors that no ingest or re-embedding used for DAYS days")

    sp = sub.add_parser("finetune", help="adapt the embedder to this store's documents (local questions, training, re-embedding)")
    sp.add_argument("what", choices=["embedder", "llm"])
    common(sp)
    sp.add_argument("--chunks", type=int, default=500, help="chunks to write training questions for (default 500)")
    sp.add_argument("--question-llm", default="qwen2.5-coder-0.5b-instruct", help="LLM that writes the questions")
    sp.add_argument("--epochs", type=int, default=1, help="passes over the training data")
    sp.add_argument("--lr", type=float, default=3e-5, help="embedder: learning rate")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--from", dest="start_from", metavar="MODEL",
                    help="embedder: model to train, a version (e.g. v1, the original) or model; default the active one")
    sp.add_argument("--mini-batch", type=int, help="embedder: cached MNRL with this mini-batch, for batches larger than memory")
    sp.add_argument("--matryoshka", help="embedder: Matryoshka dimensions, e.g. 384,256,128")
    sp.add_argument("--merge", type=float, default=1.0,
                    help="embedder: share of the trained weights kept, the rest from the original (1 = plain fine-tuning)")
    sp.add_argument("--hard-negatives", type=int, default=1,
                    help="embedder: hard negatives per question, mined with the current model (0 = none)")
    sp.add_argument("--activate", action="store_true", help="switch to the new index version if nDCG@10 improved")
    sp.add_argument("--questions", type=Path,
                    help="embedder: your own questions (rag eval format); when given, they decide the switch")
    sp.add_argument("--force", action="store_true", help="switch to the new version whatever the result")
    sp.add_argument("--examples", type=Path, help="llm: JSONL of question/answer(/gold); default: made from the corpus")
    sp.add_argument("--base", default="qwen2.5-coder-0.5b-instruct", help="llm: the model the LoRA adapter is trained on")
    sp.add_argument("--max-examples", type=int, default=120, help="llm: examples made from the corpus")
    sp.add_argument("--json", action="store_true")

    sp = sub.add_parser("versions", help="list the index versions of a store")
    common(sp)
    sp = sub.add_parser("activate", help="switch a store to another index version (rollback)")
    sp.add_argument("version")
    common(sp)

    sp = sub.add_parser("serve", help="serve every store under a root folder over HTTP (OpenAI-compatible API + REST)")
    sp.add_argument("--root", required=True, type=Path, help="folder whose sub-folders are the collections (created if new)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need API keys)")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--config", type=Path, help="TOML config file")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set llm.name=extractive (repeatable)")
    sp.add_argument("--llm", help="LLM for answers (default: the config's)")
    sp.add_argument("--max-upload-mb", type=float, default=100.0, help="largest file accepted (default 100 MB)")
    sp.add_argument("--cors", action="append", default=[], metavar="ORIGIN", help="allow browser calls from this origin")

    sp = sub.add_parser("keys", help="API keys of a server root: create (printed once), list, revoke")
    sp.add_argument("action", choices=["create", "list", "revoke"])
    sp.add_argument("key_id", nargs="?", help="revoke: the key's id (from `rag keys list`)")
    sp.add_argument("--root", required=True, type=Path)
    sp.add_argument("--name", default="", help="create: a label, e.g. who uses the key")
    sp.add_argument("--scopes", default="read", help="create: read, ingest and/or admin, comma-separated (default read)")
    sp.add_argument("--collections", default="", help="create: the only collections the key may use (default all)")

    sp = sub.add_parser("info", help="describe a store")
    common(sp)
    sp.add_argument("--json", action="store_true")
    return p


def _config(args) -> Config:
    sets = list(args.overrides)
    for attr, key in (("embedder", "embedder"), ("device", "device"), ("llm", "llm.name"), ("k", "retrieval.k"), ("mode", "retrieval.mode"),
                      ("index", "index.backend"), ("uri", "index.uri"), ("faiss_type", "index.faiss_type"), ("chunk_tokens", "ingest.chunk_tokens")):
        value = getattr(args, attr, None)
        if value is not None:
            sets.append(f"{key}={value}")
    cfg = load_config(args.config, [])
    cfg = apply_overrides(cfg, sets)
    if getattr(args, "include", None):
        cfg = apply_overrides(cfg, ["ingest.include=" + ",".join(args.include)])
    if getattr(args, "exclude", None):
        cfg = apply_overrides(cfg, ["ingest.exclude=" + ",".join(args.exclude)])
    return cfg


def _filters(args) -> Filters:
    return Filters(source=args.source, page_min=args.page_min, page_max=args.page_max)


def _where(source: str, pages: str) -> str:
    return source + (f" p.{pages}" if pages else "")


def _cmd_ingest(kb, args) -> int:
    for p in args.paths:
        if not p.exists():
            raise RagError(f"{p} does not exist")
    report = kb.ingest(args.paths, prune=args.prune, progress=sys.stderr.isatty() and not args.json,
                       ray=True if args.ray == "local" else args.ray)
    if args.json:
        print(json.dumps({"files": [f.__dict__ | {"warnings": list(f.warnings)} for f in report.files],
                          "embedded": report.embedded, "from_cache": report.from_cache, "seconds": round(report.seconds, 2)},
                         ensure_ascii=False, indent=2))
    else:
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("added", "updated", "unchanged", "removed", "failed"))
        print(f"{counts}; {report.embedded} chunks embedded, {report.from_cache} from cache, in {report.seconds:.1f}s")
        for f in report.files:
            if f.status == "failed":
                print(f"  FAILED  {f.source}: {f.reason}")
            for w in f.warnings:
                print(f"  warning {f.source}: {w}")
    return 1 if report.failed else 0


def _cmd_search(kb, args) -> int:
    hits = kb.search(args.question, args.k, _filters(args))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no results")
    for h in hits:
        path = " > ".join(h.chunk.headings)
        print(f"[{h.rank}] {h.score:.3f}  {_where(h.chunk.source, h.chunk.pages)}" + (f"  ({path})" if path else ""))
        print("    " + " ".join(h.chunk.text.split())[:300])
    return 0


def _print_sources(answer) -> None:
    if answer.citations:
        print("\nSources:")
        for c in answer.citations:
            print(f"  [{c.number}] {_where(c.source, c.pages)}")
    if answer.answered and answer.unsupported:
        print("\nNo passage says this in these words (it may in another language); check before relying on it:")
        for sentence in answer.unsupported:
            print(f"  - {sentence}")


def _load_llm_meanwhile(kb) -> None:
    """A llama.cpp LLM loads in a thread while the question is embedded and its passages found: its load is native
    code that leaves the interpreter free (a transformers load would only contend for it)."""
    import threading

    from rag.llm import LlamaCppGenerator

    if isinstance(kb.generator, LlamaCppGenerator):
        threading.Thread(target=kb.generator.load, name="load-llm", daemon=True).start()


def _cmd_ask(kb, args) -> int:
    _load_llm_meanwhile(kb)
    stream = kb.ask_stream(args.question, args.k, _filters(args))
    if args.json:
        for _ in stream:
            pass
        print(json.dumps(stream.answer.to_dict(), ensure_ascii=False, indent=2))
        return 0
    if sys.stdout.isatty():
        _stream_to_terminal(stream)
    else:
        for _ in stream:
            pass
        print(stream.answer.text)
    _print_sources(stream.answer)
    return 0


def _stream_to_terminal(stream) -> None:
    """The model's words as they come; when the citation check then cited other passages than the model did (a
    number fixed, added or dropped) or said NOT_FOUND in words, the checked answer follows, so the numbers shown last
    are the ones the sources list."""
    from rag.generation import cited_numbers, says_not_found

    raw = []
    for piece in stream:
        raw.append(piece)
        print(piece, end="", flush=True)
    print()
    text = "".join(raw)
    if sorted(cited_numbers(text)) != sorted(cited_numbers(stream.answer.text)) or says_not_found(text):
        print(f"Checked: {stream.answer.text}")


def _cmd_chat(kb, args) -> int:
    _load_llm_meanwhile(kb)
    conv = kb.chat()
    print("Ask a question (empty line or Ctrl-D to quit).")
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if not question:
            break
        stream = conv.ask_stream(question, args.k, _filters(args))
        _stream_to_terminal(stream)
        _print_sources(stream.answer)
    return 0


EVAL_CONFIGS = {
    "dense": {"mode": "dense"},
    "bm25": {"mode": "bm25"},
    "hybrid": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid-weighted": {"mode": "hybrid", "fusion": "weighted"},
    "hybrid+rerank": {"mode": "hybrid", "fusion": "rrf", "rerank": True},
}


def eval_retriever(kb, config: str):
    """The retriever one ``rag eval`` configuration names; ``+rerank`` uses retrieval.rerank (default: the LLM judge)."""
    import dataclasses

    from rag.rerank import load_reranker
    from rag.retrieval import Retriever

    options = dict(EVAL_CONFIGS[config])
    reranker = None
    if options.pop("rerank", False):
        spec = kb.config.retrieval.rerank if kb.config.retrieval.rerank != "none" else "llm"
        reranker = load_reranker(spec, lambda: kb.generator, kb.config.device)
    settings = dataclasses.replace(kb.retriever.settings, **options)
    return Retriever(kb.store, kb.embedder, settings, reranker, kb.config.retrieval.rerank_top)


def _cmd_eval(kb, args) -> int:
    from rag.evaluation import evaluate, format_table, load_questions

    questions = load_questions(args.questions)
    if args.corpus:
        report = kb.ingest(args.corpus, progress=sys.stderr.isatty())
        print(f"ingested: {report.count('added')} added, {report.count('updated')} updated, "
              f"{report.count('unchanged')} unchanged, {report.count('failed')} failed", file=sys.stderr)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in EVAL_CONFIGS]
    if unknown:
        raise RagError(f"unknown eval configuration(s) {', '.join(unknown)}: choose from {', '.join(EVAL_CONFIGS)}")
    reports = []
    for name in names:
        retriever = eval_retriever(kb, name)
        reports.append(evaluate(name, lambda q, k, r=retriever: r.search(q, k), questions))
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=2))
        return 0
    print(f"{len(questions)} questions, store {args.store} ({kb.store.chunks.count()} chunks, {kb.store.settings.embedder})")
    print(format_table(reports))
    for r in reports:
        if r.failures and args.failures:
            print(f"\n{r.name}: {len(r.failures)} not found in the top 10, e.g.")
            for f in r.failures[: args.failures]:
                print(f"  - {f.question.question}  [gold: {f.question.gold or f.question.source}]")
                for seen in f.retrieved[:2]:
                    print(f"      got {seen}")
    return 0


def _dims(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise RagError(f"--matryoshka takes dimensions separated by commas, e.g. 384,256,128 (got {text!r})") from None


def _cmd_finetune(kb, args) -> int:
    if args.what == "llm":
        return _finetune_llm(kb, args)
    from rag.finetune import FinetuneOptions, finetune_embedder

    options = FinetuneOptions(chunks=args.chunks, llm=args.question_llm, epochs=args.epochs, batch_size=args.batch_size,
                              learning_rate=args.lr, merge=args.merge, mini_batch=args.mini_batch,
                              matryoshka=_dims(args.matryoshka), questions=args.questions,
                              hard_negatives=args.hard_negatives, activate=args.activate, force=args.force,
                              start_from=args.start_from,
                              progress=sys.stderr.isatty())
    result = finetune_embedder(kb, options, report=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"new index version {result.version}, model {result.model}")
    print(f"{result.train_questions} training questions, {result.heldout_questions} held out (by document)")
    metrics = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
    print(f"{result.mode + ' retrieval':26}" + "".join(f"{m:>11}" for m in metrics))
    rows = [("held-out synthetic, before", result.before), ("held-out synthetic, after", result.after)]
    if result.questions_before is not None:
        rows += [(f"{args.questions.name}, before", result.questions_before), (f"{args.questions.name}, after", result.questions_after)]
    for name, m in rows:
        print(f"{name[:26]:26}" + "".join(f"{m[c]:>11.3f}" for c in metrics))
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    print(f"{'activated' if result.activated else 'not activated'}: `rag activate {result.version}` switches, `rag versions` lists")
    return 0


def _finetune_llm(kb, args) -> int:
    from rag.finetune_llm import LLMFinetuneOptions, finetune_llm

    options = LLMFinetuneOptions(base=args.base, examples=args.max_examples, epochs=args.epochs, progress=sys.stderr.isatty())
    result = finetune_llm(kb, options, args.examples, report=lambda msg: print(msg, file=sys.stderr))
    if args.json:
        print(json.dumps(result.__dict__, ensure_ascii=False, indent=2))
        return 0
    print(f"adapter {result.adapter} ({result.train_examples} training examples, {result.heldout_examples} held out)")
    for name, m in (("before", result.before), ("after", result.after)):
        print(f"{name:7} answer contains gold {m['contains_gold']:.2f}, cites the right passage {m['cites_gold_passage']:.2f}, "
              f"pastes the context back {m['echoes_context']:.2f}")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
    print(f"use it with: rag ask QUESTION --store {args.store} --llm {result.adapter}")
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
    import datetime

    from indexes.files import cache_dir
    from ingest.embed.cache import EmbeddingCache

    cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    try:
        def size() -> float:  # MB, with the write-ahead log that holds the latest writes
            return sum(p.stat().st_size for p in (cache.path, cache.path.with_name(cache.path.name + "-wal")) if p.exists()) / 1e6

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


def _cmd_versions(kb, args) -> int:
    from rag.finetune import versions_table

    for v in versions_table(kb.root):
        print(f"{'*' if v['active'] else ' '} {v['version']:6} {v['embedder']}  {v['note']}")
    return 0


def _cmd_activate(kb, args) -> int:
    from indexes.versions import activate

    activate(kb.root, args.version)
    print(f"{args.version} is now active")
    return 0


def _cmd_serve(args) -> int:
    from indexes.errors import require
    from rag.serve.db import ServerDB
    from rag.serve.settings import ServeSettings, is_loopback

    uvicorn = require("uvicorn", "server")
    cfg = apply_overrides(load_config(args.config, []), list(args.overrides) + ([f"llm.name={args.llm}"] if args.llm else []))
    args.root.mkdir(parents=True, exist_ok=True)
    if not is_loopback(args.host):
        db = ServerDB(args.root)
        has_keys = db.keys_enabled()
        db.close()
        if not has_keys:
            raise RagError(f"refusing to listen on {args.host} without API keys: create one with "
                           f"`rag keys create --root {args.root} --scopes admin`, or serve on 127.0.0.1")
    from rag.serve.app import create_app

    settings = ServeSettings(root=args.root, config=cfg, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                             cors_origins=tuple(args.cors))
    app = create_app(settings)
    logging.getLogger("rag.serve.access").setLevel(logging.INFO)
    print(f"serving {args.root} on http://{args.host}:{args.port} (API docs at /docs, OpenAI base URL /v1)", file=sys.stderr)
    # a streamed answer keeps its connection open: on SIGTERM, finish within a few seconds rather than wait for it
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


def _cmd_keys(args) -> int:
    from rag.serve.db import ServerDB
    from rag.serve.keys import create_key

    args.root.mkdir(parents=True, exist_ok=True)
    db = ServerDB(args.root)
    try:
        if args.action == "create":
            scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
            collections = [x.strip() for x in args.collections.split(",") if x.strip()]
            key_id, token = create_key(db, args.name, scopes, collections)
            print(token)
            print(f"key {key_id}: scopes {', '.join(scopes)}; collections {', '.join(collections) or 'all'}. "
                  "The key is shown this once; it is stored hashed.", file=sys.stderr)
        elif args.action == "list":
            for k in db.keys():
                state = "revoked" if k["revoked"] else "active"
                print(f"{k['id']}  {state:7}  {','.join(k['scopes']):18} {','.join(k['collections']) or 'all':20} {k['name']}")
        else:
            if not args.key_id:
                raise RagError("rag keys revoke needs the key's id: see `rag keys list`")
            if not db.revoke_key(args.key_id):
                raise RagError(f"no key {args.key_id!r}: see `rag keys list`")
            print(f"{args.key_id} revoked")
        return 0
    finally:
        db.close()


def _cmd_info(kb, args) -> int:
    from rag.devices import devices

    info = kb.info()
    info["devices"] = devices(kb.config, kb.store.settings.index, bool(kb.store.settings.index_options.get("gpu")),
                              kb.store.settings.embedder)
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


COMMANDS = {"activate": _cmd_activate, "finetune": _cmd_finetune, "versions": _cmd_versions, "eval": _cmd_eval, "ingest": _cmd_ingest, "search": _cmd_search, "ask": _cmd_ask, "chat": _cmd_chat, "info": _cmd_info}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        for noisy in ("sentence_transformers", "transformers", "chromadb", "httpx", "pypdf", "bm25s", "datasets"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("ingest.embed.onnx").setLevel(logging.INFO)  # its one-off export says what the wait is
    from rag.knowledge_base import KnowledgeBase

    try:
        if args.command == "cache":
            return _cmd_cache(args)
        if args.command in ("serve", "keys"):
            return (_cmd_serve if args.command == "serve" else _cmd_keys)(args)
        cfg = _config(args)
        creating = args.command == "ingest" or (args.command == "eval" and bool(args.corpus))
        kb = KnowledgeBase.open(args.store, cfg, create=creating)
        try:
            return COMMANDS[args.command](kb, args)
        finally:
            kb.close()
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


if __name__ == "__main__":
    sys.exit(main())
