"""Context compression: the prompt keeps the sentences that bear on the question, within a token budget, while
citations keep pointing at the whole retrieved passages."""

from __future__ import annotations

import dataclasses

import numpy as np

from indexes.types import Chunk
from rag.answer.compress import compress, units
from rag.answer.generation import count_tokens
from rag.config import Config, IndexConfig
from rag.knowledge_base import KnowledgeBase
from rag.types import Hit
from tests.conftest import EchoGenerator, HashEmbedder


def hit(rank: int, text: str) -> Hit:
    return Hit(Chunk(rank, f"doc{rank}.md", text, 0, len(text)), 1.0 / rank, rank)


def words(text: str) -> int:
    return count_tokens(None, text)


FILTER = ("# Maintenance\nThe unit hums softly at night. Clean the air filter every three months. "
          "In dusty areas clean the air filter every month. The casing is painted grey. The feet are rubber.")
WARRANTY = "The warranty lasts five years. Registration extends the compressor warranty to ten years."
NOISE = "Our company was founded in a small town. The founders liked long walks. They had three dogs."


def test_units_are_sentences_and_lines_with_their_spans():
    text = "# Title\nFirst sentence. Second one!\n中文句子。第二句？\n    code_line(x)"
    got = units(text, 0)
    assert [u.text for u in got] == [
        "# Title",
        "First sentence.",
        "Second one!",
        "中文句子。",
        "第二句？",
        "code_line(x)",
    ]
    assert all(text[u.start : u.end] == u.text for u in got)


def test_the_budget_keeps_the_relevant_sentences_with_their_neighbours_and_drops_passages_that_add_nothing():
    hits = [hit(1, FILTER), hit(2, NOISE), hit(3, WARRANTY)]
    out = compress("How often should the air filter be cleaned?", hits, HashEmbedder(), budget=30, count=words, whole=0)
    assert [h.rank for h in out][0] == 1 and 2 not in [h.rank for h in out]
    kept = out[0].chunk.text
    assert "Clean the air filter every three months." in kept and "every month" in kept
    assert "The feet are rubber." not in kept and " … " not in kept.split("every month")[0]
    assert sum(words(h.chunk.text) for h in out) <= 30
    assert out[0].chunk.chunk_id == hits[0].chunk.chunk_id  # the citation still opens the whole chunk
    everything = compress(
        "How often should the air filter be cleaned?", hits, HashEmbedder(), budget=10_000, count=words
    )
    assert [h.chunk.text for h in everything] == [FILTER, NOISE, WARRANTY]  # a budget that fits all changes nothing


def test_a_repeated_sentence_is_kept_once():
    twice = "Clean the air filter every three months."
    out = compress(
        "air filter",
        [hit(1, twice), hit(2, twice + " Use lukewarm water.")],
        HashEmbedder(),
        budget=100,
        count=words,
        whole=0,
    )
    assert sum(h.chunk.text.count(twice) for h in out) == 1


def test_the_answer_prompt_is_compressed_and_citations_map_to_the_retrieved_passages(corpus, tmp_path, hash_embedder):
    gen = EchoGenerator("Clean it every three months [1].")
    config = Config(index=IndexConfig(gpu=False))
    with KnowledgeBase.open(tmp_path / "s", config, embedder=hash_embedder, generator=gen) as kb:
        kb.ingest([corpus], progress=False)
        full_cfg = dataclasses.replace(config, llm=dataclasses.replace(config.llm, compress=False))
        kb.config = full_cfg
        kb.ask("How often should the air filter be cleaned?", k=5)
        full = gen.prompts[-1][1]["content"]
        kb.config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, context_tokens=60))
        answer = kb.ask("How often should the air filter be cleaned?", k=5)
        short = gen.prompts[-1][1]["content"]
    assert len(short) < len(full) / 2 and "three months" in short
    assert answer.citations and answer.citations[0].text == answer.hits[0].chunk.text  # the whole chunk
    assert len(answer.hits) == 5


def test_the_first_passage_goes_in_whole_and_counts_against_the_budget():
    hits = [hit(1, NOISE), hit(2, FILTER), hit(3, WARRANTY)]
    out = compress(
        "How often should the air filter be cleaned?", hits, HashEmbedder(), budget=words(NOISE) + 12, count=words
    )
    assert out[0].chunk.text == NOISE and len(out) >= 2 and "three months" in out[1].chunk.text
    assert sum(words(h.chunk.text) for h in out) <= words(NOISE) + 12
    # the first alone overflows it
    assert (compress("air filter", hits, HashEmbedder(), budget=3, count=words) == hits[:1])


class ScriptedGenerator(EchoGenerator):
    """Replies with the given texts in turn, word by word."""

    def __init__(self, *replies: str) -> None:
        super().__init__()
        self.replies = list(replies)

    def stream(self, messages, max_new_tokens: int = 512):
        self.reply = self.replies.pop(0)
        yield from super().stream(messages, max_new_tokens)


def test_not_found_on_the_shortened_prompt_is_asked_again_over_the_whole_passages(corpus, tmp_path, hash_embedder):
    gen = ScriptedGenerator("NOT_FOUND", "Clean it every three months [1].")
    config = Config(index=IndexConfig(gpu=False))
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, context_tokens=60, check_citations=False))
    with KnowledgeBase.open(tmp_path / "s", config, embedder=hash_embedder, generator=gen) as kb:
        kb.ingest([corpus], progress=False)
        stream = kb.ask_stream("How often should the air filter be cleaned?", k=5)
        pieces = list(stream)
        short, whole = (p[1]["content"] for p in gen.prompts)
        assert len(short) < len(whole) / 2 and all(h.chunk.text.strip() in whole for h in stream.hits)
        assert "".join(pieces).strip() == "Clean it every three months [1]."  # NOT_FOUND never reached the reader
        assert stream.answer.answered and [c.number for c in stream.answer.citations] == [1]
        assert stream.messages()[1]["content"] == whole and stream.asked_again

        gen.replies = ["NOT_FOUND", "NOT_FOUND"]  # not in the whole passages either: said once, in words
        pieces = list(kb.ask_stream("Who painted the Mona Lisa?", k=5))
        assert pieces == ["The documents do not contain the answer to this question."] and len(gen.prompts) == 4
        kb.config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, compress=False))
        gen.replies = ["NOT_FOUND"]  # whole passages from the start: asked once
        assert (
            list(kb.ask_stream("谁画了蒙娜丽莎？", k=5)) == ["文档中没有找到这个问题的答案。"] and len(gen.prompts) == 5
        )


def test_sentences_scored_for_an_earlier_question_are_not_embedded_again():
    from rag.answer.compress import SentenceVectors

    class Recording(HashEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.texts: list[str] = []

        def embed_documents(self, texts, progress=False):
            self.texts += texts
            return super().embed_documents(texts, progress)

    embedder, kept = Recording(), SentenceVectors(size=3)
    first = kept.get(embedder, ["a b", "c d", "a b"])
    assert embedder.texts == ["a b", "c d"] and np.allclose(first[0], first[2])
    again = kept.get(embedder, ["c d", "e f"])
    assert embedder.texts == ["a b", "c d", "e f"] and np.allclose(
        again, HashEmbedder().embed_documents(["c d", "e f"])
    )
    kept.get(embedder, ["g h"])  # over the size: the least recently used ("a b") goes
    kept.get(embedder, ["a b", "c d"])
    assert embedder.texts[-2:] == ["g h", "a b"]
