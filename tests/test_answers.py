"""Prompting, citations, streaming, chat rewriting and configuration."""

from __future__ import annotations

import dataclasses

import pytest

from indexes.errors import ConfigError
from rag.answer.extractive import ExtractiveGenerator
from rag.answer.generation import build_answer, cited_numbers
from rag.config import Config, IndexConfig, apply_overrides, load_config
from rag.knowledge_base import KnowledgeBase
from tests.conftest import EchoGenerator


@pytest.fixture
def kb(corpus, tmp_path, hash_embedder):
    gen = EchoGenerator()
    kb = KnowledgeBase.open(
        tmp_path / "store", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder, generator=gen
    )
    kb.ingest([corpus], progress=False)
    yield kb
    kb.close()


def test_ask_numbers_passages_and_maps_citations_to_sources(kb):
    # the model's own [n]
    kb.config = dataclasses.replace(kb.config, llm=dataclasses.replace(kb.config.llm, check_citations=False))
    answer = kb.ask("How often should the air filter be cleaned?", k=3)
    prompt = kb.generator.prompts[-1]
    assert prompt[0]["role"] == "system" and "same language as the question" in prompt[0]["content"]
    assert "[1] (" in prompt[1]["content"] and "[3] (" in prompt[1]["content"]
    assert answer.answered and [c.number for c in answer.citations] == [1]
    assert answer.citations[0].chunk_id == answer.hits[0].chunk.chunk_id


def test_not_found_is_said_plainly_in_the_questions_language(kb):
    kb._generator = EchoGenerator("NOT_FOUND")
    en = kb.ask("Who painted the Mona Lisa?")
    zh = kb.ask("谁画了蒙娜丽莎？")
    assert not en.answered and not en.citations and "do not contain" in en.text
    assert not zh.answered and "没有找到" in zh.text


def test_streaming_yields_pieces_then_the_answer(kb):
    stream = kb.ask_stream("warranty length", k=2)
    pieces = list(stream)
    assert len(pieces) > 3 and stream.answer.text == "".join(pieces).strip().replace(" [1]", "")  # unsupported: uncited
    assert stream.answer.unsupported == ("The answer is in the first passage.",)


def test_chat_rewrites_follow_ups_with_history(kb):
    conv = kb.chat()
    conv.ask("How long is the warranty?")
    kb._generator = EchoGenerator("How can the compressor warranty be extended?")
    conv.ask("and the compressor?")
    rewrite = kb.generator.prompts[0][-1]["content"]
    assert "How long is the warranty?" in rewrite and "and the compressor?" in rewrite
    assert len(conv.history) == 2


def test_streamed_chat_turns_join_the_history_and_follow_ups_are_rewritten(kb):
    conv = kb.chat()
    first = conv.ask_stream("How long is the warranty?")
    assert "".join(first) and conv.history == [("How long is the warranty?", first.answer.text)]
    kb._generator = EchoGenerator("How can the compressor warranty be extended?")
    second = conv.ask_stream("and the compressor?")
    list(second)
    rewrite = kb.generator.prompts[0][-1]["content"]
    assert "How long is the warranty?" in rewrite and "and the compressor?" in rewrite
    assert second.question == "How can the compressor warranty be extended?"
    assert [q for q, _ in conv.history] == ["How long is the warranty?", "and the compressor?"]


def test_the_prompt_asks_for_the_questions_language_in_that_language(kb):
    kb.ask("保修期多久？")
    zh = kb.generator.prompts[-1]
    assert "中文" in zh[0]["content"] and "中文" in zh[1]["content"]
    kb.ask("How long is the warranty?")
    en = kb.generator.prompts[-1]
    assert "中文" not in en[0]["content"] + en[1]["content"] and "English" in en[1]["content"]


def test_citations_are_checked_against_the_passages(kb):
    hits = kb.context("How often should the air filter be cleaned?", k=3)
    first = hits[0].chunk.text.split(".")[0].strip()
    kb._generator = EchoGenerator(f"{first} [3]. The moon is made of green cheese and orbits slowly.")
    answer = kb.ask("How often should the air filter be cleaned?", k=3)
    # the wrong [3] is corrected to the passage it came from
    assert [c.number for c in answer.citations] == [1], (answer.text)
    assert answer.unsupported == ("The moon is made of green cheese and orbits slowly.",)
    assert "[" not in answer.text.split("].", 1)[1]  # the unsupported sentence carries no citation
    kb._generator = EchoGenerator(first + ".")
    assert [c.number for c in kb.ask("How often should the air filter be cleaned?", k=3).citations] == [1]  # added
    kb._generator = EchoGenerator(f"{first}. [3], [4]")  # markers after the full stop, comma between brackets
    answer = kb.ask("How often should the air filter be cleaned?", k=3)
    assert answer.text.strip() == f"{first} [1].", answer.text  # the whole run corrected, no stray ", [4]" left


