"""Spreadsheets: Excel workbooks (openpyxl, the ``office`` extra; each sheet under its name as a heading, the cells'
values rather than their formulas) and CSV/TSV files (the standard library). Rows become Markdown row groups that
repeat the header (``ingest.loaders.tables``)."""

from __future__ import annotations

import csv
import io

from indexes.errors import require
from ingest.loaders.document import Builder, Document, LoadError
from ingest.loaders.office import check_office
from ingest.loaders.tables import table_text
from ingest.loaders.text import decode


def load_xlsx(data: bytes, source: str) -> Document:
    check_office(data, "Excel")
    openpyxl = require("openpyxl", "office")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise LoadError(f"corrupt or unreadable Excel file: {exc}") from exc
    out = Builder(source)
    try:
        for sheet in book.worksheets:
            text = table_text(list(sheet.iter_rows(values_only=True)))
            if text:
                out.heading(1, sheet.title)
                out.paragraph(text)
    finally:
        book.close()
    return out.build("Excel file has no cells with values")


def load_csv(data: bytes, source: str) -> Document:
    text = decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if source.lower().endswith(".tsv") else csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise LoadError(f"malformed CSV: {exc}") from exc
    out = Builder(source)
    out.paragraph(table_text(rows))
    return out.build("CSV file has no values")
