"""PDF with fpdf2: title, parameters, tenant, generated-at, the chart, and a
paginated table whose header repeats on every page, with page numbers.

* Text is drawn with DejaVu Sans, a Unicode TrueType font: the copy that
  matplotlib bundles (``mpl-data/fonts/ttf``, found without importing
  matplotlib) or Debian's ``fonts-dejavu-core``; a CJK font of the system, if
  one is installed, is added as a fallback for the glyphs DejaVu lacks. Where
  none is found, the PDF core font Helvetica is used and characters outside
  Latin-1 are replaced by ``?``: text never makes an export fail.
* The chart (when the report has one and matplotlib is installed) is drawn on
  the first page, below the parameters, though its points are known only once
  all rows are read: fpdf2's placeholder (``insert_toc_placeholder``, meant
  for a table of contents) keeps the rest of the first page free and draws it
  when the document is output. The table starts on the next page.
* Rows stream into the pages; cells wrap, up to :data:`MAX_LINES` lines a cell
  (the rest is cut with ``…``). Column widths come from the header and the
  first :data:`SAMPLE_ROWS` rows; a table wider than a portrait page turns the
  pages to landscape.

fpdf2 keeps the document in memory until it is written, so a PDF's memory
grows with its pages (roughly 10 KB a page): PDF is for reports that people
read, not for hundreds of thousands of rows (use CSV or XLSX there).
"""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path
from typing import Any, BinaryIO

from tierd.core.registry import Column, ReportData, ReportExporter
from tierd.plugins.reports import chart as charts
from tierd.plugins.reports.exporters import cells

#: Lines a table cell wraps to at most.
MAX_LINES = 6
#: Rows read ahead to size the columns.
SAMPLE_ROWS = 50
#: Font sizes (points) and the table's line height (mm).
TITLE_SIZE, TEXT_SIZE, TABLE_SIZE = 16, 10, 8
LINE = 4.0
#: A column's width, in mm, at most (before the table is fitted to the page).
MAX_COLUMN = 70.0
PAD = 0.8

_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu",)
_FALLBACK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


@functools.cache
def unicode_font() -> tuple[Path, Path] | None:
    """DejaVu Sans and DejaVu Sans Bold: matplotlib's copy or the system's, or None."""
    folders = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            folders.append(Path(location) / "mpl-data" / "fonts" / "ttf")
    folders.extend(Path(folder) for folder in _FONT_DIRS)
    for folder in folders:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


@functools.cache
def fallback_font() -> Path | None:
    """A system font with CJK glyphs, or None."""
    return next((Path(p) for p in _FALLBACK_FONTS if Path(p).is_file()), None)


@functools.cache
def _document_class() -> type:
    from fpdf import FPDF

    class Document(FPDF):
        """An A4 document whose pages repeat the table's header and carry a footer."""

        active_table: _Table | None = None
        family = "Helvetica"
        unicode = False
        footer_text = ""

        def clean(self, value: str) -> str:
            """``value`` as this document can draw it (see the module's docstring)."""
            value = cells.printable(value)
            return value if self.unicode else value.encode("latin-1", "replace").decode("latin-1")

        def header(self) -> None:
            if self.active_table is not None:
                self.active_table.draw_header()

        def footer(self) -> None:
            self.set_font(self.family, "", 7)
            self.set_text_color(110)
            self.set_y(-10)
            width = self.epw
            self.cell(width * 0.8, 4, self.footer_text, align="L")
            self.cell(width * 0.2, 4, f"Page {self.page_no()}/{{nb}}", align="R")
            self.set_text_color(0)

    return Document


