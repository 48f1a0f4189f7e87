"""Charts of reports, drawn by matplotlib: SVG for HTML, PNG for PDF.

A report's chart is ``{"type": "line"|"bar", "x": column, "y": [columns]}``.
An exporter collects the points while it streams the rows
(:class:`ChartPoints`: the x and y columns only, at most :data:`MAX_POINTS`
of them, the first ones, and says so in :meth:`ChartPoints.caption`), then
calls :func:`render_svg` or :func:`render_png`.

matplotlib is an extra (``tierd[charts]``, it brings numpy): it is imported
here only when a chart is drawn, and :func:`available` tells the exporters
whether to draw one or to export the table alone. It is used through its
object-oriented API (:class:`matplotlib.figure.Figure`, the Agg and SVG
canvases), never pyplot and its global figures; as some of its state is still
global (the font cache, text layout), one lock keeps drawing to one thread at
a time. Data never reaches mathtext: ``$`` in labels is escaped.
"""

from __future__ import annotations

import importlib.util
import io
import math
import threading
import warnings
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tierd.core.registry import Column, ReportData
from tierd.plugins.reports.exporters import cells

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The most points a chart is drawn from (the first ones): a chart of more is
#: unreadable anyway, and they are the rows an exporter keeps in memory.
MAX_POINTS = 5000
#: Category labels shown on the x axis at most (every n-th one beyond).
MAX_LABELS = 30

_lock = threading.Lock()


def available() -> bool:
    """True if matplotlib is installed (``pip install 'tierd[charts]'``)."""
    return importlib.util.find_spec("matplotlib") is not None


class ChartPoints:
    """The points of a report's chart, collected while its rows stream by.

    ``columns`` are the x column then the y columns, ``points`` tuples in that
    order. Only the first :data:`MAX_POINTS` rows are kept; ``total`` counts all.
    """

    def __init__(self, chart: dict[str, Any], columns: Sequence[Column], limit: int = MAX_POINTS):
        by_name = {column.name: i for i, column in enumerate(columns)}
        ys = chart.get("y") or []
        if isinstance(ys, str):
            ys = [ys]
        missing = [name for name in [chart.get("x"), *ys] if name not in by_name]
        if chart.get("type") not in ("line", "bar") or not ys or missing:
            raise ValueError(f"chart {chart!r} is not a line or bar chart over the report's columns")
        self.chart = {"type": chart["type"], "x": chart["x"], "y": list(ys)}
        self._indexes = [by_name[chart["x"]]] + [by_name[name] for name in ys]
        self.columns = [columns[i] for i in self._indexes]
        self.points: list[tuple] = []
        self.total = 0
        self.limit = limit

    @classmethod
    def of(cls, report: ReportData) -> ChartPoints | None:
        """The collector for ``report``'s chart, or None if it has none (or
        one that names columns it does not have)."""
        if not report.chart:
            return None
        try:
            return cls(report.chart, report.columns)
        except (ValueError, TypeError, KeyError):
            return None

    def add(self, row: tuple) -> None:
        self.total += 1
        if len(self.points) < self.limit:
            self.points.append(tuple(row[i] for i in self._indexes))

    @property
    def truncated(self) -> bool:
        return self.total > len(self.points)

    def caption(self) -> str:
        """What the chart shows, e.g. ``amount by day`` (``, first 5,000 of 12,000 rows``)."""
        text = f"{', '.join(self.chart['y'])} by {self.chart['x']}"
        if self.truncated:
            text += f" (the first {len(self.points):,} of {self.total:,} rows)"
        return text

    def render_svg(self) -> str:
        return render_svg(self.chart, self.columns, self.points)

    def render_png(self, dpi: int = 150) -> bytes:
        return render_png(self.chart, self.columns, self.points, dpi=dpi)


def _plain(text: str) -> str:
    """A label drawn as it is (no mathtext)."""
    return text.replace("$", r"\$")


def _short(label: str, limit: int = 32) -> str:
    """A category label on one line, cut to ``limit`` characters."""
    label = " ".join(label.split())
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _number(type_: str, value: Any) -> float:
    value = cells.typed(type_, value)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | Decimal):
        return float(value)  # matplotlib draws floats: the one place a decimal becomes one
    return math.nan


def _figure(chart: dict[str, Any], columns: Sequence[Column], points: Sequence[tuple], size: tuple[float, float]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    x_column, y_columns = columns[0], list(columns[1 : 1 + len(chart["y"])])
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    kind = chart["type"]
    x_type = x_column.type
    continuous = kind == "line" and x_type in ("instant", "date", "integer", "decimal")
    if continuous:
        xs: list[Any] = []
        kept: list[tuple] = []
        for point in points:
            x = cells.typed(x_type, point[0])
            if x is None or isinstance(x, str):
                continue
            xs.append(float(x) if isinstance(x, Decimal) else x)
            kept.append(point)
        for i, column in enumerate(y_columns, start=1):
            ys = [_number(column.type, p[i]) for p in kept]
            ax.plot(xs, ys, label=_plain(column.name), marker="o" if len(xs) <= 50 else None)
        if x_type in ("instant", "date"):
            fig.autofmt_xdate()
    else:
        labels = [_short(cells.display(x_type, p[0])) for p in points]
        positions = list(range(len(points)))
        width = 0.8 / max(1, len(y_columns))
        for i, column in enumerate(y_columns, start=1):
            ys = [_number(column.type, p[i]) for p in points]
            if kind == "bar":
                offset = (i - 1 - (len(y_columns) - 1) / 2) * width
                ax.bar([x + offset for x in positions], ys, width=width, label=_plain(column.name))
            else:
                ax.plot(positions, ys, label=_plain(column.name), marker="o" if len(points) <= 50 else None)

        def label(position: float, _: Any = None) -> str:
            index = int(round(position))
            return _plain(labels[index]) if 0 <= index < len(labels) and abs(position - index) < 1e-6 else ""

        if len(labels) <= MAX_LABELS:
            ax.xaxis.set_major_locator(FixedLocator(positions))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=MAX_LABELS, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(label))
        if any(len(text) > 6 for text in labels):
            for tick in ax.get_xticklabels():
                tick.set_rotation(30)
                tick.set_horizontalalignment("right")
    ax.set_xlabel(_plain(x_column.name))
    if len(y_columns) == 1:
        ax.set_ylabel(_plain(y_columns[0].name))
    else:
        ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _save(fig: Figure, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A label in a script DejaVu lacks (CJK) is drawn with boxes: not worth a warning per glyph.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def render_svg(
    chart: dict[str, Any], columns: Sequence[Column], points: Sequence[tuple], size: tuple[float, float] = (8, 4)
) -> str:
    """The chart as an SVG element (no XML prolog), to put inline in HTML.

    ``columns`` are the x column then the y columns, ``points`` tuples of their
    values in that order (see :class:`ChartPoints`). Text is drawn as paths: the
    SVG needs no font.
    """
    with _lock:
        fig = _figure(chart, columns, points, size)
        svg = _save(fig, "svg", metadata={"Date": None}).decode("utf-8")
    return svg[svg.index("<svg") :]


def render_png(
    chart: dict[str, Any],
    columns: Sequence[Column],
    points: Sequence[tuple],
    size: tuple[float, float] = (8, 4),
    dpi: int = 150,
) -> bytes:
    """The chart as a PNG image (for PDF); arguments as :func:`render_svg`."""
    with _lock:
        fig = _figure(chart, columns, points, size)
        return _save(fig, "png", dpi=dpi, metadata={"Software": None})
