"""Milvus' own BM25 full-text search beside ours, on the development sets, one run.

Both index the same chunks (the text each chunk is searched by: heading path and text) of the stores that
`retrieval_bench.py` builds; Milvus (milvus-lite) uses its BM25 function with an analyzer for the Python
FAQ (standard tokenizer, lowercased) and the jieba tokenizer for the CTeX FAQ. Printed: nDCG@10 of BM25 alone and of
hybrid (RRF with the
same dense side), ours against Milvus'.

    python benchmarks/fetch_data.py
    python benchmarks/milvus_bm25_bench.py [--sets python-faq,ctex-faq]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# milvus-lite knows the "standard" and "jieba" tokenizers (its error message says so); Milvus' "english" and
# "chinese" analyzers are these plus filters
ANALYZERS = {"python-faq": {"tokenizer": "standard", "filter": ["lowercase"]}, "ctex-faq": {"tokenizer": "jieba"}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="python-faq,ctex-faq")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from indexes.text import search_text
    from rag.cli import eval_retriever
    from rag.config import Config, IndexConfig
    from rag.evaluation import evaluate, load_questions
    from rag.knowledge_base import KnowledgeBase
    from rag.retrieval import rrf
    from rag.types import Hit

    print("| set | BM25 | nDCG@10 BM25 alone | nDCG@10 hybrid (RRF with dense) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            questions = load_questions(HERE / "questions" / f"{name}.jsonl")
            kb = KnowledgeBase.open(Path(tmp) / name, Config(index=IndexConfig(gpu=False)))
            kb.ingest([HERE / "data" / name], progress=False)
            chunks = {c.id: c for source in kb.store.documents() for c in kb.store.chunks.chunks_of(source)}
            client = MilvusClient(str(Path(tmp) / f"{name}.db"))
            schema = client.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field(
                "text", DataType.VARCHAR, max_length=65535, enable_analyzer=True, analyzer_params=ANALYZERS[name]
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
            params = client.prepare_index_params()
            params.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            client.create_collection("chunks", schema=schema, index_params=params)
            client.insert("chunks", [{"id": i, "text": search_text(c.headings, c.text)} for i, c in chunks.items()])

            def milvus_bm25(question: str, k: int) -> list[Hit]:
                found = client.search(
                    "chunks",
                    data=[question],
                    anns_field="sparse",
                    limit=k,
                    search_params={"metric_type": "BM25"},
                    output_fields=["id"],
                )[0]
                return [Hit(chunks[int(h["id"])], float(h["distance"]), r) for r, h in enumerate(found, 1)]

            dense, ours = eval_retriever(kb, "dense"), eval_retriever(kb, "bm25")
            candidates = kb.config.retrieval.candidates

            def hybrid_with(lexical):
                def search(question: str, k: int) -> list[Hit]:
                    sides = [
                        [(h.chunk, h.score) for h in side(question, candidates)] for side in (dense.search, lexical)
                    ]
                    fused = rrf(sides, kb.config.retrieval.rrf_k)[:k]
                    return [Hit(c, s, r) for r, (c, s) in enumerate(fused, 1)]

                return search

            runs = {
                "ours (bm25s)": lambda q, k: ours.search(q, k),
                f"Milvus BM25 function ({ANALYZERS[name]['tokenizer']} tokenizer)": milvus_bm25,
            }
            for label, lexical in runs.items():
                alone = evaluate(label, lexical, questions).metrics["ndcg@10"]
                fused = evaluate(label, hybrid_with(lexical), questions).metrics["ndcg@10"]
                print(f"| {name} | {label} | {alone:.3f} | {fused:.3f} |", flush=True)
            client.close()
            kb.close()


if __name__ == "__main__":
    main()
