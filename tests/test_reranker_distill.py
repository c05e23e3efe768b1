"""``rag finetune reranker``: the teacher's scores are cached and reused, the listwise fit recovers a teacher's
ordering, the student's vectors are computed once, a budget stops the teacher, the loop runs end to end (with a
rule-based teacher, and with the light LLM as the judge), the gate keeps the store's reranker unless told otherwise,
and an active student reranks the store's searches until it is switched off or rolled back."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from indexes.errors import ConfigError
from rag.adapt import reranker as distil
from rag.adapt.reranker import RerankerOptions, TeacherScores, distil_reranker, fit_listwise
from rag.config import Config, IndexConfig
from rag.knowledge_base import KnowledgeBase
from rag.retrieval import Retriever
from rag.retrieval.distilled import FEATURES, DistilledReranker, VectorCache
from rag.retrieval.rerank import activate_reranker, active_reranker
from tests.test_finetune import TOPICS, _corpus

LIGHT = "qwen2.5-coder-0.5b-instruct"


class CountingJudge:
    name = "counting"

    def __init__(self) -> None:
        self.pairs = 0

    def scores(self, question, passages):
        self.pairs += len(passages)
        return [float(question in p) for p in passages]


class WordJudge:
    """A teacher that rates a passage by the share of the question's words it holds (a stand-in for the LLM)."""

    name = "words"

    def __init__(self) -> None:
        self.pairs = 0

    def scores(self, question, passages):
        self.pairs += len(passages)
        words = set(re.findall(r"\w+", question.lower()))
        return [0.05 + 0.9 * len(words & set(re.findall(r"\w+", p.lower()))) / max(1, len(words)) for p in passages]


def test_teacher_scores_are_kept_and_only_missing_pairs_are_asked(tmp_path):
    judge = CountingJudge()
    cache = TeacherScores(tmp_path / "teacher.sqlite", judge)
    assert cache.scores("pump", ["the pump", "a valve"]) == [1.0, 0.0] and judge.pairs == 2
    cache.close()
    again = TeacherScores(tmp_path / "teacher.sqlite", judge)  # a new run, as after a kill
    assert again.scores("pump", ["a valve", "the pump", "pump seal"]) == [0.0, 1.0, 1.0]
    assert judge.pairs == 3  # only "pump seal" was new
    again.close()


def test_the_listwise_fit_recovers_the_weights_behind_a_teachers_odds():
    rng = np.random.default_rng(0)
    truth = np.array([0.5, 8.0, -3.0, 2.0])
    groups = []
    for _ in range(200):
        x = rng.normal(size=(6, 4)) * [1.0, 0.05, 0.1, 0.2] + [0.0, 0.8, 0.5, 0.3]
        odds = np.exp(x @ truth)
        groups.append((x, odds / (1 + odds)))  # P(yes) whose odds are exp(x @ truth)
    w = fit_listwise(groups, l2=0.0)
    assert np.allclose(w, truth, rtol=0.02, atol=0.02), w


class CountingEmbedder:
    name = "counting-embedder"

    def __init__(self) -> None:
        self.texts = 0

    def embed_documents(self, texts, progress=False):
        self.texts += len(texts)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32) / 10


def test_vectors_are_computed_once_and_a_read_only_cache_still_serves(tmp_path, monkeypatch):
    import sqlite3

    from rag.retrieval import distilled

    emb = CountingEmbedder()
    cache = VectorCache(tmp_path / "v.sqlite", emb)
    first = cache.get(["alpha", "be", "alpha"])
    assert emb.texts == 2 and first.shape == (3, 2) and np.allclose(first[0], first[2])
    cache.close()
    again = VectorCache(tmp_path / "v.sqlite", emb)
    assert np.allclose(again.get(["be", "alpha"]), first[[1, 0]], atol=1e-3) and emb.texts == 2  # read from the file

    def read_only(db):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(distilled, "transaction", read_only)  # as in a store opened read-only
    assert again.get(["gamma"]).shape == (1, 2) and emb.texts == 3
    assert again.get(["gamma", "alpha"]).shape == (2, 2) and emb.texts == 3  # kept in memory, not embedded again
    again.close()


