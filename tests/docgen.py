"""A corpus of every format a team keeps, written by the libraries that make them (python-docx, python-pptx, openpyxl,
ebooklib, the standard library's e-mail), and scanned PDFs: text rendered to an image and saved back as a PDF with no
text layer. Each file holds facts that ``QUESTIONS`` and ``TABLE_QUESTIONS`` ask about."""

from __future__ import annotations

import csv
import io
from email.message import EmailMessage
from pathlib import Path

from tests.pdfgen import cjk_pdf, write_pdf, write_table_pdf

ZH_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")

PUMPS = [["Model", "Flow (m3/h)", "Max pressure (bar)", "Motor (kW)"]] + [
    [f"HX-{100 + i}", str(20 + 3 * i), str(6 + i % 5), f"{1.5 + i * 0.5:g}"] for i in range(12)
]
PARTS = [["Part", "Description", "Stock", "Bin"]] + [
    [f"PX-{1000 + 7 * i}", f"gasket type {chr(65 + i)}", str(40 + 11 * i), f"B{i % 6}-{i}"] for i in range(20)
]
CITIES = [["City", "Country", "Population", "Founded"]] + [
    [c, k, p, y] for c, k, p, y in [
        ("Aldmere", "Norland", "412000", "1204"), ("Brisk", "Norland", "98000", "1388"),
        ("Calloway", "Estria", "1250000", "1021"), ("Dunmore", "Estria", "56000", "1650"),
        ("Elverton", "Westmark", "730000", "1132"), ("Fairhold", "Westmark", "23000", "1799"),
        ("Glenbrook", "Ostland", "305000", "1410"), ("Harrowgate", "Ostland", "141000", "1266"),
        ("Ironvale", "Sudmark", "88000", "1533"), ("Juniper Bay", "Sudmark", "64000", "1702"),
        ("Kestrel", "Norland", "377000", "1190"), ("Larkspur", "Estria", "12000", "1840"),
        ("Mistral", "Westmark", "905000", "1075"), ("Northwick", "Ostland", "47000", "1611"),
        ("Oakhaven", "Sudmark", "219000", "1345"),
    ]
]
RATES = [["Plan", "Monthly fee (EUR)", "Storage (GB)", "Support"]] + [
    ["Starter", "9", "50", "e-mail"], ["Team", "29", "500", "e-mail and chat"], ["Business", "79", "2000", "phone"],
    ["Enterprise", "199", "10000", "dedicated manager"], ["Education", "5", "200", "e-mail"],
    ["Nonprofit", "12", "300", "chat"], ["Archive", "15", "20000", "e-mail"], ["Edge", "45", "800", "chat"],
    ["Studio", "59", "1500", "phone"],
]

FLIGHTS = [["Flight", "From", "To", "Departs"]] + [
    [f"RK{300 + i}", a, b, f"{6 + i}:15"] for i, (a, b) in enumerate(
        [("Oslo", "Rome"), ("Lyon", "Riga"), ("Bern", "Kyiv"), ("Faro", "Oulu"), ("Graz", "Nice"), ("Bari", "Cork"),
         ("Pula", "Turku"), ("Brno", "Bilbao"), ("Split", "Malmo"), ("Porto", "Gdansk")])
]