class _Table:
    """Draws the table row by row, starting a page (with the header) when one is full."""

    def __init__(self, pdf: Any, columns: list[Column], widths: list[float], orientation: str):
        self.pdf = pdf
        self.headings = [pdf.clean(c.name) for c in columns]
        self.widths = widths
        self.aligns = ["R" if c.type in cells.NUMERIC else "L" for c in columns]
        self.orientation = orientation
        self.shade = False

    def lines(self, text: str, width: float) -> list[str]:
        pdf = self.pdf
        if "\n" not in text and pdf.get_string_width(text) <= width - 2 * pdf.c_margin:
            return [text]
        lines = pdf.multi_cell(width, LINE, text, dry_run=True, output="LINES") or [""]
        if len(lines) > MAX_LINES:
            lines = lines[:MAX_LINES]
            lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "…"
        return lines

    def _draw(self, texts: list[str], bold: bool) -> None:
        pdf = self.pdf
        pdf.set_font(pdf.family, "B" if bold else "", TABLE_SIZE)
        wrapped = [self.lines(t, w) for t, w in zip(texts, self.widths, strict=True)]
        height = max((len(lines) for lines in wrapped), default=1) * LINE + 2 * PAD
        if pdf.y + height > pdf.page_break_trigger and not bold:
            pdf.add_page(orientation=self.orientation)  # header() draws the header again
            pdf.set_font(pdf.family, "", TABLE_SIZE)
        x0, y0, total = pdf.l_margin, pdf.y, sum(self.widths)
        if bold or self.shade:
            pdf.set_fill_color(235 if bold else 246, 238 if bold else 248, 242 if bold else 250)
            pdf.rect(x0, y0, total, height, style="F")
        x = x0
        for lines, width, align in zip(wrapped, self.widths, self.aligns, strict=True):
            for i, line in enumerate(lines):
                pdf.set_xy(x, y0 + PAD + i * LINE)
                pdf.cell(width, LINE, line, align=align)
            x += width
        pdf.set_draw_color(120 if bold else 215)
        pdf.line(x0, y0 + height, x0 + total, y0 + height)
        pdf.set_xy(x0, y0 + height)

    def draw_header(self, at_top: bool = True) -> None:
        if at_top:
            self.pdf.set_y(self.pdf.t_margin)
        self._draw(self.headings, bold=True)
        self.shade = False

    def row(self, texts: list[str]) -> None:
        self._draw([self.pdf.clean(t) for t in texts], bold=False)
        self.shade = not self.shade


