"""Write small real PDFs (Helvetica, ASCII text, one string list per page) for tests and examples."""

from __future__ import annotations

from pathlib import Path


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, lines in enumerate(pages):
        content_id = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font_id} 0 R >> >> "
            f"/Contents {content_id} 0 R >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            ops.append(f"({_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    Path(path).write_bytes(bytes(out))
    return Path(path)


def write_table_pdf(path: Path, title: str, rows: list[list[str]], after: str = "") -> Path:
    """One page: a title line, a ruled table (a line under every row, one between columns), then a closing line."""
    n_cols = max(len(r) for r in rows)
    x0, width, top, height = 72, 468, 680, 18
    col = width / n_cols
    ops = ["BT", "/F1 13 Tf", f"72 720 Td ({_escape(title)}) Tj", "ET", "0.6 w"]
    bottom = top - height * len(rows)
    for i in range(len(rows) + 1):
        y = top - i * height
        ops.append(f"{x0} {y} m {x0 + width} {y} l S")
    for j in range(n_cols + 1):
        x = x0 + j * col
        ops.append(f"{x:.1f} {top} m {x:.1f} {bottom} l S")
    for i, row in enumerate(rows):
        y = top - (i + 1) * height + 5
        for j, cell in enumerate(row):
            ops.append(f"BT /F1 10 Tf {x0 + j * col + 4:.1f} {y} Td ({_escape(cell)}) Tj ET")
    if after:
        ops.append(f"BT /F1 11 Tf 72 {bottom - 30} Td ({_escape(after)}) Tj ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def cjk_pdf(lines: list[str], font_file: Path, size: float = 13.0) -> bytes:
    """One page of Chinese text with a text layer, written by pdfium with a font from ``font_file`` (a .ttf, or the
    first face of a .ttc) embedded."""
    import ctypes
    import io

    import pypdfium2
    import pypdfium2.raw as pdfium_c
    from fontTools.ttLib import TTCollection, TTFont

    face = TTCollection(str(font_file)).fonts[0] if font_file.suffix == ".ttc" else TTFont(str(font_file))
    buf = io.BytesIO()
    face.save(buf)
    data = (ctypes.c_uint8 * len(buf.getvalue())).from_buffer_copy(buf.getvalue())
    pdf = pypdfium2.PdfDocument.new()
    page = pdf.new_page(612, 792)
    font = pdfium_c.FPDFText_LoadFont(pdf.raw, data, len(data), pdfium_c.FPDF_FONT_TRUETYPE, True)
    for i, line in enumerate(lines):
        obj = pdfium_c.FPDFPageObj_CreateTextObj(pdf.raw, font, size)
        text = ctypes.create_string_buffer((line + "\0").encode("utf-16-le"))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(text, pdfium_c.FPDF_WIDESTRING))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 72, 720 - 2 * size * i)
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)
    pdfium_c.FPDFPage_GenerateContent(page.raw)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