def test_late_interaction_finds_the_question_words_in_context_and_its_tokens_are_kept(tmp_path, e5):
    from ingest.embed import query_time
    from rag.retrieval.distilled import TokenCache, late_interaction

    emb = query_time(e5)
    question = emb.embed_tokens(["How long is the compressor warranty?"], query=True)[0]
    cache = TokenCache(tmp_path / "v.sqlite", emb)
    right, wrong = cache.get(["The compressor warranty lasts ten years.", "Clean the air filter every month."])
    assert question.shape[1] == right.shape[1] == 384 and np.allclose(np.linalg.norm(right, axis=1), 1, atol=1e-3)
    assert late_interaction(question, right) > late_interaction(question, wrong) + 0.05
    cache.close()
    again = TokenCache(tmp_path / "v.sqlite", emb)
    calls = []
    emb.embed_tokens = lambda *a, **k: calls.append(a) or []  # must not be needed: read from the file
    assert np.allclose(again.get(["The compressor warranty lasts ten years."])[0], right, atol=1e-3) and not calls


def test_token_vectors_carry_the_prompt_from_the_first_call_of_a_fresh_embedder(e5):
    from ingest.embed import SentenceTransformerEmbedder

    fresh = SentenceTransformerEmbedder(e5.name)  # nothing loaded yet: the prompts are read at loading
    first = fresh.embed_tokens(["How long is the warranty?"], query=True)[0]
    warm = e5.embed_tokens(["How long is the warranty?"], query=True)[0]
    assert first.shape == warm.shape and np.allclose(first, warm, atol=1e-3)  # "query: " counted both times


def test_a_student_trained_before_late_interaction_still_loads_and_scores(tmp_path, e5):
    from rag.retrieval.distilled import StudentConfig

    StudentConfig(e5.name, [0.5, 1.0, 2.0, 1.0], 10, "llm", FEATURES[:4]).save(tmp_path)
    old = DistilledReranker(tmp_path, e5)
    scores = old.scores("How long is the warranty?", ["The warranty lasts five years.", "Clean the filter."])
    assert len(scores) == 2 and scores[0] > scores[1]


@pytest.fixture
def store(tmp_path, e5):
    path = tmp_path / "store"
    kb = KnowledgeBase.open(path, Config(index=IndexConfig(gpu=False)), embedder=e5)
    kb.ingest([_corpus(tmp_path)], progress=False)
    kb.close()
    return path


def _options(**kw) -> RerankerOptions:
    return RerankerOptions(**{"chunks": 30, "llm": "ict", "candidates": 4, "heldout": 0.3, "keep": 0.0,
                              "budget": None, "tops": (4, 8), "progress": False, **kw})


def test_a_budget_stops_the_teacher_and_a_rerun_reuses_its_scores(store, e5, monkeypatch):
    judge = CountingJudge()
    monkeypatch.setattr(distil, "_teacher", lambda kb, spec: judge)
    kb = KnowledgeBase.open(store, embedder=e5)
    with pytest.raises(ConfigError, match="--budget"):
        distil_reranker(kb, _options(budget=1e-6))  # spent before the first question
    assert judge.pairs == 0
    words = WordJudge()
    monkeypatch.setattr(distil, "_teacher", lambda kb, spec: words)
    said: list[str] = []
    full = distil_reranker(kb, _options(), report=said.append)
    assert full.labelled == full.train_questions >= 8 and words.pairs == full.pairs
    assert any(re.fullmatch(r"teacher: \d+ of \d+ questions scored, about \d+ min left", m) for m in said)  # no bar
    words.pairs = 0
    again = distil_reranker(kb, _options())  # as after a kill: the same teacher, every score from the cache
    assert words.pairs == 0 and again.pairs == full.pairs and again.by_top == full.by_top
    spent = distil_reranker(kb, _options(budget=1e-6))  # the budget gone before the teacher starts: the cache counts
    kb.close()
    assert words.pairs == 0 and spent.pairs == full.pairs


