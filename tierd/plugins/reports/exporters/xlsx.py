"""XLSX: several reports in one workbook, one sheet each, with XlsxWriter.

XlsxWriter runs in ``constant_memory`` mode: each row goes to a temporary
file as soon as it is written, so memory stays flat for any number of rows
(the rows of a sheet are written in order, which is how reports stream).

* A first sheet, "About", lists each report: its sheet, name, title,
  description, tenant, parameters, when it was generated and its row count.
* Each report's sheet: a bold header row, frozen, with an autofilter over the
  table; column widths from the header and the first :data:`SAMPLE_ROWS` rows.
* Typed cells: integers and decimals are numbers (decimals, which arrive as
  text, with a ``#,##0.00`` format, more places where a value has them),
  instants Excel date-times in UTC (``yyyy-mm-dd hh:mm:ss``), dates dates,
  booleans booleans, none an empty cell.
* Text is always a string cell, never a formula; a text starting with ``=``,
  ``+``, ``-``, ``@``, tab or CR also gets Excel's quote prefix (``'``,
  not shown, not part of the value), so that editing the cell does not turn it
  into a formula either (OWASP, CSV injection).
* Sheet names are the report titles made valid for Excel: at most 31
  characters, none of ``[]:*?/\\``, unique regardless of case.
"""

from __future__ import annotations

import re
import tempfile
from decimal import Decimal
from typing import Any, BinaryIO

from tierd.core.registry import ReportData, ReportExporter
from tierd.plugins.reports.exporters import cells

#: Rows a sheet holds below its header (Excel's limit is 1,048,576 rows).
MAX_ROWS = 1_048_575
#: Rows read ahead to size the columns.
SAMPLE_ROWS = 100
#: Column widths, in characters.
MIN_WIDTH, MAX_WIDTH = 6, 60
#: Integers Excel holds exactly (doubles); larger ones are written as text.
MAX_EXACT_INT = 2**53
#: Excel's limit for a sheet name.
MAX_SHEET_NAME = 31

_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\\x00-\x1f]")
_WIDTH_OF_TYPE = {"instant": 19, "date": 10, "boolean": 6}


def sheet_name(title: str, taken: set[str]) -> str:
    """``title`` as a valid sheet name not in ``taken`` (lowercased names), added to it."""
    base = _BAD_SHEET_CHARS.sub(" ", title).strip().strip("'").strip() or "Report"
    if base.lower() == "history":  # reserved by Excel
        base = "History report"
    name = base[:MAX_SHEET_NAME].rstrip()
    number = 1
    while name.lower() in taken:
        number += 1
        suffix = f" ({number})"
        name = base[: MAX_SHEET_NAME - len(suffix)].rstrip() + suffix
    taken.add(name.lower())
    return name


class XlsxExporter(ReportExporter):
    """Excel workbook, one sheet per report (see the module's docstring)."""

    format_name = "xlsx"
    description = "Excel workbook (XLSX): one sheet per report, typed cells, header frozen with autofilter"
    media_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    extension = "xlsx"
    many = True

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        import xlsxwriter

        if not reports:
            raise ValueError("the xlsx format needs at least one report")
        # XlsxWriter's row files live until the workbook is assembled: in a
        # folder of this export's own, so that an export stopped half-way
        # (a row limit, a timeout) leaves none behind.
        with tempfile.TemporaryDirectory(prefix="tierd-xlsx-") as tmpdir:
            workbook = xlsxwriter.Workbook(
                out,
                {
                    "constant_memory": True,
                    "tmpdir": tmpdir,
                    "strings_to_numbers": False,
                    "strings_to_formulas": False,
                    "strings_to_urls": False,
                    "remove_timezone": True,
                },
            )
            try:
                self._write(workbook, reports)
            finally:
                for sheet in workbook.worksheets():
                    if sheet.row_data_fh is not None and not sheet.row_data_fh.closed:
                        sheet.row_data_fh.close()  # so that the folder can go

    def _write(self, workbook: Any, reports: list[ReportData]) -> None:
        book = _Book(workbook)
        about = workbook.add_worksheet("About")
        taken = {"about"}
        about_columns = [
            "Sheet",
            "Report",
            "Title",
            "Description",
            "Tenant",
            "Parameters",
            "Generated at (UTC)",
            "Rows",
        ]
        for col, heading in enumerate(about_columns):
            about.write_string(0, col, heading, book.header)
        about.set_column(0, 0, 24)
        about.set_column(1, 2, 28)
        about.set_column(3, 3, 40)
        about.set_column(4, 4, 14)
        about.set_column(5, 5, 40)
        about.set_column(6, 6, 20)
        about.freeze_panes(1, 0)
        first = None
        for number, report in enumerate(reports, start=1):
            name = sheet_name(report.title or report.name, taken)
            sheet = workbook.add_worksheet(name)
            first = first or sheet
            count = book.write_report(sheet, report)
            values = [name, report.name, report.title, report.description, report.tenant or "(all tenants)"]
            values.append(cells.params_text(report.params))
            for col, value in enumerate(values):
                book.write_text(about, number, col, value)
            about.write_datetime(number, 6, cells.generated_at(report).replace(tzinfo=None), book.by_type["instant"])
            about.write_number(number, 7, count)
        assert first is not None
        first.activate()
        workbook.close()