SCAN_EN = [
    "Warehouse safety rules, revision four.",
    "Forklifts must not exceed eight kilometres per hour inside the hall.",
    "Pallets are stacked at most three high in aisle C.",
    "Hearing protection is required near the compressor room.",
    "The emergency exit at gate seven must stay clear at all times.",
    "Spilled oil is covered with absorbent granules from the red bin.",
    "Visitors sign in at the reception desk and wear a yellow vest.",
    "Batteries are charged only in the ventilated charging bay.",
    "Damaged racking is reported to the shift supervisor at once.",
    "The first aid kit hangs beside the loading dock door.",
]
SCAN_ZH = [
    "仓库安全规定第四版。",
    "叉车在厂房内的速度不得超过每小时八公里。",
    "托盘在C通道最多堆放三层。",
    "在压缩机房附近必须佩戴护耳器。",
    "七号门的紧急出口必须始终保持畅通。",
    "洒出的油要用红色桶里的吸附颗粒覆盖。",
    "访客须在前台登记并穿黄色背心。",
    "电池只能在通风的充电区充电。",
    "损坏的货架要立即报告值班主管。",
    "急救箱挂在装卸平台门旁边。",
]
OCR_GOLD = [
    "eight kilometres per hour", "three high in aisle C", "Hearing protection", "gate seven", "absorbent granules",
    "yellow vest", "ventilated charging bay", "shift supervisor", "first aid kit", "Warehouse safety rules",
    "每小时八公里", "最多堆放三层", "佩戴护耳器", "七号门", "吸附颗粒", "黄色背心", "通风的充电区", "值班主管",
    "急救箱", "仓库安全规定",
]

# (question, file name, provenance: what the hit's page or headings must show)
QUESTIONS = [
    ("How often must the seal kit SK-40 be replaced?", "handbook.docx", {"headings": "Maintenance"}),
    ("How much does the Pro plan cost per month?", "deck.pptx", {"page": 2, "headings": "Slide 2: Pricing"}),
    ("Which bin holds part PX-1063?", "stock.xlsx", {"headings": "Inventory"}),
    ("What is the population of Elverton?", "cities.csv", {}),
    ("What did the captain find in the lighthouse cellar?", "novel.epub", {"headings": "The Cellar"}),
    ("When does the server migration start?", "migration.eml", {"headings": "Server migration"}),
    ("How fast may forklifts drive inside the hall?", "scan-en.pdf", {"page": 2}),
    ("叉车在厂房内的速度限制是多少？", "scan-zh.pdf", {"page": 1}),
    ("What does the Team plan cost?", "plans.html", {"headings": "Plans"}),
    ("Where does flight RK306 fly to?", "flights.pdf", {"page": 1}),
]

# (question, the row's key, the gold cell)
TABLE_QUESTIONS = [
    ("What is the maximum pressure of pump HX-107?", "HX-107", "8"),
    ("What motor power does the HX-111 pump have?", "HX-111", "7"),
    ("What is the flow of model HX-102?", "HX-102", "26"),
    ("How many PX-1091 gaskets are in stock?", "PX-1091", "183"),
    ("In which bin is part PX-1119 kept?", "PX-1119", "B5-17"),
    ("What is the population of Calloway?", "Calloway", "1250000"),
    ("When was Harrowgate founded?", "Harrowgate", "1266"),
    ("Which country is Oakhaven in?", "Oakhaven", "Sudmark"),
    ("How much storage does the Business plan include?", "Business", "2000"),
    ("What support does the Enterprise plan come with?", "Enterprise", "dedicated manager"),
    ("When does flight RK304 depart?", "RK304", "10:15"),
    ("Where does flight RK308 fly to?", "RK308", "Malmo"),
]


def write_docx(path: Path) -> None:
    import docx

    doc = docx.Document()
    doc.add_heading("Pump handbook", 0)
    doc.add_heading("Installation", 1)
    doc.add_paragraph("Mount the pump on a level concrete base and connect the suction line first.")
    doc.add_heading("Maintenance", 1)
    doc.add_paragraph("The seal kit SK-40 must be replaced every 18 months, or sooner when the pump leaks.")
    doc.add_heading("Pump models", 1)
    table = doc.add_table(rows=0, cols=len(PUMPS[0]))
    for row in PUMPS:
        cells = table.add_row().cells
        for cell, value in zip(cells, row):
            cell.text = value
    doc.save(path)


