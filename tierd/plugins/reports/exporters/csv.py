"""CSV: ``csv`` (RFC 4180, UTF-8) and ``csv-excel`` (for spreadsheets in
comma-decimal locales).

``export(reports, out)`` takes no options, so each variant is a format of its
own, registered side by side:

* ``csv``: RFC 4180 as the :mod:`csv` module writes it: ``,`` between
  fields, CRLF line ends, fields quoted when they hold a quote, a separator or
  a line break; UTF-8 without a BOM. Decimals as stored (``1234.50``), instants
  ISO 8601 in UTC (``2026-11-30T12:00:00Z``), dates ``YYYY-MM-DD``, booleans
  ``true``/``false``, empty for none. What scripts and other programs read.
* ``csv-excel``: what Excel and LibreOffice open with a double click where the
  decimal separator is a comma (Germany, France, most of Europe): UTF-8 *with*
  a BOM (so that ``Müller`` is not read as Windows-1252), ``;`` between fields,
  decimals with a comma (``1234,50``), instants as ``2026-11-30 12:00:00``
  (UTC), which spreadsheets read as date-times.

Both neutralise text cells that a spreadsheet would run as a formula (starting
with ``=``, ``+``, ``-``, ``@``, tab or carriage return): they get a leading
``'``, as OWASP recommends against CSV injection. Numbers are never touched.
"""

from __future__ import annotations

import csv
import io
from typing import Any, BinaryIO

from tierd.core.registry import ReportData, ReportExporter
from tierd.plugins.reports.exporters import cells


class CsvExporter(ReportExporter):
    """RFC 4180, UTF-8, ``,``: for programs (see the module's docstring)."""

    format_name = "csv"
    description = "CSV (RFC 4180, UTF-8, comma-separated)"
    media_type = "text/csv"
    extension = "csv"
    many = False

    #: Field separator.
    delimiter = ","
    #: Start the file with a UTF-8 byte order mark.
    bom = False
    #: Decimals with a comma (``1234,50``) and instants as ``2026-11-30 12:00:00``.
    spreadsheet = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        report = cells.one_report(self, reports)
        types = cells.column_types(report.columns)
        text = io.TextIOWrapper(out, encoding="utf-8-sig" if self.bom else "utf-8", newline="")
        try:
            writer = csv.writer(text, delimiter=self.delimiter, lineterminator="\r\n")
            writer.writerow([cells.neutralise(column.name) for column in report.columns])
            field = self._field
            for row in report.rows:
                writer.writerow([field(type_, value) for type_, value in zip(types, row, strict=True)])
            text.flush()
        finally:
            text.detach()  # `out` is the caller's to close

    def _field(self, type_: str, value: Any) -> str:
        if value is None:
            return ""
        if type_ == "text":
            return cells.neutralise(value if isinstance(value, str) else str(value))
        value = cells.typed(type_, value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if type_ == "decimal" and not isinstance(value, str):
            number = cells.decimal_text(value)
            return number.replace(".", ",") if self.spreadsheet else number
        if type_ == "instant" and not isinstance(value, str):
            iso = cells.iso_instant(value)
            return iso.replace("T", " ").removesuffix("Z") if self.spreadsheet else iso
        if type_ == "date" and not isinstance(value, str):
            return value.isoformat()
        if isinstance(value, str):  # a value that is not of its column's type, as it is
            return cells.neutralise(value)
        return str(value)


class CsvExcelExporter(CsvExporter):
    """BOM, ``;`` and decimal comma: for spreadsheets in comma-decimal locales
    (see the module's docstring)."""

    format_name = "csv-excel"
    description = "CSV for spreadsheets in comma-decimal locales (UTF-8 with BOM, ';', decimal comma)"
    delimiter = ";"
    bom = True
    spreadsheet = True