def test_the_loop_end_to_end_with_a_rule_teacher_gate_force_and_rollback(store, e5, monkeypatch):
    monkeypatch.setattr(distil, "_teacher", lambda kb, spec: WordJudge())
    kb = KnowledgeBase.open(store, embedder=e5)
    with pytest.raises(ConfigError, match="too few questions"):
        distil_reranker(kb, _options(heldout=0.99))
    kept = distil_reranker(kb, _options(activate=True, min_gain=2.0))
    assert not kept.activated and active_reranker(store) is None  # a gain of 2 nDCG is impossible: gate closed
    assert kept.pairs == 4 * kept.train_questions and kept.heldout_questions >= 4 and kept.teacher is None
    assert set(kept.by_top) == {4, 8} and kept.top in (4, 8)
    assert {"teacher", "training", "evaluation"} <= set(kept.seconds)

    forced = distil_reranker(kb, _options(force=True))
    kb.close()
    assert forced.activated and active_reranker(store) == forced.model and forced.model != kept.model
    reopened = KnowledgeBase.open(store, embedder=e5)
    student = reopened.retriever.reranker
    assert isinstance(student, DistilledReranker) and student.embedder.name == e5.name
    hits = reopened.search("Which spare part replaces the valve seal of X11?", k=3)
    assert len(hits) == 3 and "X11" in hits[0].chunk.text
    reopened.close()

    activate_reranker(store, kept.model)  # rolled back to the earlier student
    assert KnowledgeBase.open(store, embedder=e5).retriever.reranker.folder.name == "reranker-1"
    activate_reranker(store, None)  # switched off: the first stage alone again
    assert KnowledgeBase.open(store, embedder=e5).retriever.reranker is None


def _top_agreement(kb, reranker, teacher, questions, n: int) -> float:
    """How often the first passage (after ``reranker``, or the first stage alone) is the teacher's favourite of the
    first stage's top ``n``."""
    first = Retriever(kb.store, kb.embedder, kb.retriever.settings)
    again = Retriever(kb.store, kb.embedder, kb.retriever.settings, reranker, n)
    agree = 0
    for q in questions:
        top = first.search(q, n)
        scores = teacher.scores(q, [h.chunk.text for h in top])
        favourite = top[int(np.argmax(scores))].chunk.id
        agree += (again.search(q, 1) if reranker else top)[0].chunk.id == favourite
    return agree / len(questions)


@pytest.mark.llm
def test_the_light_llm_as_teacher_the_student_follows_it_better_than_the_first_stage(store, e5):
    pytest.importorskip("llama_cpp")
    kb = KnowledgeBase.open(store, embedder=e5)
    result = distil_reranker(kb, _options(teacher=f"llm:{LIGHT}", force=True, tops=(5,)))
    assert result.activated and result.pairs == 4 * result.train_questions
    student = DistilledReranker(result.model, e5)
    teacher = TeacherScores(kb.root / "finetune" / "teacher.sqlite", distil._teacher(kb, f"llm:{LIGHT}"))
    held = [f"How often must the {TOPICS[i % len(TOPICS)]} of unit model X{i} be serviced?" for i in range(0, 40, 3)]
    alone, reranked = (_top_agreement(kb, r, teacher, held, 5) for r in (None, student))
    teacher.close()
    kb.close()
    print(f"agreement with the teacher's favourite: first stage {alone:.2f}, student {reranked:.2f}")
    assert reranked >= alone, (reranked, alone)


