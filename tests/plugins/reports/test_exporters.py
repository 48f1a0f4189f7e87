"""The built-in report exporters, each file read back with a reader of its
format: rows come from generators (read once, as from the database), with
hostile text, non-Latin text, none values, decimals as text, instants, dates
and booleans."""

import csv
import dataclasses
import datetime as dt
import io
import json
import re
import tempfile
import tracemalloc
import zipfile
from decimal import Decimal
from html.parser import HTMLParser

import openpyxl
import pytest
from conftest import example_plugin
from pypdf import PdfReader

from tierd.core.registry import Column, ReportData
from tierd.plugins.reports import chart as charts
from tierd.plugins.reports.exporters import BUILTIN, cells
from tierd.plugins.reports.exporters import pdf as pdf_exporter
from tierd.plugins.reports.exporters.xlsx import sheet_name
from tierd.testing import install_package

UTC = dt.UTC
AT = int(dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp())
GENERATED = AT + 86400
EXPORTERS = {e.format_name: e for e in BUILTIN}

COLUMNS = [
    Column("name", "text", "Who"),
    Column("amount", "decimal", "Money"),
    Column("count", "integer"),
    Column("at", "instant"),
    Column("day", "date"),
    Column("ok", "boolean"),
]
TEXTS = [
    'He said "hi", then left',
    "line one\nline two",
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2",
    "@SUM(A1:A9)",
    "Müller – 東京",
    "<script>alert(1)</script>",
    None,
]
FORMULAS = {"=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1:A9)"}
AMOUNTS = ["1234.50", "-0.05", None, "7"]


def row(i: int) -> tuple:
    return (
        TEXTS[i % len(TEXTS)],
        AMOUNTS[i % len(AMOUNTS)],
        i,
        AT + i * 3600,
        "2026-11-30",
        i % 2,
    )


def rows(n: int):
    """A generator, as the database gives them: it can be read once."""
    for i in range(n):
        yield row(i)


def report(n: int = len(TEXTS), chart=None, title="Deliveries, by endpoint", name="webhook_deliveries", **kw):
    return ReportData(
        name=name,
        title=title,
        description="Per endpoint: deliveries and failures",
        tenant="acme",
        params={"from": "2026-11-01", "to": "2026-11-30", "endpoint": "Zürich – 東京"},
        generated_at=GENERATED,
        columns=list(COLUMNS),
        rows=rows(n),
        chart=chart,
        **kw,
    )


def export(format_name: str, *reports: ReportData) -> bytes:
    out = io.BytesIO()
    EXPORTERS[format_name].export(list(reports), out)
    return out.getvalue()


def test_the_built_in_formats():
    assert list(EXPORTERS) == ["csv", "csv-excel", "json", "jsonl", "xlsx", "pdf", "html"]
    for exporter in BUILTIN:
        assert exporter.description and exporter.extension and "/" in exporter.media_type
        assert exporter.many == (exporter.format_name == "xlsx")
    for name in ("csv", "json", "pdf", "html"):
        with pytest.raises(ValueError, match="exactly one report"):
            export(name, report(1), report(1))


# --- CSV --------------------------------------------------------------------------


def test_csv_is_rfc_4180_utf8():
    raw = export("csv", report())
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.split(b"\r\n")[0] == b"name,amount,count,at,day,ok"
    table = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert table[0] == [c.name for c in COLUMNS]
    body = table[1:]
    assert len(body) == len(TEXTS)
    assert body[0] == ['He said "hi", then left', "1234.50", "0", "2026-11-30T12:00:00Z", "2026-11-30", "false"]
    assert body[1][:2] == ["line one\nline two", "-0.05"] and body[1][5] == "true"
    assert body[2][1] == ""  # none
    assert body[6][0] == "Müller – 東京"
    # Formula injection (OWASP): text cells made inert, numbers untouched.
    for line in body:
        original = TEXTS[int(line[2]) % len(TEXTS)]
        if original in FORMULAS:
            assert line[0] == "'" + original
    assert body[1][1] == "-0.05"
    assert body[8] == ["", "1234.50", "8", "2026-11-30T20:00:00Z", "2026-11-30", "false"]


def test_csv_for_comma_decimal_spreadsheets():
    raw = export("csv-excel", report())
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert table[0] == [c.name for c in COLUMNS]
    assert table[1] == ['He said "hi", then left', "1234,50", "0", "2026-11-30 12:00:00", "2026-11-30", "false"]
    assert table[2][1] == "-0,05" and table[3][0] == "'=cmd|' /C calc'!A0"
    assert table[7][0] == "Müller – 東京"


