"""HTML: one self-contained file (no script, no external style, font or image).

The title, description, tenant, parameters and generated-at, the chart inline
as SVG (drawn by matplotlib, text as paths) when the report has one and
matplotlib is installed, then the table. Every text is escaped.

The chart comes before the table but is known only once every row has been
read: the table is written to a temporary file first (spooled: in memory up to
1 MiB, on disk beyond), which is copied after the chart. Memory holds the
chart's points only (see :class:`tierd.plugins.reports.chart.ChartPoints`).
"""

from __future__ import annotations

import html
import io
import shutil
import tempfile
from typing import BinaryIO

from tierd.core.registry import ReportData, ReportExporter
from tierd.plugins.reports import chart as charts
from tierd.plugins.reports.exporters import cells

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.5rem;margin:0 0 .5rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:1rem 0}
dt{font-weight:600}dd{margin:0}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{color:#59636e;font-size:.9rem}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #d1d9e0;padding:.25rem .5rem;vertical-align:top;white-space:pre-wrap}
thead th{background:#f6f8fa;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#f6f8fa}
p.count{color:#59636e}
"""

#: Spooled in memory up to this size, on disk beyond.
SPOOL_BYTES = 1 << 20


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class HtmlExporter(ReportExporter):
    """A self-contained HTML page (see the module's docstring)."""

    format_name = "html"
    description = "HTML: one self-contained page with the table and the chart inline as SVG"
    media_type = "text/html"
    extension = "html"
    many = False

    def export(self, reports: list[ReportData], out: BinaryIO) -> None:
        report = cells.one_report(self, reports)
        points = charts.ChartPoints.of(report) if charts.available() else None
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline="") as table:
            count = self._table(report, table, points)
            text = io.TextIOWrapper(out, encoding="utf-8", newline="")
            try:
                self._head(report, text)
                if points is not None and points.points:
                    text.write(self._figure(points))
                elif report.chart and not charts.available():
                    text.write('<p class="count">The chart needs matplotlib (pip install "tierd[charts]").</p>\n')
                table.seek(0)
                shutil.copyfileobj(table, text)
                text.write(
                    f'<p class="count">{count:,} row{"" if count == 1 else "s"}</p>\n</main>\n</body>\n</html>\n'
                )
                text.flush()
            finally:
                text.detach()

    def _head(self, report: ReportData, out: io.TextIOBase) -> None:
        generated = cells.iso_instant(cells.generated_at(report))
        out.write(
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="tierd">\n<title>{esc(report.title or report.name)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{esc(report.title or report.name)}</h1>\n"
        )
        if report.description:
            out.write(f"<p>{esc(report.description)}</p>\n")
        out.write("<dl>\n")
        out.write(f"<dt>Report</dt><dd>{esc(report.name)}</dd>\n")
        out.write(f"<dt>Tenant</dt><dd>{esc(report.tenant or 'all tenants')}</dd>\n")
        for key, value in report.params.items():
            out.write(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>\n")
        out.write(
            f'<dt>Generated</dt><dd><time datetime="{generated}">'
            f"{esc(generated.replace('T', ' ').removesuffix('Z'))} UTC</time></dd>\n</dl>\n"
        )

    def _figure(self, points: charts.ChartPoints) -> str:
        try:
            svg = points.render_svg()
        except Exception as exc:  # a chart that cannot be drawn leaves the table
            return f'<p class="count">The chart could not be drawn: {esc(exc)}</p>\n'
        return f"<figure>\n{svg}\n<figcaption>{esc(points.caption())}</figcaption>\n</figure>\n"

    def _table(self, report: ReportData, out: io.TextIOBase | tempfile.SpooledTemporaryFile, points) -> int:
        types = cells.column_types(report.columns)
        numeric = [' class="num"' if t in cells.NUMERIC else "" for t in types]
        out.write("<table>\n<thead>\n<tr>")
        for column in report.columns:
            title = f' title="{esc(column.description)}"' if column.description else ""
            out.write(f'<th scope="col"{title}>{esc(column.name)}</th>')
        out.write("</tr>\n</thead>\n<tbody>\n")
        count = 0
        display = cells.display
        for row in report.rows:
            count += 1
            if points is not None:
                points.add(row)
            out.write(
                "<tr>"
                + "".join(f"<td{n}>{esc(display(t, v))}</td>" for t, n, v in zip(types, numeric, row, strict=True))
                + "</tr>\n"
            )
        out.write("</tbody>\n</table>\n")
        return count
