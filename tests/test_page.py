"""The chat page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a live server on
127.0.0.1: collections, uploads with progress and a failure reason, a streamed answer whose citation opens the right
passage and page, stop, history across a reload, search, document actions, API keys. Every request the page makes
is recorded, and one that leaves 127.0.0.1 fails the test. A screenshot of the chat is kept in ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright (pip install -e '.[test]')"
)
CHROMIUM = os.environ.get("RAG_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip(
        "the browser tests need Debian's chromium (apt-get install -y chromium); skipped", allow_module_level=True
    )

from playwright.sync_api import expect  # noqa: E402

# Every wait below is on a condition; these bounds are for a broken page, not a slow machine.
BOUND_S = 300
expect.set_options(timeout=BOUND_S * 1000)

from rag.serve.db import ServerDB  # noqa: E402
from rag.serve.keys import create_key  # noqa: E402
from tests.conftest import CORPUS, ROOT  # noqa: E402
from tests.test_serve_live import free_port  # noqa: E402

ARTIFACTS = Path(os.environ.get("RAG_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DONE = "[data-testid=upload-stage][data-status=committed], [data-testid=upload-stage][data-status=failed]"


class PageServer:
    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log, self.port = root, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.page_server", str(root), str(self.port)],
            cwd=ROOT,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("page server not ready: " + log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def live(tmp_path):
    server = PageServer(tmp_path / "root", tmp_path / "server.log")
    yield server
    server.stop()


class Visit:
    """A page of the browser that records every request it makes and every script error."""

    def __init__(self, browser, url: str, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 850})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        # every text an answer shows, however briefly (a stage line may last less than a poll on a busy machine)
        self.context.add_init_script("""window.__texts = [];
          new MutationObserver(() => {
            for (const n of document.querySelectorAll("[data-testid=answer-text]")) {
              const t = n.textContent;
              if (t && !window.__texts.includes(t)) window.__texts.push(t);
            }
          }).observe(document, { subtree: true, childList: true, characterData: true });""")
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())  # confirm() of delete buttons
        self.page.goto(url)

    def outside(self) -> list[str]:
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != "127.0.0.1"
        ]


def ask(page, question: str) -> tuple[object, list[str]]:
    """Type a question and press Enter; returns the answer's element and the texts it showed while streaming."""
    answers = page.locator("[data-testid=answer]")
    before = answers.count()
    page.fill("[data-testid=question]", question)
    page.press("[data-testid=question]", "Enter")
    answer = answers.nth(before)
    seen: list[str] = []
    deadline = time.monotonic() + BOUND_S
    while answer.get_attribute("aria-busy") != "false":
        assert time.monotonic() < deadline, "the answer did not finish"
        text = answer.locator("[data-testid=answer-text]").inner_text()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        time.sleep(0.02)
    return answer, seen


