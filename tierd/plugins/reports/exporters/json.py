"""JSON: the whole report as one document, written as the rows stream.

::

    {"name": "webhook_deliveries", "title": "...", "description": "...",
     "tenant": "acme", "params": {"from": "2026-11-01"},
     "generated_at": "2026-12-01T07:00:00Z",
     "columns": [{"name": "endpoint", "type": "text", "description": "..."}],
     "chart": null,
     "rows": [{"endpoint": "https://...", "amount": "1234.50", ...}, ...],
     "row_count": 1}

Values by column type: decimals as strings holding the exact decimal
(``"1234.50"``: a JSON number would be read as a float by most parsers),
instants as ISO 8601 in UTC, dates ``YYYY-MM-DD``, booleans ``true``/``false``,
integers as numbers, none as ``null``. The document is written piece by piece,
one row at a time: it is never built in memory.
"""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

from tierd.core.registry import Column, ReportData, ReportExporter
from tierd.plugins.reports.exporters import cells


def json_value(type_: str, value: Any) -> Any:
    """A cell as JSON has it (see the module's docstring)."""
    if value is None:
        return None
    if type_ == "text":
        return value if isinstance(value, str) else str(value)
    value = cells.typed(type_, value)
    if type_ == "decimal" and not isinstance(value, str):
        return cells.decimal_text(value)
    if type_ == "instant" and not isinstance(value, str):
        return cells.iso_instant(value)
    if type_ == "date" and not isinstance(value, str):
        return value.isoformat()
    return value


def row_object(columns: list[Column], types: list[str], row: tuple) -> dict[str, Any]:
    return {c.name: json_value(t, v) for c, t, v in zip(columns, types, row, strict=True)}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str, separators=(",", ":"))


class JsonExporter(ReportExporter):
    """One JSON document: the report's metadata, typed columns and rows as objects."""

    format_name = "json"
    description = "JSON: one document with the title, parameters, typed columns and the rows as objects"
    media_type = "application/json"
    extension = "json"
    many = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        report = cells.one_report(self, reports)
        types = cells.column_types(report.columns)
        head = {
            "name": report.name,
            "title": report.title,
            "description": report.description,
            "tenant": report.tenant,
            "params": report.params,
            "generated_at": cells.iso_instant(cells.generated_at(report)),
            "columns": [{"name": c.name, "type": c.type, "description": c.description} for c in report.columns],
            "chart": report.chart,
        }
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        try:
            text.write(dumps(head)[:-1] + ',"rows":[')
            count = 0
            for row in report.rows:
                text.write(("\n" if count == 0 else ",\n") + dumps(row_object(report.columns, types, row)))
                count += 1
            text.write(f'\n],"row_count":{count}}}\n')
            text.flush()
        finally:
            text.detach()
