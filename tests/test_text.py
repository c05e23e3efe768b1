"""Loaders, normalisation and chunking."""

from __future__ import annotations

import pytest

from indexes.errors import ConfigError
from indexes.text import normalize
from ingest.chunking import Chunker
from ingest.loaders import Document, Heading, LoadError, load, walk
from tests.conftest import CORPUS


def count(texts):
    return [len(t.split()) + sum(1 for ch in t if "\u4e00" <= ch <= "\u9fff") for t in texts]


def test_normalize_matches_kangxi_fullwidth_and_rejoins_hyphens():
    assert normalize("⾃然") == normalize("自然") == "自然"
    assert normalize("ＡＢＣ１２３") == "ABC123"
    assert normalize("exam-\n   ple  text\n\n\nnext") == "example text\nnext"
    assert normalize("中文\n文本") == "中文文本"


def test_html_drops_scripts_styles_and_navigation_and_keeps_headings():
    doc = load(CORPUS / "support-faq.html")
    assert "tracking code" not in doc.text and "font-family" not in doc.text
    assert "Log in" not in doc.text and "All rights reserved" not in doc.text
    assert "five-year warranty" in doc.text
    titles = [h.title for h in doc.headings]
    assert titles[:2] == ["Frequently asked questions", "How long is the warranty?"]
    h = doc.headings[1]
    assert doc.text[h.offset : h.offset + len(h.title)] == h.title


def test_links_inside_headings_are_content_not_navigation(tmp_path):
    p = tmp_path / "doc.html"
    p.write_text(
        '<html><body><nav class="contents"><ul><li>TOC entry</li></ul></nav><div class="body" role="main">'
        '<section id="s"><h2><a class="toc-backref" href="#x">Why indentation?</a><a class="headerlink">¶</a></h2>'
        "<p>Because it is clear.</p></section></div></body></html>"
    )
    doc = load(p)
    assert [h.title for h in doc.headings] == ["Why indentation?"]
    assert doc.text.startswith("Why indentation?") and "TOC entry" not in doc.text


def test_markdown_headings_skip_code_fences(tmp_path):
    p = tmp_path / "a.md"
    p.write_text("# Top\n\n```\n# not a heading\n```\n\n## Sub\ntext\n")
    assert [(h.level, h.title) for h in load(p).headings] == [(1, "Top"), (2, "Sub")]


def test_gb18030_text_is_decoded(tmp_path):
    p = tmp_path / "gbk.txt"
    p.write_bytes("热泵的过滤网每三个月清洗一次。".encode("gb18030"))
    assert "过滤网" in load(p).text


