"""JSON Lines: one JSON object per row, nothing else (``jsonlines.org``).

Each line is a row as an object keyed by column name, with the values of the
``json`` format (decimals as exact strings, instants ISO 8601 in UTC). For
loading into other tools line by line; the report's title and parameters are
in the ``json`` format, not here.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from tierd.core.registry import ReportData, ReportExporter
from tierd.plugins.reports.exporters import cells
from tierd.plugins.reports.exporters.json import dumps, row_object


class JsonlExporter(ReportExporter):
    """One JSON object per row."""

    format_name = "jsonl"
    description = "JSON Lines: one object per row"
    media_type = "application/x-ndjson"
    extension = "jsonl"
    many = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        report = cells.one_report(self, reports)
        types = cells.column_types(report.columns)
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        try:
            for row in report.rows:
                text.write(dumps(row_object(report.columns, types, row)) + "\n")
            text.flush()
        finally:
            text.detach()
