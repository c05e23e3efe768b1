"""Retrieval quality on the development sets: this project beside the standard LangChain pipeline,
same corpus, same embedding model, same questions, one run.

LangChain: loaders (BSHTMLLoader, PyPDFLoader), RecursiveCharacterTextSplitter(chunk_size=500,
chunk_overlap=50), HuggingFaceEmbeddings, FAISS, top-10 similarity search -- as commonly written,
and once more with the e5 query/passage prompts set, so the model is used as intended on both sides.

    pip install -e '.[bench]'
    python benchmarks/fetch_data.py
    python benchmarks/retrieval_bench.py [--sets python-faq,ctex-faq] [--configs dense,bm25,hybrid,...]
    [--embedder-dtype float32] [--json]
    python benchmarks/retrieval_bench.py --questions benchmarks/questions/crosslingual --sets
    example-corpus,python-faq,ctex-faq --no-langchain

``--questions`` picks another folder of question files, e.g. ``crosslingual/``: the first 26 questions of each
set asked in the other language (Chinese about the English Python FAQ and the English example manual, English
about the Chinese CTeX FAQ and warranty page), same gold phrases; ``--limit 26`` gives the same-language baseline.
``--together`` puts all the sets' documents in one store, as a team with documents in both languages has them:

    python benchmarks/retrieval_bench.py --together --sets python-faq,ctex-faq,example-corpus --configs dense,hybrid
    --no-langchain [--questions benchmarks/questions/crosslingual]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexes.types import Chunk  # noqa: E402
from rag.evaluation import evaluate, format_table, load_questions  # noqa: E402
from rag.types import Hit  # noqa: E402


def langchain_search(folder: Path, model_path: str, prompts: bool):
    from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    docs = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".pdf":
            docs.extend(PyPDFLoader(str(path)).load())
        elif path.suffix == ".html":
            docs.extend(BSHTMLLoader(str(path), bs_kwargs={"features": "html.parser"}).load())
    chunks = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50).split_documents(docs)
    kwargs = {"normalize_embeddings": True}
    emb = HuggingFaceEmbeddings(
        model_name=model_path,
        encode_kwargs={**kwargs, **({"prompt": "passage: "} if prompts else {})},
        query_encode_kwargs={**kwargs, **({"prompt": "query: "} if prompts else {})},
    )
    store = FAISS.from_documents(chunks, emb)

    def search(question: str, k: int) -> list[Hit]:
        out = []
        for rank, (doc, dist) in enumerate(store.similarity_search_with_score(question, k=k), start=1):
            page = doc.metadata.get("page")
            chunk = Chunk(
                rank, doc.metadata.get("source", ""), doc.page_content, 0, 0, page + 1 if page is not None else None
            )
            out.append(Hit(chunk, -float(dist), rank))
        return out

    return search


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    ap.add_argument("--configs", default="dense,bm25,hybrid,hybrid-weighted")
    ap.add_argument("--embedder", default="multilingual-e5-small")
    ap.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct", help="LLM used by the +rerank configuration")
    ap.add_argument("--embedder-dtype", default="auto", help="auto | float32 | bfloat16 (the embedder_dtype setting)")
    ap.add_argument("--questions", type=Path, default=HERE / "questions", help="the folder of SET.jsonl question files")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions of each set")
    ap.add_argument("--no-langchain", action="store_true", help="leave out the LangChain rows")
    ap.add_argument("--together", action="store_true", help="one store of all the sets' documents")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import os

    from indexes.files import cache_dir

    fresh = Path(tempfile.mkdtemp())  # a fresh embedding cache: every vector is computed by this run's embedder
    (fresh / "models").symlink_to(cache_dir() / "models")
    os.environ["RAG_CACHE_DIR"] = str(fresh)

    from ingest.embed.models import inference_dtype, resolve_model_path
    from rag.config import Config, IndexConfig, LLMConfig
    from rag.knowledge_base import KnowledgeBase

    config = Config(embedder=args.embedder, index=IndexConfig(gpu=False), llm=LLMConfig(name=args.judge),
                    embedder_dtype=args.embedder_dtype)
    folders = {name: _folder(name) for name in args.sets.split(",")}
    shared = tempfile.TemporaryDirectory()
    together = KnowledgeBase.open(Path(shared.name) / "store", config) if args.together else None
    if together is not None:
        together.ingest(list(folders.values()), progress=False)
    out = {}
    for name, folder in folders.items():
        questions = load_questions(args.questions / f"{name}.jsonl")[: args.limit or None]
        if together is not None:
            reports = _rag_reports(together, args.configs, questions)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                kb = KnowledgeBase.open(Path(tmp) / "store", config)
                kb.ingest([folder], progress=False)
                reports = _rag_reports(kb, args.configs, questions)
                kb.close()
        if not args.no_langchain:
            model_path = resolve_model_path(args.embedder)
            reports.append(
                evaluate("LangChain (as usually written)", langchain_search(folder, model_path, False), questions)
            )
            reports.append(evaluate("LangChain + e5 prompts", langchain_search(folder, model_path, True), questions))
        out[name] = reports
        if not args.json:
            print(
                f"\n## {name}: {len(questions)} questions, embedder {args.embedder} "
                f"({inference_dtype(args.embedder_dtype, 'cpu')})\n"
            )
            print(format_table(reports))
    if together is not None:
        together.close()
    shared.cleanup()
    if args.json:
        print(json.dumps({n: [r.to_dict() for r in rs] for n, rs in out.items()}, ensure_ascii=False, indent=2))


def _rag_reports(kb, configs: str, questions) -> list:
    from rag.cli import eval_retriever

    reports = []
    for configured in configs.split(","):
        retriever = eval_retriever(kb, configured)
        reports.append(evaluate(f"rag {configured}", lambda q, k, r=retriever: r.search(q, k), questions))
    return reports


def _folder(name: str) -> Path:
    folder = HERE.parent / "examples" / "corpus" if name == "example-corpus" else HERE / "data" / name
    if not folder.exists():
        raise SystemExit(f"{folder} is missing: run `python benchmarks/fetch_data.py` first")
    return folder


if __name__ == "__main__":
    main()