def write_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    slides = [("Welcome", "Our new subscription plans start in May."),
              ("Pricing", "The Pro plan costs 49 euros per month, billed yearly."),
              ("Plans compared", None)]
    for title, text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        slide.shapes.title.text = title
        if text:
            box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(1))
            box.text_frame.text = text
        else:
            shape = slide.shapes.add_table(len(RATES[:5]), 4, Inches(0.5), Inches(1.5), Inches(9), Inches(3))
            for r, row in enumerate(RATES[:5]):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
    deck.save(path)


def write_xlsx(path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Inventory"
    for row in PARTS:
        sheet.append([int(v) if v.isdigit() else v for v in row])
    other = book.create_sheet("Suppliers")
    other.append(["Supplier", "Country"])
    other.append(["Gasket Works", "Estria"])
    book.save(path)


def write_csv(path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(CITIES)


def write_epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("lighthouse-1")
    book.set_title("The Lighthouse")
    book.set_language("en")
    chapters = [("The Arrival", "The captain arrived at the lighthouse in a storm and found the door unlocked."),
                ("The Cellar", "In the lighthouse cellar the captain found a brass telescope wrapped in sailcloth.")]
    items = []
    for i, (title, text) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=title, file_name=f"ch{i}.xhtml", lang="en")
        item.content = f"<html><body><h1>{title}</h1><p>{text}</p></body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    epub.write_epub(str(path), book)


def write_eml(path: Path) -> None:
    msg = EmailMessage()
    msg["Subject"] = "Server migration on Friday"
    msg["From"] = "ops@example.org"
    msg["To"] = "team@example.org"
    msg["Date"] = "Mon, 02 Nov 2026 09:00:00 +0000"
    msg.set_content("Hello all,\n\nThe server migration starts on Friday at 22:00 and takes about four hours. "
                    "The wiki will be read-only during the move.\n\nOps")
    msg.add_attachment(b"runbook", maintype="text", subtype="plain", filename="runbook.txt")
    path.write_bytes(bytes(msg))


def write_html(path: Path) -> None:
    rows = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in RATES[1:])
    head = "".join(f"<th>{v}</th>" for v in RATES[0])
    path.write_text(f"<html><body><h1>Plans</h1><p>Every plan includes backups.</p><table><thead><tr>{head}</tr>"
                    f"</thead><tbody>{rows}</tbody></table></body></html>", encoding="utf-8")


def scan_of(pdf: bytes):
    """A text PDF's first page rendered to an image at 200 dpi: what a scanner makes of the printed page."""
    import pypdfium2

    return pypdfium2.PdfDocument(pdf)[0].render(scale=200 / 72, grayscale=True).to_pil()


def _pdf_bytes(pages: list[list[str]]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return write_pdf(Path(d) / "t.pdf", pages).read_bytes()


def _image_pdf(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PDF", resolution=200)
    return buf.getvalue()


def write_scans(folder: Path) -> None:
    """scan-en.pdf: page 1 with a text layer, page 2 a scan (a mixed PDF); scan-zh.pdf: one scanned page in Chinese
    (when a Chinese font is installed). Each scan is a text PDF rendered to an image and saved back as a PDF."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.append(io.BytesIO(_pdf_bytes([["Cover page: warehouse handbook, printed copy."]])))
    writer.append(io.BytesIO(_image_pdf(scan_of(_pdf_bytes([SCAN_EN])))))
    with open(folder / "scan-en.pdf", "wb") as fh:
        writer.write(fh)
    if ZH_FONT.exists():
        (folder / "scan-zh.pdf").write_bytes(_image_pdf(scan_of(cjk_pdf(SCAN_ZH, ZH_FONT))))


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_docx(folder / "handbook.docx")
    write_pptx(folder / "deck.pptx")
    write_xlsx(folder / "stock.xlsx")
    write_csv(folder / "cities.csv")
    write_epub(folder / "novel.epub")
    write_eml(folder / "migration.eml")
    write_html(folder / "plans.html")
    write_table_pdf(folder / "flights.pdf", "Flight schedule, winter 2026", FLIGHTS, "All times are local.")
    write_scans(folder)
    return folder