def test_chinese_punctuation_is_not_a_term_a_sentence_must_find_in_its_passage():
    from indexes.types import Chunk
    from rag.answer.citations import check_citations
    from rag.types import Hit

    passage = "37 如何设置双倍或者更大的行间距？\n使用命令\n\\renewcommand{\\baselinestretch}{⟨倍数⟩}"
    hits = [Hit(Chunk("a", "ctex-faq.pdf", passage, 0, len(passage)), 1.0, 1)]
    reply = "使用命令 \\renewcommand{\\baselinestretch}{2} 可以将行距设置成两倍。[1]"
    checked = check_citations(reply, hits)
    assert checked.text == reply and not checked.unsupported  # "。" and "倍。" had counted as terms the passage lacks
    assert check_citations("地球绕着太阳转，一年转一圈。[1]", hits).unsupported  # a sentence the passage does not hold


def test_a_citation_to_a_passage_sharing_only_generic_words_is_moved_to_the_one_that_says_it():
    from indexes.types import Chunk
    from rag.answer.citations import check_citations
    from rag.types import Hit

    warranty = (
        "How long is the warranty? Every Aurora heat pump comes with a five-year warranty on parts and labour. "
        "Registering the unit online within 30 days extends the compressor warranty to ten years."
    )
    daily = (
        "Press the leaf button to switch the Aurora heat pump to Eco mode. The compressor speed is limited, which "
        "saves about 12 % energy; the holiday program keeps the house at 12 degrees for ten days."
    )
    hits = [Hit(Chunk(1, "faq.html", warranty, 0, 0), 1.0, 1), Hit(Chunk(2, "manual.md", daily, 0, 0), 0.9, 2)]
    reply = "The compressor warranty for the Aurora heat pump is ten years [2]."  # the 1.5B preset's reply, seen
    checked = check_citations(reply, hits)
    assert (
        checked.text == "The compressor warranty for the Aurora heat pump is ten years [1]." and checked.corrected == 1
    )
    right = "Eco mode limits the compressor speed of the Aurora heat pump and saves about 12 % energy [2]."
    assert check_citations(right, hits).text == right  # a citation as good as any other stands


def test_a_sentence_that_only_restates_the_question_is_not_vouched_for_by_a_passage():
    from indexes.types import Chunk
    from rag.answer.citations import check_citations
    from rag.types import Hit

    lists = (
        "How are lists implemented in CPython? CPython's lists are really variable-length arrays, not Lisp-style "
        "linked lists. The implementation uses a contiguous array of references to other objects."
    )
    hits = [Hit(Chunk(1, "design.html", lists, 0, 0), 1.0, 1)]
    question = "Are Python lists linked lists internally?"
    # the 1.5B preset's reply, seen: every term is the question's
    wrong = "Yes, Python lists are linked lists internally [1]."
    checked = check_citations(wrong, hits, question=question)
    assert checked.unsupported == ("Yes, Python lists are linked lists internally.",) and "[1]" not in checked.text
    right = "They are variable-length arrays holding a contiguous array of references [1]."
    assert check_citations(right, hits, question=question).text == right
    assert check_citations(wrong, hits).text == wrong  # without the question, its terms are all in the passage


def test_a_pleasantry_loses_its_marker_but_a_short_answer_keeps_it():
    from indexes.types import Chunk
    from rag.answer.citations import check_citations
    from rag.types import Hit

    hits = [Hit(Chunk(1, "m.md", "Clean the air filter every three months.", 0, 0), 1.0, 1)]
    assert check_citations("Thank you. [1]", hits).text == "Thank you."  # rag chat's reply to "thanks", seen
    assert check_citations("Every three months [1].", hits).text == "Every three months [1]."
    assert check_citations("Yes [1].", hits).text == "Yes [1]."  # no content word to judge by: left as written


def test_citation_parsing_and_unknown_numbers():
    assert cited_numbers("A [1]. B [2, 3]. C 【4】 and [1]") == [1, 2, 3, 4]
    answer = build_answer("q", "Text [9].", [])
    assert not answer.answered