class PdfExporter(ReportExporter):
    """A PDF document to read and print (see the module's docstring)."""

    format_name = "pdf"
    description = "PDF: title, parameters, chart and a paginated table with page numbers"
    media_type = "application/pdf"
    extension = "pdf"
    many = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        report = cells.one_report(self, reports)
        pdf = _document_class()(unit="mm", format="A4")
        pdf.set_margins(12, 12, 12)
        pdf.set_auto_page_break(True, margin=14)
        fonts = unicode_font()
        if fonts is not None:
            pdf.add_font("DejaVu", "", str(fonts[0]))
            pdf.add_font("DejaVu", "B", str(fonts[1]))
            pdf.family, pdf.unicode = "DejaVu", True
            if (fallback := fallback_font()) is not None:
                pdf.add_font("Fallback", "", str(fallback))
                pdf.set_fallback_fonts(["Fallback"], exact_match=False)
        title = report.title or report.name
        generated = cells.generated_at(report)
        when = cells.display("instant", generated) + " UTC"
        pdf.set_title(pdf.clean(title))
        pdf.set_author("tierd")
        pdf.set_creator("tierd")
        pdf.set_creation_date(generated)
        pdf.footer_text = pdf.clean(f"{title} · {report.tenant or 'all tenants'} · generated {when}")

        types = cells.column_types(report.columns)
        head, rows = cells.peek(report.rows, SAMPLE_ROWS)
        widths, orientation = self._widths(pdf, report.columns, head)
        pdf.add_page(orientation=orientation)
        self._front(pdf, report, when)
        points = charts.ChartPoints.of(report) if charts.available() else None
        if points is not None:
            pdf.insert_toc_placeholder(functools.partial(self._chart, points), pages=1, reset_page_indices=False)
        elif report.chart and not charts.available():
            pdf.set_font(pdf.family, "", TEXT_SIZE)
            pdf.multi_cell(0, 5, 'The chart needs matplotlib (pip install "tierd[charts]").')
        table = _Table(pdf, report.columns, widths, orientation)
        pdf.ln(3)
        table.draw_header(at_top=points is not None)  # the chart's placeholder has turned the page
        pdf.active_table = table
        count = 0
        display = cells.display
        for row in rows:
            count += 1
            if points is not None:
                points.add(row)
            table.row([display(t, v) for t, v in zip(types, row, strict=True)])
        pdf.active_table = None
        pdf.set_font(pdf.family, "", TEXT_SIZE)
        if pdf.y + 8 > pdf.page_break_trigger:
            pdf.add_page(orientation=orientation)
        pdf.ln(2)
        pdf.cell(0, 5, "No rows." if count == 0 else f"{count:,} row{'' if count == 1 else 's'}.")
        out.write(bytes(pdf.output()))

    def _widths(self, pdf: Any, columns: list[Column], head: list[tuple]) -> tuple[list[float], str]:
        """Each column's width (mm), and the orientation the table fits in."""
        pad = 2 * pdf.c_margin + 1
        natural = []
        for i, column in enumerate(columns):
            pdf.set_font(pdf.family, "B", TABLE_SIZE)
            width = pdf.get_string_width(pdf.clean(column.name))
            pdf.set_font(pdf.family, "", TABLE_SIZE)
            for row in head:
                text = cells.display(column.type, row[i]).split("\n", 1)[0][:80]
                width = max(width, pdf.get_string_width(pdf.clean(text)))
            natural.append(min(width + pad, MAX_COLUMN))
        portrait = 210 - pdf.l_margin - pdf.r_margin
        landscape = 297 - pdf.l_margin - pdf.r_margin
        orientation = "P" if sum(natural) <= portrait else "L"
        room = portrait if orientation == "P" else landscape
        total = sum(natural) or 1.0
        if total > room or total > room / 2:  # fitted to the page: squeezed, or widened to read well
            natural = [w * room / total for w in natural]
        return natural, orientation

    def _front(self, pdf: Any, report: ReportData, when: str) -> None:
        pdf.set_font(pdf.family, "B", TITLE_SIZE)
        pdf.multi_cell(0, 8, pdf.clean(report.title or report.name), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(pdf.family, "", TEXT_SIZE)
        if report.description:
            pdf.multi_cell(0, 5, pdf.clean(report.description), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        lines = [("Report", report.name), ("Tenant", report.tenant or "all tenants")]
        lines += [(str(key), str(value)) for key, value in report.params.items()] or [("Parameters", "none")]
        lines.append(("Generated", when))
        for key, value in lines:
            pdf.set_font(pdf.family, "B", TEXT_SIZE)
            pdf.cell(32, 5, pdf.clean(key))
            pdf.set_font(pdf.family, "", TEXT_SIZE)
            pdf.multi_cell(0, 5, pdf.clean(value), new_x="LMARGIN", new_y="NEXT")

    @staticmethod
    def _chart(points: charts.ChartPoints, pdf: Any, _outline: Any) -> None:
        """Draw the chart in the room left on the first page (at output time)."""
        pdf.set_font(pdf.family, "", TEXT_SIZE)
        room = pdf.page_break_trigger - pdf.y - 12
        if not points.points:
            return
        try:
            png = points.render_png()
        except Exception as exc:  # a chart that cannot be drawn leaves the table
            pdf.multi_cell(0, 5, pdf.clean(f"The chart could not be drawn: {exc}"))
            return
        width = min(pdf.epw, 2 * room)  # the image is 2:1
        if width < 40:
            return
        pdf.image(io.BytesIO(png), x=pdf.l_margin, y=pdf.y + 3, w=width, h=width / 2)
        pdf.set_y(pdf.y + 3 + width / 2 + 1)
        pdf.cell(0, 5, pdf.clean(points.caption()), align="C")
