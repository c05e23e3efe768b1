"""OCR for PDF pages without a text layer (scans): each page rendered by pypdfium2 (the ``ocr`` extra) and read by
Debian's Tesseract (``apt-get install tesseract-ocr tesseract-ocr-chi-sim``), in simplified Chinese and English, at
the scan's own resolution.
Only the pages that need it are read, and the loader's warnings say which ones and how long each took."""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from indexes.errors import MissingDependencyError, require

LANGUAGES = ("chi_sim", "eng")
DPI = 300  # for a page whose scan resolution cannot be read
DPI_RANGE = (150, 400)
_HAN_GAP = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]) +(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


@dataclass(frozen=True)
class PageText:
    number: int
    text: str
    seconds: float


@functools.lru_cache(maxsize=1)
def languages() -> str:
    """Tesseract's ``-l`` argument: the wanted languages that are installed; a ``MissingDependencyError`` that says
    what to install when Tesseract or all of them are missing."""
    hint = "install it with `apt-get install tesseract-ocr tesseract-ocr-chi-sim` (and `pip install 'rag-kb[ocr]'`)"
    if shutil.which("tesseract") is None:
        raise MissingDependencyError(f"Tesseract is needed to read scanned pages: {hint}")
    listed = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=60).stdout.split()
    found = [lang for lang in LANGUAGES if lang in listed]
    if not found:
        raise MissingDependencyError(f"Tesseract has none of the languages {', '.join(LANGUAGES)}: {hint}")
    return "+".join(found)


def read_pages(pdf: bytes, numbers: list[int], label: str = "") -> list[PageText]:
    """The text of these pages (1-based), each rendered at its scan's own resolution and read by Tesseract; a
    progress bar on a terminal when there are several (a page takes seconds)."""
    from tqdm.auto import tqdm

    langs = languages()
    pdfium = require("pypdfium2", "ocr")
    doc = pdfium.PdfDocument(pdf)
    out = []
    try:
        quiet = True if len(numbers) < 2 else None  # None: a bar on a terminal only
        for number in tqdm(numbers, desc=f"OCR {label}".strip(), unit="page", disable=quiet, leave=False):
            started = time.perf_counter()
            page = doc[number - 1]
            image = page.render(scale=scan_dpi(page) / 72, grayscale=True).to_pil()
            png = io.BytesIO()
            image.save(png, format="PNG")
            run = subprocess.run(["tesseract", "stdin", "stdout", "-l", langs, "--psm", "3"], input=png.getvalue(),
                                 capture_output=True, timeout=600)
            text = run.stdout.decode("utf-8", "replace") if run.returncode == 0 else ""
            out.append(PageText(number, tidy(text), time.perf_counter() - started))
    finally:
        doc.close()
    return out


def scan_dpi(page) -> float:
    """The resolution of the largest image on the page (its pixels over the inches it covers), within ``DPI_RANGE``:
    rendering a 200-dpi scan at 300 dpi blurs it (on the test scans, 9 of 10 Chinese phrases read at the scan's own
    200 dpi, 8 at 300 and 7 at 400)."""
    import pypdfium2.raw as pdfium_c

    best = None
    for image in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=2):
        left, _, right, _ = image.get_bounds()
        width_px = image.get_px_size()[0]
        if right - left > 72 and (best is None or width_px > best[0]):
            best = (width_px, width_px / ((right - left) / 72))
    return min(max(best[1], DPI_RANGE[0]), DPI_RANGE[1]) if best else DPI


def tidy(text: str) -> str:
    """Tesseract's text without the spaces it puts between Chinese characters, and without empty lines' runs."""
    lines = [_HAN_GAP.sub("", line).strip() for line in text.replace("\f", "\n").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