def _the_cited_page_shows_the_passage_highlighted(page, dialog) -> None:
    """The PDF page as rendered by the server, with a yellow mark over the passage's lines (near the top of page 2,
    where the cited version note starts); the dialog's screenshot is kept for a person to look at."""
    import io

    from PIL import Image, ImageStat

    image = dialog.locator("[data-testid=passage-page-image]")
    expect(image).to_be_visible()
    page.wait_for_function("() => { const i = document.querySelector('[data-testid=passage-page-image]');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    marks = dialog.locator("[data-testid=passage-highlight]")
    expect(marks.first).to_be_visible()
    sheet, mark = image.bounding_box(), marks.first.bounding_box()
    assert sheet["x"] <= mark["x"] and mark["x"] + mark["width"] <= sheet["x"] + sheet["width"] + 1
    assert 0 <= mark["y"] - sheet["y"] < 0.25 * sheet["height"], (sheet, mark)
    shot = Image.open(io.BytesIO(page.screenshot(clip=mark))).convert("RGB")
    r, g, b = ImageStat.Stat(shot).mean
    assert r > b + 40 and g > b + 20, (r, g, b)  # yellow over the text, not a white page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialog.screenshot(path=str(ARTIFACTS / "pdf-citation.png"))


def test_upload_ask_cite_stop_history_and_search_in_a_real_browser(browser, live, tmp_path):
    visit = Visit(browser, live.url)
    page = visit.page

    page.fill("[data-testid=new-collection-name]", "manuals")
    page.click("[data-testid=new-collection-create]")
    expect(page.locator("[data-testid=collection][data-name=manuals] [data-testid=collection-counts]")).to_have_text(
        "0 docs · 0 chunks"
    )
    expect(page.locator("[data-testid=collection-select]")).to_have_value("manuals")

    # several files at once, one of them a corrupt PDF: a bar per file, the stages, the reason in words
    page.click("[data-testid=tab-documents]")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not a pdf at all")
    files = [CORPUS / "aurora-manual.md", CORPUS / "release-notes.pdf", CORPUS / "保修与服务.md", broken]
    page.set_input_files("[data-testid=file-input]", [str(f) for f in files])
    rows = page.locator("[data-testid=upload]")
    expect(rows).to_have_count(4)
    stages: set[str] = set()
    deadline = time.monotonic() + BOUND_S
    while page.locator(DONE).count() < 4:
        assert time.monotonic() < deadline, page.locator("[data-testid=uploads]").inner_text()
        stages.update(
            filter(None, (s.get_attribute("data-status") for s in page.locator("[data-testid=upload-stage]").all()))
        )
        time.sleep(0.05)
    failed = page.locator("[data-testid=upload][data-name='broken.pdf'] [data-testid=upload-stage]")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_contain_text("corrupt")
    for f in files[:3]:
        row = page.locator(f"[data-testid=upload][data-name='{f.name}']")
        expect(row.locator("[data-testid=upload-stage]")).to_have_attribute("data-status", "committed")
        assert row.locator("[data-testid=upload-progress]").get_attribute("value") == "100"
    assert stages & {"queued", "running", "parsing", "embedding"}, stages  # progress was shown before the end
    expect(page.locator("[data-testid=document]")).to_have_count(3)  # the list updated when the job committed
    expect(page.locator("[data-testid=collection][data-name=manuals] [data-testid=collection-counts]")).to_contain_text(
        "3 docs"
    )

    # a streamed answer whose [n] chip opens the passage, with its file, page and neighbours
    page.click("[data-testid=tab-chat]")
    answer, seen = ask(page, "Which protocol do smart meters speak?")
    assert len(seen) >= 3, seen  # the text grew token by token
    assert "P1 protocol" in answer.inner_text()
    chip = answer.locator("[data-testid=citation]").first
    n = chip.get_attribute("data-n")
    chip.click()
    dialog = page.locator("[data-testid=passage]")
    expect(dialog).to_be_visible()
    expect(dialog.locator("[data-testid=passage-source]")).to_have_text("release-notes.pdf")
    expect(dialog.locator("[data-testid=passage-location]")).to_contain_text("p.2")
    expect(dialog.locator("[data-testid=passage-text]")).to_contain_text("smart meters that speak the P1 protocol")
    expect(dialog.locator("[data-testid=passage-before], [data-testid=passage-after]").first).to_be_attached()
    _the_cited_page_shows_the_passage_highlighted(page, dialog)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert answer.locator("[data-testid=source]").first.inner_text().startswith(f"[{n}] release-notes.pdf, p.2")

    answer, _ = ask(page, "保修期多久？")
    assert answer.get_attribute("lang") == "zh" and "保修" in answer.inner_text()
    answer.locator("[data-testid=citation]").first.click()
    expect(dialog.locator("[data-testid=passage-source]")).to_have_text("保修与服务.md")
    expect(dialog.locator("[data-testid=passage-location]")).to_contain_text("保修期限")  # the heading path
    expect(dialog.locator(".md-heading").first).to_be_attached()  # Markdown rendered, not shown as "## …"
    assert "## " not in dialog.locator("[data-testid=passage-body]").inner_text()
    page.keyboard.press("Escape")

    answer, _ = ask(page, "What is the airspeed velocity of an unladen swallow?")
    expect(answer.locator("[data-testid=not-found]")).to_have_text("Not found in the documents")
    assert answer.get_attribute("data-answered") == "false" and answer.locator("[data-testid=citation]").count() == 0

    answer, _ = ask(page, "How often should the air filter be cleaned?")
    assert "three months" in answer.inner_text() and answer.locator("[data-testid=citation]").count() >= 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "chat-page.png"
    page.screenshot(path=str(shot))  # 1280 px wide
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot of the chat page: {shot}")

    # stop cancels a running answer, and the next question is answered (the server freed its LLM slot)
    page.fill("[data-testid=question]", "Tell me slowly about the compressor")
    page.press("[data-testid=question]", "Enter")
    stop = page.locator("[data-testid=stop]")
    expect(stop).to_be_visible()
    waiting = page.locator("[data-testid=answer]").last.locator("[data-testid=answer-text]")
    expect(waiting).to_contain_text("word0")
    # the stage before the first token
    assert page.evaluate("window.__texts.some((t) => t.startsWith('Reading 5 passages'))")
    stop.click()
    stopped = page.locator("[data-testid=answer]").last
    expect(stopped.locator("[data-testid=stopped]")).to_be_visible()
    expect(page.locator("[data-testid=send]")).to_be_visible()
    answer, _ = ask(page, "Which refrigerant is used?")
    assert answer.get_attribute("data-answered") == "true", answer.inner_text()

    # history is the server's: after a reload the chat is listed, reopens with its turns, and can be deleted
    page.reload()
    expect(page.locator("[data-testid=collection-select]")).to_have_value("manuals")  # the collections, after a Stop
    chats = page.locator("[data-testid=chat]")
    expect(chats).to_have_count(1)
    expect(chats.first).to_contain_text("Which protocol do smart meters speak?")
    chats.first.click()
    expect(page.locator("[data-testid=answer]")).to_have_count(5)  # the stopped answer was not kept
    expect(page.locator("[data-testid=question-bubble]").nth(1)).to_have_text("保修期多久？")
    page.locator("[data-testid=answer]").first.locator("[data-testid=citation]").first.click()
    expect(dialog.locator("[data-testid=passage-text]")).to_contain_text("P1 protocol")
    page.keyboard.press("Escape")

    # a follow-up in a reopened chat goes on from the saved turns
    answer, _ = ask(page, "Which error was fixed in that version?")
    assert answer.get_attribute("data-answered") == "true"
    turns = httpx.get(f"{live.url}/chats/{chats.first.get_attribute('data-id')}", timeout=60).json()["turns"]
    assert len(turns) == 6 and turns[-1]["question"] == "Which error was fixed in that version?"

    # the search view: raw passages with scores and per-stage timings
    page.click("[data-testid=tab-search]")
    page.fill("[data-testid=search-query]", "air filter")
    page.click("[data-testid=search-run]")
    hits = page.locator("[data-testid=search-hit]")
    expect(hits.first).to_contain_text("score")
    expect(page.locator("[data-testid=search-timings]")).to_contain_text("embed")
    hits.first.click()
    expect(dialog.locator("[data-testid=passage-text]")).to_contain_text("air filter")
    page.keyboard.press("Escape")

    # re-index and delete a document from its row
    page.click("[data-testid=tab-documents]")
    row = page.locator("[data-testid=document][data-name='aurora-manual.md']")
    row.locator("[data-testid=reindex]").click()
    expect(page.locator("[data-testid=upload]").first.locator("[data-testid=upload-stage]")).to_have_attribute(
        "data-status", "committed"
    )
    row.locator("[data-testid=delete-document]").click()
    expect(page.locator("[data-testid=document]")).to_have_count(2)
    assert "aurora-manual.md" not in page.locator("[data-testid=documents]").inner_text()

    # deleting a chat
    page.click("[data-testid=tab-chat]")
    page.locator("[data-testid=delete-chat]").first.click()
    expect(page.locator("[data-testid=chat]")).to_have_count(0)
    assert httpx.get(f"{live.url}/chats", timeout=60).json()["chats"] == []

    # a new chat is in the history as soon as its first question is asked, under that question
    page.fill("[data-testid=question]", "Tell me slowly about the pump")
    page.press("[data-testid=question]", "Enter")
    expect(page.locator("[data-testid=chat]")).to_have_count(1)
    expect(page.locator("[data-testid=chat]").first).to_contain_text("Tell me slowly about the pump")
    expect(page.locator("[data-testid=stop]")).to_be_visible()  # while the answer is still being written
    page.locator("[data-testid=stop]").click()
    expect(page.locator("[data-testid=send]")).to_be_visible()

    # 390 px wide (a phone): one column, the question box in view after an answer, the documents table whole
    page.set_viewport_size({"width": 390, "height": 800})
    answer, _ = ask(page, "How often should the air filter be cleaned?")
    expect(page.locator("[data-testid=send]")).to_be_in_viewport()
    expect(page.locator("[data-testid=question]")).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "chat-page-390.png"))
    page.click("[data-testid=tab-documents]")
    expect(page.locator("[data-testid=document]").first).to_be_visible()
    page.wait_for_function("""() => {  // the rightmost column, the row's buttons, inside the window
      const buttons = [...document.querySelectorAll("[data-testid=delete-document]")];
      return buttons.length > 0 && buttons.every((b) => b.getBoundingClientRect().right <= window.innerWidth + 1);
    }""")
    page.screenshot(path=str(ARTIFACTS / "documents-390.png"), full_page=True)
    page.click("[data-testid=tab-chat]")

    assert visit.errors == [], visit.errors
    assert visit.outside() == [], visit.outside()
    assert len(visit.requests) > 20


