"""HTML (BeautifulSoup): the main content's text with its headings; scripts, navigation and footers dropped."""

from __future__ import annotations

import re

from indexes.errors import require
from ingest.loaders.document import Document, Heading, LoadError
from ingest.loaders.tables import table_text

_BLOCK = {"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "pre",
          "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "figure", "figcaption", "header"}
_DROP = ["script", "style", "noscript", "nav", "footer", "aside", "form", "template", "svg", "iframe", "button"]
_CONTAINERS = {"div", "section", "ul", "ol", "table", "header", "aside", "menu", "dl"}
_BOILERPLATE = re.compile(
    r"(^|[-_ ])(nav|navbar|sidebar|sphinxsidebar|menu|breadcrumbs?|footer|related|toc|skip|cookie)([-_ ]|$)", re.I
)


def load_html(html: str, source: str) -> Document:
    bs4 = require("bs4", None, "beautifulsoup4")
    soup = bs4.BeautifulSoup(html, "html.parser")
    for tag in soup(_DROP):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        attrs = " ".join([*(tag.get("class") or []), tag.get("id") or "", tag.get("role") or ""])
        # Only containers are judged by class/id: an inline link classed "toc-backref" inside a heading is content.
        if tag.get("role") == "navigation" or (_BOILERPLATE.search(attrs) and tag.name in _CONTAINERS):
            tag.decompose()
    root = soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article") or soup.body or soup
    writer = _TextWriter(bs4)
    writer.visit(root)
    parts, headings = writer.parts, writer.headings
    text = "".join(parts).strip("\n")
    lead = len("".join(parts)) - len("".join(parts).lstrip("\n"))
    headings = [Heading(h.offset - lead, h.level, h.title) for h in headings]
    if not text.strip():
        raise LoadError("HTML page has no text outside scripts, styles and navigation")
    return Document(source, text, headings=tuple(headings))


class _TextWriter:
    """Walks the tree once, writing its text with blank lines between blocks and noting where headings start."""

    def __init__(self, bs4) -> None:
        self.bs4 = bs4
        self.parts: list[str] = []
        self.headings: list[Heading] = []
        self.length = 0

    def emit(self, s: str) -> None:
        self.parts.append(s)
        self.length += len(s)

    def newline(self, n: int) -> None:
        tail = "".join(self.parts[-2:])
        have = len(tail) - len(tail.rstrip("\n")) if tail.strip() or self.parts else n
        if self.length and have < n:
            self.emit("\n" * (n - have))

    def visit(self, node) -> None:
        bs4 = self.bs4
        if isinstance(node, bs4.NavigableString):
            if not isinstance(node, (bs4.Comment, bs4.Doctype, bs4.Declaration, bs4.ProcessingInstruction)):
                self.text(node)
            return
        name = node.name
        if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.heading(node)
            return
        if name == "table" and self.table(node):
            return
        block = name in _BLOCK
        if block:
            self.newline(
                2 if name in ("p", "pre", "table", "blockquote", "section", "article", "dl", "ul", "ol") else 1
            )
        for child in node.children:
            self.visit(child)
        if block:
            self.newline(1)

    def text(self, node) -> None:
        text = str(node)
        if node.find_parent("pre") is None:
            text = re.sub(r"\s+", " ", text)
            if not self.length or self.parts[-1].endswith(("\n", " ")):
                text = text.lstrip()
        if text:
            self.emit(text)

    def table(self, node) -> bool:
        """A data table as Markdown row groups with its header (``ingest.loaders.tables``); False for a layout table
        (one column, or cells of running text), which is read as text."""
        rows = [tr for tr in node.find_all("tr") if tr.find_parent("table") is node]
        cells = [[re.sub(r"\s+", " ", c.get_text(" ")).strip() for c in tr.find_all(["td", "th"], recursive=False)]
                 for tr in rows]
        if max((len(r) for r in cells), default=0) < 2 or any(len(c) > 300 for r in cells for c in r):
            return False
        header = max(1, sum(1 for tr in rows if tr.find_parent("thead") is not None))
        self.newline(2)
        self.emit(table_text(cells, header))
        self.newline(2)
        return True

    def heading(self, node) -> None:
        self.newline(2)
        title = re.sub(r"\s+", " ", node.get_text(" ")).strip().rstrip("¶").strip()
        if title:
            self.headings.append(Heading(self.length, int(node.name[1]), title))
            self.emit(title)
        self.newline(2)