class _Book:
    """One export's workbook and its cell formats (an exporter is shared by
    threads: what one export writes lives here)."""

    def __init__(self, workbook: Any):
        self.workbook = workbook
        self.header = workbook.add_format({"bold": True, "bottom": 1, "bg_color": "#F2F2F2"})
        self.quoted_header = workbook.add_format({"bold": True, "bottom": 1, "bg_color": "#F2F2F2"})
        self.quoted_header.set_quote_prefix()
        self.quoted = workbook.add_format({"quote_prefix": True})
        self.by_type = {
            "instant": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
            "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
        }
        self._decimals: dict[int, Any] = {}

    def decimal(self, value: Decimal) -> Any:
        """``#,##0.00``, or as many places as ``value`` has (up to 10)."""
        exponent = value.as_tuple().exponent
        places = min(max(2, -exponent if isinstance(exponent, int) else 2), 10)
        found = self._decimals.get(places)
        if found is None:
            found = self._decimals[places] = self.workbook.add_format({"num_format": "#,##0." + "0" * places})
        return found

    def write_report(self, sheet: Any, report: ReportData) -> int:
        formats = self
        types = cells.column_types(report.columns)
        head, rows = cells.peek(report.rows, SAMPLE_ROWS)
        for col, column in enumerate(report.columns):
            width = max(len(column.name) + 3, _WIDTH_OF_TYPE.get(column.type, 0))  # +3: the filter button
            for row in head:
                width = max(width, len(cells.display(column.type, row[col])) + 1)
            sheet.set_column(col, col, min(max(width, MIN_WIDTH), MAX_WIDTH))
            self.write_text(sheet, 0, col, column.name, formats.header)
        sheet.freeze_panes(1, 0)
        write = self.write_cell
        number = 0
        for number, row in enumerate(rows, start=1):  # noqa: B007 (the count is used below)
            if number > MAX_ROWS:
                raise ValueError(
                    f"report {report.name!r} has more than {MAX_ROWS:,} rows, more than an XLSX sheet holds: "
                    "export it as CSV"
                )
            for col, (type_, value) in enumerate(zip(types, row, strict=True)):
                if value is not None:
                    write(sheet, number, col, type_, value)
        if report.columns:
            sheet.autofilter(0, 0, max(number, 1), len(report.columns) - 1)
        return number

    def write_text(self, sheet: Any, row: int, col: int, value: Any, cell_format: Any = None) -> None:
        text = value if isinstance(value, str) else str(value)
        if cells.is_formula_like(text):
            cell_format = self.quoted_header if cell_format is self.header else self.quoted
        sheet.write_string(row, col, text, cell_format)

    def write_cell(self, sheet: Any, row: int, col: int, type_: str, value: Any) -> None:
        if type_ == "text":
            self.write_text(sheet, row, col, value)
            return
        value = cells.typed(type_, value)
        if isinstance(value, str):  # not of its column's type: as it is
            self.write_text(sheet, row, col, value)
        elif isinstance(value, bool):
            sheet.write_boolean(row, col, value)
        elif type_ == "decimal":
            sheet.write_number(row, col, float(value), self.decimal(value))
        elif type_ == "integer":
            if abs(value) < MAX_EXACT_INT:
                sheet.write_number(row, col, value)
            else:
                sheet.write_string(row, col, str(value))
        elif type_ == "instant":
            sheet.write_datetime(row, col, value.replace(tzinfo=None), self.by_type["instant"])
        elif type_ == "date":
            sheet.write_datetime(row, col, value, self.by_type["date"])
        else:  # pragma: no cover (every type is handled above)
            self.write_text(sheet, row, col, value)
