"""Commands that use a store: search, ask, chat, and eval (retrieval measured on a question file)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from pathlib import Path

from indexes.errors import RagError
from rag.answer.generation import cited_numbers, says_not_found
from rag.cli.options import add_command, filters_of, json_option, query_options, store_options, where
from rag.evaluation import evaluate, format_table, load_questions
from rag.llm import LlamaCppGenerator
from rag.retrieval import Retriever
from rag.retrieval.rerank import load_reranker

EVAL_CONFIGS = {
    "dense": {"mode": "dense"},
    "bm25": {"mode": "bm25"},
    "hybrid": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid-weighted": {"mode": "hybrid", "fusion": "weighted"},
    "hybrid+rerank": {"mode": "hybrid", "fusion": "rrf", "rerank": True},
}
_LLM_HELP = "preset, .gguf file, model or LoRA adapter folder, hub id, http(s) endpoint, or 'extractive'"


def register(sub) -> None:
    sp = add_command(sub, "search", "print the best passages for a question", _cmd_search)
    sp.add_argument("question")
    store_options(sp)
    query_options(sp)
    json_option(sp)

    sp = add_command(sub, "ask", "answer a question from the store, with citations", _cmd_ask)
    sp.add_argument("question")
    json_option(sp)
    store_options(sp)
    query_options(sp)
    sp.add_argument("--llm", help=_LLM_HELP)

    sp = add_command(sub, "chat", "a conversation over the store", _cmd_chat)
    store_options(sp)
    query_options(sp)
    sp.add_argument("--llm", help=_LLM_HELP)

    sp = add_command(sub, "eval", "measure retrieval on a JSONL question file (Recall@k, MRR, nDCG)", _cmd_eval,
                     creates=lambda args: bool(args.corpus))
    sp.add_argument("questions", type=Path)
    store_options(sp)
    sp.add_argument("--corpus", type=Path, action="append", help="ingest these documents first (incremental)")
    sp.add_argument("--configs", default="dense,bm25,hybrid,hybrid-weighted",
                    help="comma-separated configurations to compare: " + ", ".join(EVAL_CONFIGS))
    sp.add_argument("--failures", type=int, default=5, help="failed questions to show per configuration")
    json_option(sp)


def _cmd_search(kb, args) -> int:
    hits = kb.search(args.question, args.k, filters_of(args))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no results")
    for h in hits:
        path = " > ".join(h.chunk.headings)
        print(f"[{h.rank}] {h.score:.3f}  {where(h.chunk.source, h.chunk.pages)}" + (f"  ({path})" if path else ""))
        print("    " + " ".join(h.chunk.text.split())[:300])
    return 0



def _print_sources(answer) -> None:
    if answer.citations:
        print("\nSources:")
        for c in answer.citations:
            print(f"  [{c.number}] {where(c.source, c.pages)}")
    if answer.answered and answer.unsupported:
        print("\nNo passage was found to say this; check before relying on it:")
        for sentence in answer.unsupported:
            print(f"  - {sentence}")



def _load_llm_meanwhile(kb) -> None:
    """A llama.cpp LLM loads in a thread while the question is embedded and its passages found: its load is native
    code that leaves the interpreter free (a transformers load would only contend for it)."""
    if isinstance(kb.generator, LlamaCppGenerator):
        threading.Thread(target=kb.generator.load, name="load-llm", daemon=True).start()



def _cmd_ask(kb, args) -> int:
    _load_llm_meanwhile(kb)
    stream = kb.ask_stream(args.question, args.k, filters_of(args))
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
        stream = conv.ask_stream(question, args.k, filters_of(args))
        _stream_to_terminal(stream)
        _print_sources(stream.answer)
    return 0



def eval_retriever(kb, config: str):
    """The retriever one ``rag eval`` configuration names; ``+rerank`` uses retrieval.rerank (default: the LLM
    judge)."""
    options = dict(EVAL_CONFIGS[config])
    reranker = None
    if options.pop("rerank", False):
        spec = kb.config.retrieval.rerank if kb.config.retrieval.rerank not in ("none", "auto") else "llm"
        reranker = load_reranker(spec, lambda: kb.generator, kb.config.device)
    settings = dataclasses.replace(kb.retriever.settings, **options)
    return Retriever(kb.store, kb.embedder, settings, reranker, kb.config.retrieval.rerank_top)


def _cmd_eval(kb, args) -> int:
    questions = load_questions(args.questions)
    if args.corpus:
        report = kb.ingest(args.corpus, progress=sys.stderr.isatty())
        print(
            f"ingested: {report.count('added')} added, {report.count('updated')} updated, "
            f"{report.count('unchanged')} unchanged, {report.count('failed')} failed",
            file=sys.stderr,
        )
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
    print(
        f"{len(questions)} questions, store {args.store} ({kb.store.chunks.count()} chunks, "
        f"{kb.store.settings.embedder})"
    )
    print(format_table(reports))
    for r in reports:
        if r.failures and args.failures:
            print(f"\n{r.name}: {len(r.failures)} not found in the top 10, e.g.")
            for f in r.failures[: args.failures]:
                print(f"  - {f.question.question}  [gold: {f.question.gold or f.question.source}]")
                for seen in f.retrieved[:2]:
                    print(f"      got {seen}")
    return 0
