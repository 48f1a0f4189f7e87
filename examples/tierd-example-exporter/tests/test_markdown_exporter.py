"""The markdown exporter, tested as its author would: rows from a generator,
the plugin loaded by name from this folder, nothing installed. Run ``pytest``
here, or tierd's ``make test``."""

import io
import sys
from pathlib import Path

# tierd's own test run collects this file without this folder on its path.
_HERE = str(Path(__file__).resolve().parents[1])
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import tierd_example_exporter  # noqa: E402
from tierd_example_exporter import MarkdownExporter  # noqa: E402

from tierd.core.plugins import make_plugin_manager  # noqa: E402
from tierd.core.registry import Column, ReportData, collect_registries  # noqa: E402


def report(rows) -> ReportData:
    return ReportData(
        name="event_volume",
        title="Event volume",
        description="Events per type and day",
        tenant="acme",
        params={"from": "2026-11-01", "to": "2026-11-30"},
        generated_at=1764590400,
        columns=[Column("type", "text"), Column("events", "integer"), Column("seen", "instant")],
        rows=iter(rows),
    )


def test_a_report_is_a_markdown_table():
    out = io.BytesIO()
    rows = (("invoice.paid", n, 1764590400 + n) for n in range(3))  # a generator, read once
    MarkdownExporter().export([report(rows)], out)
    text = out.getvalue().decode()
    lines = text.splitlines()
    assert lines[0] == "# Event volume"
    assert "- Tenant: acme" in lines and "- from: 2026-11-01" in lines
    assert "| type | events | seen |" in lines and "|---|---:|---|" in lines
    assert "| invoice.paid | 2 | 2025-12-01 12:00:02 |" in lines


def test_a_cell_stays_in_its_column():
    out = io.BytesIO()
    MarkdownExporter().export([report([("a|b\nc", None, None)])], out)
    assert out.getvalue().decode().splitlines()[-1] == "| a\\|b<br>c |  |  |"


def test_it_registers_like_a_built_in_format():
    pm = make_plugin_manager(load_entrypoints=False, builtins=(), plugins=[tierd_example_exporter])
    exporter = collect_registries(pm).report_exporters["markdown"]
    assert isinstance(exporter, MarkdownExporter) and exporter.extension == "md" and not exporter.many
