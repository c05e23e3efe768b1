"""``rag finetune reranker``: the teacher's scores are cached and reused, the loop runs end to end on tiny real models
(inverse-cloze questions, the light LLM as the judge), the gate keeps the store's reranker unless told otherwise,
and an active student reranks the store's searches until it is switched off."""

from __future__ import annotations

import pytest

pytest.importorskip("datasets")

from indexes.errors import ConfigError  # noqa: E402
from rag.adapt.reranker import RerankerOptions, TeacherScores, distil_reranker  # noqa: E402
from rag.config import Config, IndexConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.retrieval.rerank import CrossEncoderReranker, activate_reranker, active_reranker  # noqa: E402
from tests.test_finetune import _corpus  # noqa: E402

LIGHT = "qwen2.5-coder-0.5b-instruct"


class CountingJudge:
    name = "counting"

    def __init__(self) -> None:
        self.pairs = 0

    def scores(self, question, passages):
        self.pairs += len(passages)
        return [float(question in p) for p in passages]


def test_teacher_scores_are_kept_and_only_missing_pairs_are_asked(tmp_path):
    judge = CountingJudge()
    cache = TeacherScores(tmp_path / "teacher.sqlite", judge)
    assert cache.scores("pump", ["the pump", "a valve"]) == [1.0, 0.0] and judge.pairs == 2
    cache.close()
    again = TeacherScores(tmp_path / "teacher.sqlite", judge)  # a new run, as after a kill
    assert again.scores("pump", ["a valve", "the pump", "pump seal"]) == [0.0, 1.0, 1.0]
    assert judge.pairs == 3  # only "pump seal" was new
    again.close()


@pytest.mark.llm
def test_the_loop_trains_a_student_that_the_gate_keeps_out_until_forced(tmp_path, e5):
    pytest.importorskip("llama_cpp")
    store = tmp_path / "store"
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)))
    kb.ingest([_corpus(tmp_path)], progress=False)
    options = RerankerOptions(chunks=30, llm="ict", teacher=f"llm:{LIGHT}", candidates=4, epochs=1, batch_size=8,
                              heldout=0.3, keep=0.0, progress=False)
    with pytest.raises(ConfigError, match="too few questions"):
        distil_reranker(kb, RerankerOptions(chunks=30, llm="ict", heldout=0.99, progress=False))

    kept = distil_reranker(kb, RerankerOptions(**{**options.__dict__, "activate": True, "min_gain": 2.0}))
    assert not kept.activated and active_reranker(store) is None  # a gain of 2 nDCG is impossible: gate closed
    assert kept.pairs == 4 * kept.train_questions and kept.train_questions >= 8 and kept.heldout_questions >= 4
    for metrics in (kept.first_stage, kept.student, kept.teacher):
        assert 0 <= metrics["ndcg@10"] <= 1
    assert "teacher" in kept.seconds and "training" in kept.seconds

    forced = distil_reranker(kb, RerankerOptions(**{**options.__dict__, "force": True}))
    kb.close()
    assert forced.activated and active_reranker(store) == forced.model and forced.model != kept.model
    assert sorted(p.name for p in (store / "models").iterdir()) == ["reranker-1", "reranker-2"]  # no scratch left
    reopened = KnowledgeBase.open(store)
    assert isinstance(reopened.retriever.reranker, CrossEncoderReranker)
    assert reopened.retriever.reranker.name == forced.model
    hits = reopened.search("Which spare part replaces the valve seal of X11?", k=3)
    assert len(hits) == 3 and all(isinstance(h.score, float) for h in hits)
    reopened.close()

    activate_reranker(store, None)  # switched off: the first stage alone again
    assert KnowledgeBase.open(store).retriever.reranker is None