def test_the_page_asks_for_a_key_once_and_explains_a_refused_one(browser, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _, token = create_key(ServerDB(root), "reader", ["read", "ingest", "admin"])
    server = PageServer(root, tmp_path / "server.log")
    try:
        assert (
            httpx.post(
                f"{server.url}/collections",
                json={"name": "notes"},
                timeout=10,
                headers={"Authorization": f"Bearer {token}"},
            ).status_code
            == 201
        )
        visit = Visit(browser, server.url)
        page = visit.page
        dialog = page.locator("[data-testid=key-dialog]")
        expect(dialog).to_be_visible()
        expect(page.locator("[data-testid=key-reason]")).to_contain_text("needs an API key")
        page.fill("[data-testid=key-input]", "rk-not-a-real-key")
        page.click("[data-testid=key-save]")
        expect(page.locator("[data-testid=key-reason]")).to_contain_text("not valid")
        expect(dialog).to_be_visible()
        page.fill("[data-testid=key-input]", token)
        page.click("[data-testid=key-save]")
        expect(page.locator("[data-testid=collection][data-name=notes]")).to_be_visible()
        expect(page.locator("[data-testid=banner]")).to_be_hidden()
        page.reload()  # the key is kept for the tab: no second prompt
        expect(page.locator("[data-testid=collection][data-name=notes]")).to_be_visible()
        expect(dialog).to_be_hidden()
        assert visit.errors == [] and visit.outside() == []
    finally:
        server.stop()