# --- JSON -------------------------------------------------------------------------


def test_json_is_one_document():
    doc = json.loads(export("json", report(chart={"type": "bar", "x": "name", "y": ["amount"]})))
    assert doc["title"] == "Deliveries, by endpoint" and doc["tenant"] == "acme" and doc["name"] == "webhook_deliveries"
    assert doc["params"]["endpoint"] == "Zürich – 東京"
    assert doc["generated_at"] == "2026-12-01T12:00:00Z"
    assert doc["columns"][1] == {"name": "amount", "type": "decimal", "description": "Money"}
    assert doc["row_count"] == len(TEXTS) == len(doc["rows"])
    assert doc["rows"][0] == {
        "name": 'He said "hi", then left',
        "amount": "1234.50",  # exact: a string, never a float
        "count": 0,
        "at": "2026-11-30T12:00:00Z",
        "day": "2026-11-30",
        "ok": False,
    }
    assert doc["rows"][2]["amount"] is None and doc["rows"][8]["name"] is None
    assert doc["rows"][2]["name"] == "=cmd|' /C calc'!A0"  # JSON is data, not a spreadsheet: as it is
    assert doc["chart"] == {"type": "bar", "x": "name", "y": ["amount"]}


def test_json_of_no_rows():
    doc = json.loads(export("json", report(0)))
    assert doc["rows"] == [] and doc["row_count"] == 0


def test_jsonl_is_one_object_per_row():
    lines = export("jsonl", report()).decode().splitlines()
    assert len(lines) == len(TEXTS)
    objects = [json.loads(line) for line in lines]
    assert objects[1] == {
        "name": "line one\nline two",
        "amount": "-0.05",
        "count": 1,
        "at": "2026-11-30T13:00:00Z",
        "day": "2026-11-30",
        "ok": True,
    }
    assert Decimal(objects[0]["amount"]) == Decimal("1234.50")


# --- XLSX -------------------------------------------------------------------------