class _FakeJudgeServer:
    """An OpenAI-compatible ``/chat/completions`` on 127.0.0.1 that answers "yes" with log-probabilities: P(yes) is
    0.9 when the passage mentions the question's last word, 0.2 otherwise (``logprobs`` False: none are sent)."""

    def __init__(self, logprobs: bool = True) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.requests: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                user = body["messages"][-1]["content"]
                word = user.split("Question: ")[1].split("\n")[0].rstrip("?").split()[-1]
                p = 0.9 if word in user.split("Question: ")[0] else 0.2
                top = [{"token": "yes", "logprob": math.log(p)}, {"token": "no", "logprob": math.log(1 - p)}]
                choice = {"message": {"role": "assistant", "content": "yes"},
                          "logprobs": {"content": [{**top[0], "top_logprobs": top}]} if logprobs else None}
                data = json.dumps({"choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_teacher_can_be_an_openai_compatible_server_that_gives_log_probabilities():
    from rag.retrieval.rerank import EndpointJudgeReranker, load_reranker

    server = _FakeJudgeServer()
    try:
        judge = load_reranker(f"llm:{server.url}", lambda: None)
        assert isinstance(judge, EndpointJudgeReranker)
        scores = judge.scores("Which part seals the pump?", ["The pump seal is P-1000.", "The fan spins."])
        assert scores == pytest.approx([0.9, 0.2], abs=1e-6)
        sent = server.requests[-1]
        assert sent["max_tokens"] == 1 and sent["logprobs"] is True and sent["temperature"] == 0
    finally:
        server.close()
    bare = _FakeJudgeServer(logprobs=False)
    try:
        with pytest.raises(ConfigError, match="no log-probabilities"):
            load_reranker(f"llm:{bare.url}", lambda: None).scores("pump?", ["pump"])
    finally:
        bare.close()


def test_the_margin_recipe_trains_the_embedder_on_the_judges_cached_scores(store, e5, monkeypatch):
    from rag.adapt.embedder import FinetuneOptions, finetune_embedder

    words = WordJudge()
    monkeypatch.setattr(distil, "_teacher", lambda kb, spec: words)
    kb = KnowledgeBase.open(store, embedder=e5)
    with pytest.raises(ConfigError, match="recipe"):
        finetune_embedder(kb, FinetuneOptions(chunks=30, llm="ict", recipe="gpl", progress=False))
    student = distil_reranker(kb, _options())  # scores the training questions' candidates once
    asked = words.pairs
    result = finetune_embedder(kb, FinetuneOptions(chunks=30, llm="ict", heldout=0.3, candidates=4, budget=None,
                                                   recipe="margin", batch_size=8, max_steps=3, force=True,
                                                   progress=False))
    kb.close()
    assert words.pairs == asked and student.pairs > 0  # same questions and candidates: every score from the cache
    assert result.version == "v2" and result.activated and 0 <= result.after["ndcg@10"] <= 1
    reopened = KnowledgeBase.open(store)
    assert reopened.store.settings.embedder == result.model
    assert "X11" in reopened.search("Which spare part replaces the valve seal of X11?", k=1)[0].chunk.text
    reopened.close()


def test_kill_minus_nine_while_the_judge_scores_and_the_rerun_asks_only_for_what_is_missing(store, tmp_path):
    """The judge is a loopback server that stops answering after 10 pairs; the run is killed there, and the rerun asks
    the server for exactly the pairs the cache does not hold."""
    import json
    import signal
    import sqlite3
    import subprocess
    import sys
    import threading
    import time

    server = _FakeJudgeServer()
    gate, answered = threading.Event(), []
    handler = server.server.RequestHandlerClass
    post = handler.do_POST

    def held_post(self):
        answered.append(1)
        if len(answered) > 10:
            gate.wait(120)  # the eleventh request waits: the run is killed while it does
        post(self)

    handler.do_POST = held_post
    command = [sys.executable, "-m", "rag.cli", "finetune", "reranker", "--store", str(store), "--question-llm", "ict",
               "--chunks", "30", "--candidates", "4", "--teacher", f"llm:{server.url}", "--budget", "0", "--json"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(answered) < 11 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(answered) == 11, "the run did not reach the judge"
        first.send_signal(signal.SIGKILL)
        first.wait(60)
        with sqlite3.connect(store / "finetune" / "teacher.sqlite") as db:
            cached = db.execute("SELECT count(*) FROM scores").fetchone()[0]
        assert cached == 8  # two questions' four pairs each were committed; the third's two answers were not
        handler.do_POST = post
        gate.set()  # the held request now completes into a closed connection
        while len(server.requests) < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(server.requests)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        result = json.loads(rerun.stdout)
        assert len(server.requests) - before == 4 * result["labelled"] - cached
    finally:
        gate.set()
        if first.poll() is None:
            first.kill()
        server.close()


def test_a_moved_or_copied_store_keeps_its_own_reranker(tmp_path):
    import shutil

    root = tmp_path / "kb"
    for folder in (root / "models" / "reranker-1", root / "versions" / "v2", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    activate_reranker(root, str(root / "models" / "reranker-1"))
    activate_reranker(root / "versions" / "v2", str(root / "models" / "reranker-1"))
    shutil.copytree(root, tmp_path / "copy")
    shutil.move(root, tmp_path / "moved")
    for where in ("copy", "moved"):
        expected = str((tmp_path / where / "models" / "reranker-1").resolve())
        assert active_reranker(tmp_path / where) == expected
        assert active_reranker(tmp_path / where / "versions" / "v2") == expected
    activate_reranker(tmp_path / "moved", str(tmp_path / "elsewhere"))  # outside the store: kept as given
    shutil.move(tmp_path / "moved", tmp_path / "again")
    assert active_reranker(tmp_path / "again") == str(tmp_path / "elsewhere")


def test_a_moved_store_keeps_the_embedder_of_its_versions_and_of_its_student(tmp_path):
    import json
    import shutil

    from indexes.store import Store, StoreSettings
    from rag.retrieval.distilled import StudentConfig

    root = tmp_path / "kb"
    model = root / "models" / "v2-embedder"
    model.mkdir(parents=True)
    Store.create(root / "versions" / "v2", StoreSettings(embedder=str(model), dim=4, index="numpy")).close()
    (root / "models" / "reranker-1").mkdir()
    StudentConfig(str(model), [1.0], 10, "judge", ("rank",)).save(root / "models" / "reranker-1")
    written = json.loads((root / "versions" / "v2" / "store.json").read_text())["embedder"]
    assert written == "../../models/v2-embedder"  # relative: no machine's absolute path in the store
    shutil.move(root, tmp_path / "moved")
    expected = str((tmp_path / "moved" / "models" / "v2-embedder").resolve())
    assert Store.read_settings(tmp_path / "moved" / "versions" / "v2").embedder == expected
    assert StudentConfig.load(tmp_path / "moved" / "models" / "reranker-1").embedder == expected
    # a store written before paths were relative, then moved: its own model is found again; a hub id is kept
    legacy = tmp_path / "moved" / "models" / "reranker-1" / "distilled.json"
    legacy.write_text(json.dumps({**json.loads(legacy.read_text()), "embedder": str(model)}))
    assert StudentConfig.load(tmp_path / "moved" / "models" / "reranker-1").embedder == expected
    legacy.write_text(json.dumps({**json.loads(legacy.read_text()), "embedder": "./my-model"}))
    assert StudentConfig.load(tmp_path / "moved" / "models" / "reranker-1").embedder == "./my-model"  # the user's
    legacy.write_text(json.dumps({**json.loads(legacy.read_text()), "embedder": "intfloat/multilingual-e5-small"}))
    assert StudentConfig.load(tmp_path / "moved" / "models" / "reranker-1").embedder == "intfloat/multilingual-e5-small"