def test_walk_include_exclude(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.md", "sub/b.txt", "sub/c.py", "sub/skip.md"):
        (tmp_path / name).write_text("x")
    found = {p.name for p in walk([tmp_path], exclude=["skip.*"])}
    assert found == {"a.md", "b.txt"}
    with pytest.raises(LoadError, match="does not exist"):
        list(walk([tmp_path / "missing"]))


def test_chunks_respect_size_headings_and_cjk_sentences():
    text = "# Title\n\nIntro line.\n\n## Part\n\n" + "这是第一句话。这是第二句话！这是第三句话？" * 30
    doc = Document("x.md", text, headings=(Heading(0, 1, "Title"), Heading(text.index("## Part"), 2, "Part")))
    chunks = Chunker(count, max_tokens=40, overlap=8).chunk(doc, "hash")
    assert chunks[0].headings == ("Title",) and all(c.headings == ("Title", "Part") for c in chunks[1:])
    assert all(count([c.text])[0] <= 40 for c in chunks)
    for c in chunks[1:]:
        assert c.text.endswith(("。", "！", "？")) and text[c.start : c.end] == c.text
    assert chunks[2].start < chunks[1].end  # consecutive chunks overlap


def test_an_overlong_sentence_is_cut_not_passed_through():
    doc = Document("x.txt", "word " * 500)
    chunks = Chunker(count, max_tokens=50, overlap=0).chunk(doc, "h")
    assert len(chunks) >= 10 and max(count([c.text for c in chunks])) <= 50


def test_chunker_rejects_bad_settings():
    with pytest.raises(ConfigError):
        Chunker(count, max_tokens=8)
    with pytest.raises(ConfigError):
        Chunker(count, max_tokens=100, overlap=60)


def test_garbled_text_is_detected_but_real_mixed_text_is_not():
    from ingest.loaders.pdf import _looks_garbled

    garbled = "၂ܱ֥؋ࡥٺႿ LATEX νልࢺ֥ക ຦ಖ ୍ ᄅ ರ ൐Ⴈ tlmgr ۽ऎ ॴϱЧശࠩ TEX Live ശޡࠩЇ νልޡЇ " * 5
    assert _looks_garbled(garbled)
    assert not _looks_garbled("如何使首段段首也缩进？使用 indentfirst 宏包：\\usepackage{indentfirst} " * 5)
    assert not _looks_garbled("Python uses indentation for grouping statements; Ελληνικά too. " * 5)


def test_contents_pages_are_skipped_and_reported(tmp_path):
    from tests.pdfgen import write_pdf

    toc = ["Contents"] + [f"{i} Topic number {i} . . . . . . . . . . . . . {i + 3}" for i in range(1, 12)]
    path = write_pdf(tmp_path / "book.pdf", [toc, ["Topic number 1 is about pumps and their seals."]])
    doc = load(path)
    assert "Topic number 3" not in doc.text and "pumps and their seals" in doc.text
    assert any("page 1" in w and "table of contents" in w for w in doc.warnings)
    assert doc.page_starts[1] > doc.page_starts[0]  # page numbers still line up


def test_a_back_of_book_index_page_is_skipped_but_a_table_of_numbers_is_not(tmp_path):
    from tests.pdfgen import write_pdf

    index = [
        "Index",
        *[
            f"{term}, {i % 2 + 1}, {i % 3 + 1}-{i % 3 + 2}"
            for i, term in enumerate(
                ["amsmath", "\\caption", "figure", "footnote", "hyperref", "longtable", "minipage", "tabularx"]
            )
        ],
    ]
    table = [
        "Population by city",
        *[
            f"{city}, {n}"
            for city, n in [
                ("Berlin", 3645),
                ("Hamburg", 1841),
                ("Munich", 1471),
                ("Cologne", 1085),
                ("Frankfurt", 753),
                ("Stuttgart", 634),
                ("Leipzig", 587),
                ("Dresden", 556),
            ]
        ],
    ]
    doc = load(write_pdf(tmp_path / "book.pdf", [["Pumps move water uphill."], table, index]))
    assert "Hamburg, 1841" in doc.text and "hyperref" not in doc.text
    assert any("page 3" in w and "index" in w for w in doc.warnings) and not any("page 2" in w for w in doc.warnings)


def test_pdf_outline_becomes_headings_where_the_titles_are_printed(tmp_path):
    import pypdf

    from tests.pdfgen import write_pdf

    path = write_pdf(
        tmp_path / "faq.pdf",
        [
            ["User guide", "Contents", "1 Pumps . . . . . . . . . . 2", "1 Pumps", "Pumps move water uphill."],
            ["Pumps need a yearly check.", "2  Seals and GASKETS", "Seals wear out; replace them every spring."],
        ],
    )
    writer = pypdf.PdfWriter(clone_from=str(path))
    writer.add_outline_item(title="1 Pumps", page_number=0)
    writer.add_outline_item(title="2 Seals and gaskets", page_number=1)  # printed with other spacing and case
    writer.add_outline_item(title="3 A section whose title is printed nowhere", page_number=1)
    writer.write(str(path))
    doc = load(path)
    assert "1 Pumps . ." not in doc.text  # a contents line on a page with other text is dropped
    assert [h.title for h in doc.headings] == ["1 Pumps", "2 Seals and gaskets"]
    # the title line, not the contents line
    assert doc.text[doc.headings[0].offset :].startswith("1 Pumps\nPumps move water")
    assert doc.text[doc.headings[1].offset :].startswith("2  Seals and GASKETS")
    chunks = Chunker(count, max_tokens=200, overlap=0).chunk(doc, "h")
    by_text = {c.text.splitlines()[0]: c for c in chunks}
    assert by_text["User guide"].headings == ()
    assert (
        by_text["Pumps need a yearly check."].headings == ("1 Pumps",)
        and by_text["Pumps need a yearly check."].page == 2
    )
    assert by_text["Pumps need a yearly check."].pages == "2"
    assert by_text["2  Seals and GASKETS"].headings == ("2 Seals and gaskets",)


def test_a_sentence_cut_by_a_page_break_stays_in_one_chunk_that_names_both_pages(tmp_path):
    from tests.pdfgen import write_pdf

    path = write_pdf(
        tmp_path / "manual.pdf",
        [
            ["Pumps move water uphill. The impeller of the main pump must be inspected after every"],
            ["two hundred hours of running, and replaced when worn.", "Seals are replaced every spring"],
            ["The warranty lasts five years."],
        ],
    )
    chunks = Chunker(count, max_tokens=200, overlap=0).chunk(load(path), "h")
    cut = next(c for c in chunks if "two hundred hours" in c.text)
    assert "inspected after every" in cut.text and (cut.page, cut.page_end, cut.pages) == (1, 2, "1-2")
    last = next(c for c in chunks if "warranty" in c.text)  # a page starting with a capital starts anew (a slide)
    assert last.text == "The warranty lasts five years." and last.pages == "3"
    text = "保养时这个命\n\n令会开始执行。\n\n新的一页。"  # Chinese has no capitals: a page going on in Chinese runs on
    doc = Document("zh.pdf", text, page_starts=(0, 8, 17))
    assert [(c.text, c.pages) for c in Chunker(count, max_tokens=200, overlap=0).chunk(doc, "h")] == [
        ("保养时这个命\n\n令会开始执行。", "1-2"),
        ("新的一页。", "3"),
    ]
    # where the two pages do not fit one chunk, the cut falls between sentences, not at the page break
    small = Chunker(count, max_tokens=20, overlap=0).chunk(load(path), "h")
    assert any(c.text.startswith("The impeller") and c.text.endswith("replaced when worn.") for c in small)


def test_running_headers_and_footers_are_dropped_but_body_lines_are_kept(tmp_path):
    from tests.pdfgen import write_pdf

    footer = "ACME Pump Manual (c) 2024 ACME Corp."
    pages = [
        [f"Chapter {1 + i // 2} Pumps {i + 1}", f"Body line {i} about impellers.", "3 steps to prime a pump", footer]
        for i in range(4)
    ]
    doc = load(write_pdf(tmp_path / "manual.pdf", pages))
    assert "ACME Corp" not in doc.text and "Chapter" not in doc.text
    assert all(f"Body line {i} about impellers." in doc.text for i in range(4))
    assert doc.text.count("3 steps to prime a pump") == 4  # the same last-but-one line on every page is content


def test_page_numbers_offset_from_the_file_are_running_lines_but_numbered_steps_are_not(tmp_path):
    from tests.pdfgen import write_pdf

    # printed page numbers run 10 ahead of the file's, under a per-chapter header
    titled = [
        ["Setup 11", "Unpack the pump."],
        ["Setup 12", "Mount the pump."],
        ["Care 13", "Oil the bearings."],
        ["Care 14", "Replace the seals."],
    ]
    doc = load(write_pdf(tmp_path / "guide.pdf", titled))
    assert "Setup" not in doc.text and "Care" not in doc.text and "Replace the seals." in doc.text
    steps = [
        ["Step 3", "Open the valve."],
        ["Step 7", "Close the lid."],
        ["2019 480 35", "Output per year."],
        ["2021 512 40", "Output, later years."],
    ]
    doc = load(write_pdf(tmp_path / "steps.pdf", steps))
    assert all(line in doc.text for line in ("Step 3", "Step 7", "2019 480 35", "2021 512 40"))


def test_a_line_ending_with_its_page_number_is_running_only_if_other_pages_have_one(tmp_path):
    from tests.pdfgen import write_pdf

    lone = [["Introduction", "Read this first."], ["Step 2", "Open the valve."], ["Finish", "Close the lid."]]
    assert "Step 2" in load(write_pdf(tmp_path / "lone.pdf", lone)).text
    # one-page sections: every header differs, but each ends with its page's number
    headed = [["A Intro 1", "Read this first."], ["B Setup 2", "Open the valve."], ["C Care 3", "Close the lid."]]
    text = load(write_pdf(tmp_path / "headed.pdf", headed)).text
    assert not any(h in text for h in ("Intro", "Setup", "Care")) and "Open the valve." in text


def test_a_bookmark_title_is_found_where_the_pdf_prints_it_with_ligatures_and_curly_quotes():
    from ingest.loaders.pdf import _find_title

    page = "Contents\n85 Error: pdﬂatex (ﬁle x.ttf): can’t ﬁnd table ‘maxp’\nNew in this version."
    assert _find_title(page, "85 Error: pdflatex (file x.ttf): can't find table `maxp'", 0) == page.index("85")
    assert _find_title(page, "Nothing like it at all here", 0) is None


def test_texs_ts1_symbols_that_pypdf_returns_as_glyph_names_read_as_text():
    from ingest.loaders.pdf import _fix_ligatures

    page = ("CTEX 主要有三个部分：\n/x88 http://www.ctex.org 主页\n/x88宏包 bibentry\n"
            "如何显示千分号 /x87 ？ 1/x87 error /x8a /x880")
    assert (
        _fix_ligatures(page)
        == "CTEX 主要有三个部分：\n• http://www.ctex.org 主页\n•宏包 bibentry\n如何显示千分号 ‰ ？ 1‰ error /x8a /x880"
    )