def test_xlsx_cells_are_typed(tmp_path):
    path = tmp_path / "r.xlsx"
    path.write_bytes(export("xlsx", report(30)))
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["About", "Deliveries, by endpoint"]
    sheet = book["Deliveries, by endpoint"]
    assert [c.value for c in sheet[1]] == [c.name for c in COLUMNS]
    assert all(c.font.b for c in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:F31"
    name, amount, count, at, day, ok = sheet[2]
    assert name.value == 'He said "hi", then left' and name.data_type == "s"
    assert amount.value == 1234.5 and amount.data_type == "n" and amount.number_format == "#,##0.00"
    assert count.value == 0 and isinstance(count.value, int)
    assert at.value == dt.datetime(2026, 11, 30, 12, 0) and at.is_date and "hh:mm" in at.number_format
    assert day.value == dt.datetime(2026, 11, 30) and day.number_format == "yyyy-mm-dd"
    assert ok.value is False and ok.data_type == "b"
    assert sheet["A3"].value == "line one\nline two" and sheet["B3"].value == -0.05
    assert sheet["B4"].value is None  # none: an empty cell
    assert sheet["A8"].value == "Müller – 東京"
    # Formulas are text, never formulas, and quote-prefixed so that editing keeps them text.
    for cell in sheet["A"][1:]:
        if cell.value in FORMULAS:
            assert cell.data_type == "s" and cell.quotePrefix, cell.value
        elif cell.value:
            assert not cell.quotePrefix
    assert sheet["A4"].value == "=cmd|' /C calc'!A0"
    with zipfile.ZipFile(path) as z:
        assert b"<f>" not in z.read("xl/worksheets/sheet2.xml")
    # Widths from the header and the first rows.
    assert sheet.column_dimensions["A"].width > sheet.column_dimensions["F"].width
    about = book["About"]
    assert [c.value for c in about[1]][:3] == ["Sheet", "Report", "Title"]
    assert [c.value for c in about[2]][:5] == [
        "Deliveries, by endpoint",
        "webhook_deliveries",
        "Deliveries, by endpoint",
        "Per endpoint: deliveries and failures",
        "acme",
    ]
    assert "endpoint=Zürich – 東京" in about["F2"].value
    assert about["G2"].value == dt.datetime(2026, 12, 1, 12, 0) and about["H2"].value == 30


def test_xlsx_takes_several_reports_one_sheet_each(tmp_path):
    long_title = "A title far longer than the thirty-one characters Excel allows: [x]?"
    path = tmp_path / "r.xlsx"
    path.write_bytes(
        export(
            "xlsx",
            report(3),
            report(5),  # the same title again
            report(0, title=long_title, name="other"),
            report(2, title="About"),  # our own sheet's name
        )
    )
    book = openpyxl.load_workbook(path)
    names = book.sheetnames
    assert names[:3] == ["About", "Deliveries, by endpoint", "Deliveries, by endpoint (2)"]
    assert len(names) == 5 and len({n.lower() for n in names}) == 5 and all(len(n) <= 31 for n in names)
    assert "[" not in names[3] and "?" not in names[3]
    assert book[names[1]].max_row == 4 and book[names[2]].max_row == 6
    assert [c.value for c in book[names[3]][1]] == [c.name for c in COLUMNS]  # no rows: the header
    assert [row[7].value for row in book["About"].iter_rows(min_row=2)] == [3, 5, 0, 2]


def test_sheet_names():
    taken: set[str] = set()
    assert sheet_name("History", taken) == "History report"
    assert sheet_name("'a:b'", taken) == "a b"
    assert sheet_name("x" * 40, taken) == "x" * 31
    assert sheet_name("X" * 40, taken) == "X" * 27 + " (2)"


def test_an_export_stopped_half_way_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The reports plugin stops the rows (a row limit, a timeout) by raising from them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def stopped():
        yield from rows(5)
        raise RuntimeError("the report has more than 5 rows")

    for format_name in ("xlsx", "html"):
        with pytest.raises(RuntimeError, match="more than 5 rows"):
            export(format_name, dataclasses.replace(report(), rows=stopped()))
        assert list(tmp_path.iterdir()) == []


# --- PDF --------------------------------------------------------------------------


def test_pdf_has_the_metadata_a_paginated_table_and_the_chart():
    chart = {"type": "line", "x": "at", "y": ["amount", "count"]}
    reader = PdfReader(io.BytesIO(export("pdf", report(400, chart=chart))))
    pages = [page.extract_text() for page in reader.pages]
    assert len(pages) >= 5
    first = pages[0]
    assert "Deliveries, by endpoint" in first and "acme" in first and "2026-11-01" in first
    assert "Zürich" in first and "2026-12-01 12:00:00 UTC" in first
    assert len(reader.pages[0].images) == 1  # the chart, on the first page
    assert "amount, count by at" in first
    for number, text in enumerate(pages[1:], start=2):  # the table, its header on every page
        assert "name" in text and "amount" in text and "count" in text, number
        assert f"Page {number}/{len(pages)}" in text
    table = "\n".join(pages[1:])
    assert "He said" in table and "Müller" in table and "1234.50" in table and "2026-11-30 12:00:00" in table
    assert "400 rows." in pages[-1]
    assert reader.metadata.title == "Deliveries, by endpoint"


def test_pdf_without_a_chart_starts_the_table_on_the_first_page():
    reader = PdfReader(io.BytesIO(export("pdf", report(3))))
    [page] = reader.pages
    text = page.extract_text()
    assert "He said" in text and "3 rows." in text and "Page 1/1" in text and not page.images


def test_pdf_of_wide_and_long_cells():
    columns = [Column(f"column_{i}", "text") for i in range(12)]
    long = "word " * 400
    data = ReportData("wide", "Wide", "", None, {}, GENERATED, columns, iter([tuple([long] * 12)] * 3))
    reader = PdfReader(io.BytesIO(export("pdf", data)))
    assert reader.pages[0].mediabox.width > reader.pages[0].mediabox.height  # landscape
    assert "all tenants" in reader.pages[0].extract_text()


def test_pdf_without_a_unicode_font_replaces_what_latin_1_lacks(monkeypatch):
    monkeypatch.setattr(pdf_exporter, "unicode_font", lambda: None)
    text = PdfReader(io.BytesIO(export("pdf", report()))).pages[0].extract_text()
    assert "Müller ? ??" in text and "He said" in text


# --- HTML -------------------------------------------------------------------------


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.th: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            (self.th if tag == "th" else self.rows[-1]).append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_one_self_contained_page_with_the_chart_inline():
    chart = {"type": "bar", "x": "name", "y": ["amount"]}
    text = export("html", report(chart=chart)).decode()
    page = Page()
    page.feed(text)
    assert page.th == [c.name for c in COLUMNS]
    body = [r for r in page.rows if r]
    assert len(body) == len(TEXTS)
    assert body[0] == ['He said "hi", then left', "1234.50", "0", "2026-11-30 12:00:00", "2026-11-30", "no"]
    assert body[7][0] == "<script>alert(1)</script>" and body[6][0] == "Müller – 東京"
    assert "svg" in page.tags and "script" not in page.tags and "img" not in page.tags
    assert page.tags.index("svg") < page.tags.index("table")  # the chart above the table
    assert "<title>Deliveries, by endpoint</title>" in text and "Zürich – 東京" in text
    assert not re.search(r'(src|href)="(?!#)|url\((?!#)|@import', text)  # nothing fetched from elsewhere


def test_without_matplotlib_reports_export_table_only(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)
    chart = {"type": "bar", "x": "name", "y": ["amount"]}
    text = export("html", report(chart=chart)).decode()
    assert "<svg" not in text and "needs matplotlib" in text and "<table>" in text
    reader = PdfReader(io.BytesIO(export("pdf", report(chart=chart))))
    assert not reader.pages[0].images and "needs matplotlib" in reader.pages[0].extract_text()


# --- charts -----------------------------------------------------------------------


def test_charts_render_as_svg_and_png():
    columns = [Column("day", "date"), Column("amount", "decimal"), Column("count", "integer")]
    points = [(f"2026-11-0{d}", "12.50", d) for d in range(1, 8)]
    for kind in ("line", "bar"):
        spec = {"type": kind, "x": "day", "y": ["amount", "count"]}
        svg = charts.render_svg(spec, columns, points)
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        assert charts.render_png(spec, columns, points).startswith(b"\x89PNG")
    # Labels are data, never mathtext; text x values are categories.
    text_columns = [Column("who", "text"), Column("price $", "decimal")]
    svg = charts.render_svg({"type": "line", "x": "who", "y": ["price $"]}, text_columns, [("$a$", "1"), (None, None)])
    assert "<svg" in svg


def test_chart_points_are_capped():
    collector = charts.ChartPoints({"type": "line", "x": "at", "y": ["count"]}, COLUMNS, limit=10)
    for r in rows(25):
        collector.add(r)
    assert len(collector.points) == 10 and collector.total == 25 and collector.points[0] == (AT, 0)
    assert "the first 10 of 25 rows" in collector.caption()
    assert charts.ChartPoints.of(report(chart={"type": "pie", "x": "name", "y": ["count"]})) is None
    assert charts.ChartPoints.of(report(chart={"type": "bar", "x": "nope", "y": ["count"]})) is None


def test_cells():
    assert cells.typed("decimal", "1234.50") == Decimal("1234.50")
    assert cells.decimal_text(cells.typed("decimal", "1234.50")) == "1234.50"
    assert cells.typed("decimal", "n/a") == "n/a" and cells.typed("instant", None) is None
    assert cells.display("instant", AT) == "2026-11-30 12:00:00" and cells.display("boolean", 0) == "no"
    assert cells.neutralise("=1") == "'=1" and cells.neutralise("a=1") == "a=1"


# --- memory -----------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["xlsx", "csv"])
def test_export_memory_does_not_grow_with_the_rows(format_name, tmp_path):
    columns = [Column("name", "text"), Column("amount", "decimal"), Column("count", "integer"), Column("at", "instant")]

    def many(n):
        for i in range(n):
            yield (f"endpoint {i} https://example.test/hook/{i}", f"{i}.{i % 100:02d}", i, AT + i)

    data = ReportData("big", "Big", "", "acme", {}, GENERATED, columns, many(200_000))
    tracemalloc.start()
    try:
        with open(tmp_path / f"big.{format_name}", "wb") as out:
            EXPORTERS[format_name].export([data], out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024, f"{format_name}: peak {peak / 1e6:.1f} MB"
    assert (tmp_path / f"big.{format_name}").stat().st_size > 1_000_000


# --- a third-party exporter ---------------------------------------------------------


def test_the_example_exporter_installs_and_registers(tierd_daemon, tmp_path):
    site = install_package(example_plugin("tierd-example-exporter"), tmp_path / "site")
    d = tierd_daemon(pythonpath=[site], start=False)
    listing = d.cli("plugins")
    assert listing.returncode == 0, listing.stderr
    [exporters] = [line for line in listing.stdout.splitlines() if line.startswith("report exporters:")]
    assert "markdown" in exporters.split(": ", 1)[1].split(", ")
    plugins = json.loads(d.cli("plugins", "--json").stdout)
    [plugin] = [p for p in plugins if p["name"] == "tierd_example_exporter"]
    assert plugin["origin"] == "entry point (tierd-example-exporter)" and plugin["version"] == "0.1.0"
    assert "tierd_register_report_exporters" in plugin["hooks"]
