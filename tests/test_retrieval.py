"""BM25, fusion, reranking, context assembly and the evaluation harness."""

from __future__ import annotations

import json

import pytest

from indexes.errors import ConfigError
from indexes.text import tokenize
from indexes.types import Chunk
from rag.config import Config, IndexConfig
from rag.evaluation import Question, evaluate, is_relevant, load_questions
from rag.knowledge_base import KnowledgeBase
from rag.retrieval import RetrievalSettings, lexical_weight, rrf, weighted
from rag.retrieval.context import drop_near_duplicates, merge_chunks, widen
from rag.retrieval.rerank import rerank
from rag.types import Hit


def _hit(i: int, text: str, score: float = 1.0, source: str = "/d/a.md", start: int = 0) -> Hit:
    return Hit(Chunk(i, source, text, start, start + len(text)), score, i)


def test_chinese_is_tokenised_into_characters_and_bigrams_and_english_is_stemmed():
    zh = tokenize("如何使首段段首也缩进？")
    assert "缩进" in zh and "首段" in zh and "缩" in zh and "？" not in zh
    assert tokenize("Deleting the files") == ["delet", "file"]  # stop word dropped, stems
    assert tokenize("⾃然语言") == tokenize("自然语言")  # NFKC before tokenising
    mixed = tokenize("使用 indentfirst 宏包")
    assert "indentfirst" in mixed and "宏包" in mixed


@pytest.fixture
def kb(corpus, tmp_path, hash_embedder):
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    kb.ingest([corpus], progress=False)
    yield kb
    kb.close()


def test_bm25_follows_changes_and_prunes(kb, corpus):
    top = kb.search("E07 water pressure", k=1, mode="bm25")[0]
    assert "E07" in top.chunk.text
    manual = corpus / "aurora-manual.md"
    manual.write_text(manual.read_text().replace("E07", "E77"))
    kb.ingest([corpus], progress=False)
    assert all("E07" not in h.chunk.text for h in kb.search("E07", k=5, mode="bm25"))
    assert "E77" in kb.search("E77", k=1, mode="bm25")[0].chunk.text
    (corpus / "quick-start.txt").unlink()
    kb.ingest([corpus], prune=True, progress=False)
    assert all("quick-start" not in h.chunk.source for h in kb.search("factory reset Wi-Fi button", k=10, mode="bm25"))
    assert len(kb.store.lexical) == kb.store.chunks.count()


def test_bm25_chinese_query_finds_chinese_text_and_respects_filters(kb):
    from rag.retrieval import Filters

    top = kb.search("售后热线电话", k=1, mode="bm25")[0]
    assert "400-820-1234" in top.chunk.text
    only_html = kb.search("售后热线电话 warranty", k=5, mode="bm25", filters=Filters(source="*.html"))
    assert only_html and all(h.chunk.source.endswith(".html") for h in only_html)


def test_a_stale_lexical_index_is_rebuilt_before_use(kb, tmp_path, hash_embedder):
    import shutil

    for d in kb.store.path.glob("bm25-*"):
        shutil.rmtree(d)
    kb.close()
    again = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    assert "E07" in again.search("E07", k=1, mode="bm25")[0].chunk.text
    again.close()


def test_fusion():
    a, b, c = _hit(1, "a"), _hit(2, "b"), _hit(3, "c")
    fused = rrf([[(a.chunk, 9.0), (b.chunk, 5.0)], [(b.chunk, 3.0), (c.chunk, 1.0)]], k=60)
    assert [ch.id for ch, _ in fused] == [2, 1, 3]  # b is ranked by both lists
    mixed = weighted([(a.chunk, 0.9), (b.chunk, 0.1)], [(b.chunk, 10.0), (c.chunk, 2.0)], dense_weight=0.5)
    assert [ch.id for ch, _ in mixed][0] in (1, 2) and dict((ch.id, s) for ch, s in mixed)[3] == 0.0
    with pytest.raises(ConfigError):
        RetrievalSettings(mode="magic")
    with pytest.raises(ConfigError):
        RetrievalSettings(dense_weight=2)


def test_bm25_steps_aside_when_the_question_and_its_passages_differ_in_language():
    english = [(Chunk(i, "m.md", f"Clean the air filter every three months, step {i}.", 0, 0), 0.5) for i in range(10)]
    chinese = [(Chunk(20 + i, "w.md", f"所有 Aurora 热泵整机保修五年，第 {i} 条。", 0, 0), 0.5) for i in range(10)]
    assert lexical_weight("How often should the air filter be cleaned?", english) == 1.0
    assert lexical_weight("保修期多久？", chinese) == 1.0
    assert lexical_weight("滤网多久清洗一次？", english) == 0.0  # BM25 cannot match Chinese words in English text
    assert lexical_weight("How long is the warranty?", chinese) == 0.0
    assert lexical_weight("滤网多久清洗一次？", english[:7] + chinese[:3]) == 0.6  # a mixed corpus keeps some BM25
    assert lexical_weight("滤网多久清洗一次？", english[:1] + chinese, top=1) == 0.0  # or the first passage decides
    assert lexical_weight("滤网多久清洗一次？", chinese[:1] + english, top=1) == 1.0
    assert lexical_weight("anything", []) == 1.0


