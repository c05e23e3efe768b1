"""The citation check across languages: a Chinese answer from English passages (and the reverse) is matched to the
passage it translates by the store's multilingual embedder; what it does not translate stays unsupported."""

from __future__ import annotations

import pytest

from indexes.types import Chunk
from rag.answer.citations import check_citations
from rag.types import Hit

QUICK_START = (
    "Aurora H2 quick start\n\n1. Open the Aurora Home app and tap \"Add device\".\n"
    "2. Hold the Wi-Fi button on the indoor unit for five seconds until the light blinks blue.\n\n"
    "Factory reset: hold the leaf button and the Wi-Fi button together for ten seconds.\n"
    "All settings, including the holiday program, are erased."
)
ERRORS = (
    "## Error codes\n\n- E03: outdoor temperature sensor fault. Check the sensor cable at terminal X4.\n"
    "- E07: water pressure too low. Refill the circuit to 1.5 bar and restart.\n"
    "- E12: defrost took longer than 15 minutes. Make sure snow is not blocking the fan."
)
WARRANTY_ZH = (
    "## 保修期限\n所有 Aurora 热泵整机保修五年，包括零件和人工。"
    "在购买后三十天内完成线上注册，压缩机保修期延长至十年。"
)


def _hits() -> list[Hit]:
    texts = [QUICK_START, ERRORS, WARRANTY_ZH]
    return [Hit(Chunk(i, f"doc{i}", t, 0, len(t)), 1.0 - i / 10, i) for i, t in enumerate(texts, 1)]


@pytest.mark.parametrize(
    ("sentence", "passage"),
    [
        ("错误代码 E07 表示水压过低，需要把水路充到 1.5 bar 后重启。", 2),
        ("恢复出厂设置时，同时按住叶子按钮和 Wi-Fi 按钮十秒钟。", 1),
    ],
)
def test_a_chinese_sentence_is_cited_to_the_english_passage_it_translates(e5, sentence, passage):
    checked = check_citations(sentence, _hits(), question="怎么办？", embedder=e5)
    assert not checked.unsupported and checked.added == 1
    assert checked.text.endswith(f"[{passage}]。")
    assert check_citations(sentence, _hits(), question="怎么办？").unsupported  # words alone cannot tell


def test_a_wrong_citation_across_languages_is_moved_to_the_passage_it_translates(e5):
    reply = "所有设置，包括假期程序，都会被清除。[2]"
    checked = check_citations(reply, _hits(), question="恢复出厂设置会怎样？", embedder=e5)
    assert checked.text == "所有设置，包括假期程序，都会被清除[1]。" and checked.corrected == 1


def test_what_no_passage_says_stays_unsupported_in_any_language(e5):
    hits = _hits()
    changed_number = "错误代码 E09 表示水压过低，需要把水路充到 1.5 bar 后重启。"  # no E09 in any passage
    elsewhere = "蒙娜丽莎是达芬奇在十六世纪初画的一幅肖像画。"
    for sentence in (changed_number, elsewhere):
        checked = check_citations(sentence + "[2]", hits, question="怎么办？", embedder=e5)
        assert checked.unsupported == (sentence,) and "[" not in checked.text
    english = "The compressor warranty is extended to ten years when the unit is registered online."
    checked = check_citations(english, hits, question="How long is the warranty?", embedder=e5)
    assert checked.text.endswith("[3].")  # and from Chinese passages to an English answer
