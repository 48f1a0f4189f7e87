"""The built-in report exporters, one module per format.

* :mod:`.csv`: ``csv`` (RFC 4180, UTF-8) and ``csv-excel`` (BOM, ``;``,
  decimal comma: for spreadsheets in comma-decimal locales)
* :mod:`.json`: ``json``, one document with the metadata and the rows
* :mod:`.jsonl`: ``jsonl``, one object per row
* :mod:`.xlsx`: ``xlsx``, several reports in one workbook (XlsxWriter, constant memory)
* :mod:`.pdf`: ``pdf`` (fpdf2), with the chart as an image
* :mod:`.html`: ``html``, one self-contained page, the chart inline as SVG
* :mod:`.cells`: cell values by column type, shared by them

Each reads ``ReportData.rows`` once, as it streams: memory does not grow with
the rows (PDF aside, whose document fpdf2 holds until it is written). The
reports plugin registers :data:`BUILTIN` through
``tierd_register_report_exporters``, as a third-party package registers its own.
"""

from __future__ import annotations

from tierd.core.registry import ReportExporter
from tierd.plugins.reports.exporters.csv import CsvExcelExporter, CsvExporter
from tierd.plugins.reports.exporters.html import HtmlExporter
from tierd.plugins.reports.exporters.json import JsonExporter
from tierd.plugins.reports.exporters.jsonl import JsonlExporter
from tierd.plugins.reports.exporters.pdf import PdfExporter
from tierd.plugins.reports.exporters.xlsx import XlsxExporter

#: One instance of each built-in exporter (they keep no state between exports
#: and may export in several threads at once).
BUILTIN: list[ReportExporter] = [
    CsvExporter(),
    CsvExcelExporter(),
    JsonExporter(),
    JsonlExporter(),
    XlsxExporter(),
    PdfExporter(),
    HtmlExporter(),
]

__all__ = [
    "BUILTIN",
    "CsvExcelExporter",
    "CsvExporter",
    "HtmlExporter",
    "JsonExporter",
    "JsonlExporter",
    "PdfExporter",
    "XlsxExporter",
]