def test_a_chinese_question_finds_the_english_passage_with_the_real_embedder(corpus, tmp_path, e5):
    (corpus / "保修与服务.md").unlink()  # English documents only
    kb = KnowledgeBase.open(tmp_path / "xl", Config(index=IndexConfig(gpu=False)), embedder=e5)
    kb.ingest([corpus], progress=False)
    for question, gold in (("滤网多久清洗一次？", "every three months"), ("用的是哪种制冷剂？", "R290")):
        hits = kb.search(question, k=3)
        assert any(gold in h.chunk.text for h in hits), (question, [h.chunk.text[:60] for h in hits])
    kb.close()


def test_hybrid_is_the_default_and_finds_exact_codes(kb):
    assert kb.retriever.settings.mode == "hybrid"
    assert any("E12" in h.chunk.text for h in kb.search("What does E12 mean?", k=3))


class KeywordReranker:
    name = "keyword"

    def scores(self, question, passages):
        return [float("propane" in p) for p in passages]


def test_rerank_reorders_the_head_only():
    hits = [_hit(1, "alpha"), _hit(2, "R290 propane"), _hit(3, "gamma propane")]
    out = rerank(KeywordReranker(), "which refrigerant", hits, top=2)
    assert [h.chunk.id for h in out] == [2, 1, 3] and [h.rank for h in out] == [1, 2, 3]


def test_context_drops_duplicates_and_widens(kb):
    hits = [
        _hit(1, "the filter must be cleaned every month"),
        _hit(2, "the filter must be cleaned every month!"),
        _hit(3, "other"),
    ]
    assert [h.chunk.id for h in drop_near_duplicates(hits)] == [1, 3]
    a = Chunk(1, "s", "abcdef", 0, 6)
    b = Chunk(2, "s", "defghi", 3, 9)
    assert merge_chunks([b, a]) == "abcdefghi"
    manual = [
        c for c in kb.store.chunks.chunks_of(next(s for s in kb.store.documents() if s.endswith("aurora-manual.md")))
    ]
    middle = manual[len(manual) // 2]
    wide = widen([Hit(middle, 1.0, 1)], kb.store.chunks, 1)[0]
    assert (
        middle.text in wide.chunk.text
        and len(wide.chunk.text) > len(middle.text)
        and wide.chunk.source == middle.source
    )


def test_evaluation_metrics_and_question_files(tmp_path):
    questions = [
        Question("q1", gold="Alpha  BETA"),
        Question("q2", gold="missing"),
        Question("q3", source="b.pdf", page=2),
    ]
    hits = {
        "q1": [_hit(1, "x"), _hit(2, "… alpha beta …")],
        "q2": [_hit(1, "x")],
        "q3": [Hit(Chunk(9, "/d/b.pdf", "t", 0, 1, 2), 1.0, 1)],
    }
    report = evaluate("fake", lambda q, k: hits[q], questions)
    m = report.metrics
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@5"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((0.5 + 1) / 3)
    assert m["ndcg@10"] == pytest.approx((1 / 1.5849625 + 1) / 3, rel=1e-4)
    assert [f.question.question for f in report.failures] == ["q2"]
    assert is_relevant(Chunk(1, "s", "Ｆｕｌｌ width", 0, 1), Question("q", gold="full WIDTH"))
    spanning = Chunk(1, "/d/b.pdf", "t", 0, 1, 2, page_end=3)  # a chunk running on from page 2 to page 3
    assert is_relevant(spanning, Question("q", source="b.pdf", page=3))
    assert not is_relevant(spanning, Question("q", source="b.pdf", page=4))
    p = tmp_path / "q.jsonl"
    p.write_text(
        json.dumps({"question": "a", "gold": "b"}) + "\n\n" + json.dumps({"question": "c", "source": "x.pdf"}) + "\n"
    )
    assert len(load_questions(p)) == 2
    p.write_text('{"question": "no gold"}\n')
    with pytest.raises(ConfigError, match="gold"):
        load_questions(p)


def test_the_other_languages_passages_are_lifted_by_the_embedders_bias():
    from rag.retrieval.fusion import across_languages

    english = (Chunk(1, "m.md", "The outdoor unit needs at least 60 cm of free space on every side.", 0, 0), 0.83)
    chinese = (Chunk(2, "w.md", "所有 Aurora 热泵整机保修五年，包括零件和人工，注册后延长至十年。", 0, 0), 0.85)
    lifted = across_languages("室外机周围需要留多少空间？", [chinese, english], 0.04)
    assert [c.id for c, _ in lifted] == [1, 2] and lifted[0][1] == pytest.approx(0.87)
    lifted = across_languages("How long is the warranty?", [english, chinese], 0.04)  # and the reverse
    assert [c.id for c, _ in lifted] == [2, 1] and lifted[0][1] == pytest.approx(0.89)
    assert across_languages("室外机周围需要留多少空间？", [chinese, english], 0.0) == [chinese, english]


def test_in_a_store_of_both_languages_a_question_reaches_the_answer_in_the_other(corpus, tmp_path, e5):
    kb = KnowledgeBase.open(tmp_path / "both", Config(index=IndexConfig(gpu=False)), embedder=e5)
    try:
        kb.ingest([corpus], progress=False)  # English manual and FAQ, Chinese warranty page
        assert "60 cm" in kb.search("室外机周围需要留多少空间？", k=1)[0].chunk.text  # was the Chinese warranty page
        damage = kb.search("What damage is not covered by the warranty?", k=3)
        assert any("不在保修范围内" in h.chunk.text for h in damage)
        assert "保修五年" in kb.search("保修期多久？", k=1)[0].chunk.text  # the question's own language still first
        assert "every three months" in kb.search("How often should the air filter be cleaned?", k=1)[0].chunk.text
    finally:
        kb.close()
