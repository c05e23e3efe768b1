"""Scanned pages read by OCR on this machine: pages a second and how many gold phrases come out right (after NFKC and
whitespace folding), English and Chinese, for the loader's way (each page rendered at its scan's own resolution)
beside the common fixed 300 dpi, measured in the same run on the same pages.

    python benchmarks/ocr_bench.py [--pages 6]

The pages are the tests' scans (``tests/docgen.py``): ten warehouse rules each, a text PDF rendered at 200 dpi.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ingest.loaders import ocr  # noqa: E402
from tests import docgen  # noqa: E402


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _scans(pages: int) -> list[tuple[bytes, list[str]]]:
    """``pages`` one-page scans, alternating English and Chinese, with their gold phrases."""
    english = docgen._image_pdf(docgen.scan_of(docgen._pdf_bytes([docgen.SCAN_EN])))
    chinese = docgen._image_pdf(docgen.scan_of(docgen.cjk_pdf(docgen.SCAN_ZH, docgen.ZH_FONT)))
    both = [(english, docgen.OCR_GOLD[:10]), (chinese, docgen.OCR_GOLD[10:])]
    return [both[i % 2] for i in range(pages)]


def _run(scans, dpi: float | None) -> tuple[float, list[int]]:
    """Seconds a page, and phrases found per page; ``dpi`` None: the loader's own choice."""
    original = ocr.scan_dpi
    if dpi is not None:
        ocr.scan_dpi = lambda page: dpi
    try:
        started, found = time.perf_counter(), []
        for pdf, gold in scans:
            text = _norm(ocr.read_pages(pdf, [1])[0].text)
            found.append(sum(_norm(g) in text for g in gold))
        return (time.perf_counter() - started) / len(scans), found
    finally:
        ocr.scan_dpi = original


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=6)
    args = ap.parse_args()
    print(f"Tesseract languages: {ocr.languages()}; {args.pages} pages, half English, half Chinese")
    scans = _scans(args.pages)
    print(f"{'rendering':28}{'pages/s':>9}{'s/page':>8}{'English found':>15}{'Chinese found':>15}")
    for label, dpi in (("the scan's own dpi (ours)", None), ("fixed 300 dpi", 300.0)):
        seconds, found = _run(scans, dpi)
        en, zh = found[0::2], found[1::2]
        print(f"{label:28}{1 / seconds:>9.2f}{seconds:>8.1f}{f'{sum(en)}/{10 * len(en)}':>15}"
              f"{f'{sum(zh)}/{10 * len(zh)}':>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