def test_extractive_generator_quotes_the_best_sentence():
    from indexes.types import Chunk
    from rag.answer.generation import generate
    from rag.answer.prompts import answer_messages
    from rag.types import Hit

    hits = [
        Hit(Chunk(1, "/d/a.md", "Clean the filter monthly. Never use a pressure washer.", 0, 1), 0.9, 1),
        Hit(
            Chunk(2, "/d/b.md", "The refrigerant is R290 (propane). A technician needs an F-gas certificate.", 0, 1),
            0.8,
            2,
        ),
    ]
    reply = generate(ExtractiveGenerator(), answer_messages("Which refrigerant is used?", hits))
    assert reply == "The refrigerant is R290 (propane). [2]"
    assert generate(ExtractiveGenerator(), answer_messages("Who painted the Mona Lisa?", hits)) == "NOT_FOUND"
    headed = [Hit(Chunk(3, "/d/c.md", "## Filter maintenance\n\nClean the filter every month.", 0, 1), 0.9, 1)]
    assert (
        generate(ExtractiveGenerator(), answer_messages("How often is the filter maintenance?", headed))
        == "Clean the filter every month. [1]"
    )
    text = "## 保修期限\n\n所有热泵整机保修五年，包括零件和人工。在购买后三十天内完成线上注册，压缩机保修期延长至十年。"
    warranty = [Hit(Chunk(4, "/d/保修.md", text, 0, 1), 0.9, 1)]
    # the heading says what the section answers: its first sentence, not the one that repeats more of the words
    reply = generate(ExtractiveGenerator(), answer_messages("保修期多久？", warranty))
    assert reply == "所有热泵整机保修五年，包括零件和人工。 [1]"


def test_config_overrides_are_checked(tmp_path):
    cfg = apply_overrides(
        Config(), ["retrieval.k=8", "index.backend=chroma", "index.gpu=false", "ingest.exclude=*.tmp,*.bak"]
    )
    assert cfg.retrieval.k == 8 and cfg.index.backend == "chroma" and cfg.index.gpu is False
    assert cfg.ingest.exclude == ("*.tmp", "*.bak")
    for bad in ["retrieval.kk=1", "retrieval.k=many", "retrieval=3", "nokey"]:
        with pytest.raises(ConfigError):
            apply_overrides(Config(), [bad])
    toml = tmp_path / "rag.toml"
    toml.write_text('embedder = "all-minilm-l6-v2"\n[llm]\nname = "extractive"\n')
    cfg = load_config(toml, ["llm.max_new_tokens=64"])
    assert cfg.embedder == "all-minilm-l6-v2" and cfg.llm.name == "extractive" and cfg.llm.max_new_tokens == 64


def test_chinese_prose_full_of_latex_commands_is_chinese_but_an_english_page_naming_a_chinese_author_is_not():
    from rag.answer.prompts import is_chinese

    latex = (
        "如何给公式分组编号？可以这样写：\n\\begin{subequations}\n\\renewcommand{\\theequation}"
        "{\\theparentequation-\\arabic{equation}}\n\\begin{equation}\nx = y + z\n\\end{equation}\n"
        "\\end{subequations}\n这样每个公式的编号都带上父编号。"
    )
    assert is_chinese(latex)
    english = "Contributors: 吴凌云 wrote the first version of this guide, and many others sent fixes and new answers."
    assert not is_chinese(english)
    assert not is_chinese("no Chinese here at all")


def test_a_follow_up_is_answered_in_its_own_language_even_when_the_rewrite_changed_it(kb):
    """Asked "How often should the air filter be cleaned?" then "那压缩机呢？", the 1.5B preset rewrote the follow-up
    in English, and the answer came in English."""
    conv = kb.chat()
    conv.ask("How often should the air filter be cleaned?")
    kb._generator = EchoGenerator("How often should the compressor be cleaned?")  # the rewrite, in English
    answer = conv.ask("那压缩机呢？")
    rewrite = kb.generator.prompts[0]
    assert (
        "write the rewritten question in Chinese" in rewrite[0]["content"] and "那压缩机呢？" in rewrite[-1]["content"]
    )
    prompt = kb.generator.prompts[-1]
    assert (
        "Chinese" in prompt[0]["content"] and "中文" in prompt[1]["content"] and "English" not in prompt[1]["content"]
    )
    assert answer.question == "How often should the compressor be cleaned?"
    kb._generator = EchoGenerator("NOT_FOUND")
    stream = kb.answer_stream("Who painted the Mona Lisa?", answer.hits, language="Chinese")
    list(stream)
    assert not stream.answer.answered and "没有找到" in stream.answer.text


def test_the_terminal_shows_the_checked_answer_when_the_check_changed_the_markers(kb, capsys):
    from rag.cli.query import _stream_to_terminal

    _stream_to_terminal(kb.ask_stream("warranty length", k=2))  # the echo's [1] is unsupported: the check drops it
    out = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert out == ["The answer is in the first passage [1].", "Checked: The answer is in the first passage."]
    kb._generator = EchoGenerator("The warranty lasts five years. [1]")  # the check cites the same passage: said once
    _stream_to_terminal(kb.ask_stream("warranty length", k=2))
    kb.config = dataclasses.replace(kb.config, llm=dataclasses.replace(kb.config.llm, check_citations=False))
    _stream_to_terminal(kb.ask_stream("warranty length", k=2))
    assert [line.rstrip() for line in capsys.readouterr().out.splitlines()] == [
        "The warranty lasts five years. [1]"
    ] * 2
