"""The report's graphs as reportlab drawings: drawn into the PDF as they are, and rendered to
inline SVG for the HTML report, so both formats show the same graphs from one definition."""

from __future__ import annotations

import time
from collections.abc import Sequence

from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors

from appliance.incidents.manager import SEVERITIES

WIDTH = 480
SEVERITY_COLOURS = {
    "critical": colors.HexColor("#7b1fa2"),
    "high": colors.HexColor("#d32f2f"),
    "medium": colors.HexColor("#f57c00"),
    "low": colors.HexColor("#fbc02d"),
    "informational": colors.HexColor("#1976d2"),
}
BAR = colors.HexColor("#1976d2")


def _label(ts: float, bucket: int) -> str:
    fmt = "%H:%M" if bucket < 86400 else "%m-%d"
    if bucket >= 6 * 3600 and bucket < 86400:
        fmt = "%m-%d %H"
    return time.strftime(fmt, time.gmtime(ts))


def _thin(labels: list[str], keep: int = 12) -> list[str]:
    """Category labels, every n-th kept so they do not overlap."""
    step = max(1, -(-len(labels) // keep))
    return [lab if i % step == 0 else "" for i, lab in enumerate(labels)]


def _title(d: Drawing, text: str) -> None:
    d.add(String(0, d.height - 12, text, fontName="Helvetica-Bold", fontSize=10))


def time_bars(title: str, series: Sequence[tuple[float, int]], bucket: int) -> Drawing:
    """Counts per time bucket (UTC labels)."""
    d = Drawing(WIDTH, 170)
    _title(d, title)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 45, 30, WIDTH - 60, 115
    values = [v for _t, v in series] or [0]
    chart.data = [values]
    chart.bars[0].fillColor = BAR
    chart.bars.strokeColor = None
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(1, max(values))
    chart.valueAxis.labels.fontSize = 7
    chart.categoryAxis.categoryNames = _thin([_label(t, bucket) for t, _v in series] or [""])
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 45
    chart.categoryAxis.labels.boxAnchor = "ne"
    d.add(chart)
    return d


def severity_bars(series: Sequence[tuple[float, dict[str, int]]], bucket: int) -> Drawing:
    """New incidents per time bucket, stacked by severity."""
    d = Drawing(WIDTH, 190)
    _title(d, "New incidents by severity")
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 45, 30, WIDTH - 160, 135
    order = list(reversed(SEVERITIES))
    chart.data = [[counts.get(s, 0) for _t, counts in series] or [0] for s in order]
    chart.categoryAxis.style = "stacked"
    for i, s in enumerate(order):
        chart.bars[i].fillColor = SEVERITY_COLOURS[s]
    chart.bars.strokeColor = None
    totals = [sum(c.values()) for _t, c in series] or [0]
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(1, max(totals))
    chart.valueAxis.labels.fontSize = 7
    chart.categoryAxis.categoryNames = _thin([_label(t, bucket) for t, _c in series] or [""])
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 45
    chart.categoryAxis.labels.boxAnchor = "ne"
    d.add(chart)
    legend = Legend()
    legend.x, legend.y = WIDTH - 100, 160
    legend.fontSize = 8
    legend.colorNamePairs = [(SEVERITY_COLOURS[s], s) for s in order]
    d.add(legend)
    return d


def top_bars(title: str, rows: Sequence[tuple[str, int]]) -> Drawing:
    """Horizontal bars for a top-N list (largest on top)."""
    rows = list(rows)[:10]
    height = 40 + 16 * max(1, len(rows))
    d = Drawing(WIDTH, height)
    _title(d, title)
    chart = HorizontalBarChart()
    chart.x, chart.y, chart.width, chart.height = 150, 10, WIDTH - 170, height - 35
    values = [v for _k, v in reversed(rows)] or [0]
    chart.data = [values]
    chart.bars[0].fillColor = BAR
    chart.bars.strokeColor = None
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(1, max(values))
    chart.valueAxis.labels.fontSize = 7
    chart.categoryAxis.categoryNames = [k[:28] for k, _v in reversed(rows)] or ["(none)"]
    chart.categoryAxis.labels.fontSize = 7
    d.add(chart)
    return d


def svg(drawing: Drawing) -> str:
    """The drawing as an inline ``<svg>`` element (no XML prolog or DOCTYPE)."""
    text = renderSVG.drawToString(drawing)
    return text[text.index("<svg") :]
