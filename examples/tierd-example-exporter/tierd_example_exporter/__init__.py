"""Example third-party report format for tierd: ``markdown``, a GitHub-flavoured
Markdown table.

Registered through the ``tierd`` entry point group (see setup.cfg), exactly as
the built-in formats are.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any, BinaryIO

from tierd.core.plugins import hookimpl
from tierd.core.registry import ReportData, ReportExporter


def cell(type_: str, value: Any) -> str:
    """A value as table text: instants (unix seconds) in UTC, booleans yes/no;
    ``|`` escaped and line breaks as ``<br>`` so that a cell stays in its column."""
    if value is None:
        return ""
    if type_ == "instant":
        value = dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    elif type_ == "boolean":
        value = "yes" if value else "no"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(text.replace("\r\n", "\n").split("\n"))


def inline(text: str) -> str:
    """Text on one line of Markdown."""
    return " ".join(str(text).split())


class MarkdownExporter(ReportExporter):
    """A report as Markdown: the title, the parameters, then the rows as a table."""

    format_name = "markdown"
    description = "Markdown: a heading, the parameters and the rows as a GitHub-flavoured table"
    media_type = "text/markdown"
    extension = "md"
    many = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        if len(reports) != 1:
            raise ValueError("the markdown format takes exactly one report")
        [report] = reports
        generated = dt.datetime.fromtimestamp(report.generated_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = io.TextIOWrapper(out, encoding="utf-8", newline="\n")
        try:
            text.write(f"# {inline(report.title or report.name)}\n\n")
            if report.description:
                text.write(inline(report.description) + "\n\n")
            text.write(f"- Tenant: {inline(report.tenant or 'all tenants')}\n")
            for key, value in report.params.items():
                text.write(f"- {inline(key)}: {inline(value)}\n")
            text.write(f"- Generated: {generated}\n\n")
            types = [c.type for c in report.columns]
            text.write("| " + " | ".join(cell("text", c.name) for c in report.columns) + " |\n")
            text.write("|" + "|".join("---:" if t in ("integer", "decimal") else "---" for t in types) + "|\n")
            for row in report.rows:  # streamed: one row at a time, none kept
                text.write("| " + " | ".join(cell(t, v) for t, v in zip(types, row, strict=True)) + " |\n")
            text.flush()
        finally:
            text.detach()  # `out` is the caller's to close


@hookimpl
def tierd_register_report_exporters(register):
    register(MarkdownExporter())
