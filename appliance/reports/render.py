"""A report's data as HTML (self-contained, inline SVG graphs), PDF (reportlab, no browser)
or CSV (one ``section,key,value,...`` row per fact, for spreadsheets and scripts)."""

from __future__ import annotations

import csv
import html
import io
import time
from collections.abc import Iterable, Sequence
from typing import Any

from appliance.reports import charts
from appliance.reports.data import ReportData


def _t(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "-"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def summary(d: ReportData) -> list[tuple[str, str]]:
    return [
        ("Sensor", d.sensor_id),
        ("Period", f"{_t(d.since)} to {_t(d.until)}"),
        ("Events", f"{d.events}" + (" (newest read only)" if d.events_truncated else "")),
        ("Incidents", str(d.incidents)),
        ("Acknowledged / resolved", f"{d.acknowledged} / {d.resolved}"),
        ("MTTA (mean time to acknowledge)", _dur(d.mtta)),
        ("MTTR (mean time to resolve)", _dur(d.mttr)),
        ("Flows", f"{d.flow_totals.get('flows', 0)} ({_bytes(d.flow_totals.get('bytes', 0))})"),
    ]


def tables(d: ReportData) -> list[tuple[str, list[str], Sequence[Sequence[Any]]]]:
    """(title, header, rows) of every table in the report, in order."""
    return [
        (
            "Incidents by severity",
            ["severity", "incidents"],
            [list(kv) for kv in d.by_severity.items()],
        ),
        ("Incidents by status", ["status", "incidents"], [list(kv) for kv in d.by_status.items()]),
        (
            "Incidents by rule",
            ["rule", "title", "severity", "incidents", "hits"],
            [list(r) for r in d.by_rule],
        ),
        (
            "Noisiest rules",
            ["rule", "title", "hits", "suppressed hits"],
            [list(r) for r in d.noisiest],
        ),
        ("Top incident sources", ["source.ip", "incidents"], d.incident_sources),
        ("Top event sources", ["source.ip", "events"], d.top_sources),
        ("Top targets", ["destination.ip", "events"], d.top_targets),
        ("Top users", ["user.name", "events"], d.top_users),
        (
            "Device health",
            ["device", "name", "module", "events", "last seen", "silent for", "silent periods"],
            [
                [
                    x["device"],
                    x["name"],
                    x["module"],
                    x["events"],
                    _t(x["last"]),
                    _dur(x["silent_for"]),
                    x["silent_buckets"],
                ]
                for x in d.devices
            ],
        ),
        (
            "Forwarding backlog and data loss (outbox)",
            ["upstream", "state", "items", "bytes", "oldest"],
            [
                [f["upstream"], f["state"], f["items"], f["bytes"], _t(f["oldest"])]
                for f in d.forwarding
            ],
        ),
        ("Top talkers (flows)", ["source.ip", "bytes"], d.top_talkers),
        ("Top destination ports (flows)", ["port", "bytes"], d.top_ports),
    ]


def drawings(d: ReportData) -> list[Any]:
    return [
        charts.severity_bars(d.severity_series, d.bucket),
        charts.time_bars("Events", d.event_series, d.bucket),
        charts.top_bars("Noisiest rules (hits)", [(r[1], r[2]) for r in d.noisiest]),
        charts.top_bars("Top event sources", d.top_sources),
        charts.time_bars("Flow bytes", d.flow_series, d.bucket),
        charts.top_bars("Top talkers (bytes)", d.top_talkers),
    ]


_CSS = """
:root { color-scheme: light dark; --fg: #1b1b1b; --bg: #fff; --line: #ddd; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8e8; --bg: #161616; --line: #444; }
  svg { background: #fff; border-radius: 4px; } }
body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg);
  max-width: 1000px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border-bottom: 1px solid var(--line); padding: .25em .8em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
"""


def to_html(d: ReportData) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Security report {e(d.sensor_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Security report: {e(d.sensor_id)}</h1>",
        f"<p>Generated {e(_t(d.generated))}</p>",
        '<table class="summary">',
    ]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary(d)]
    out.append("</table><h2>Graphs</h2>")
    out += [f'<figure class="chart">{charts.svg(g)}</figure>' for g in drawings(d)]
    for title, header, rows in tables(d):
        out.append(f"<h2>{e(title)}</h2>")
        if not rows:
            out.append("<p>None in this period.</p>")
            continue
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = "".join(
                f'<td class="n">{v}</td>' if isinstance(v, int | float) else f"<td>{e(str(v))}</td>"
                for v in row
            )
            out.append(f"<tr>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def csv_rows(d: ReportData) -> Iterable[list[Any]]:
    yield ["section", "key", "value", "extra"]
    for k, v in summary(d):
        yield ["summary", k, v, ""]
    for b, n in d.event_series:
        yield ["events_per_bucket", _t(b), n, ""]
    for b, counts in d.severity_series:
        for sev, n in counts.items():
            yield ["incidents_per_bucket", _t(b), n, sev]
    for title, header, rows in tables(d):
        section = title.lower().replace(" ", "_").replace("(", "").replace(")", "")
        for row in rows:
            row = list(row)
            key, value = row[0], row[-1] if len(row) > 1 else ""
            extra = "; ".join(f"{h}={v}" for h, v in zip(header[1:-1], row[1:-1], strict=True))
            yield [section, key, value, extra]


def to_csv(d: ReportData) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    for row in csv_rows(d):
        w.writerow(row)
    return buf.getvalue()


def to_pdf(d: ReportData) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table
    from reportlab.platypus.tables import TableStyle

    styles = getSampleStyleSheet()
    esc = html.escape  # Paragraph text is markup: data goes in escaped
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=1.5 * cm,
        rightMargin=1.5 * cm,
        topMargin=1.5 * cm,
        bottomMargin=1.5 * cm,
        title=f"Security report {d.sensor_id}",
    )
    grid = TableStyle(
        [
            ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
            ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f7")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
    story: list[Any] = [
        Paragraph(f"Security report: {esc(d.sensor_id)}", styles["Title"]),
        Paragraph(f"Generated {esc(_t(d.generated))}", styles["Normal"]),
        Spacer(1, 8),
    ]
    t = Table([[k, v] for k, v in summary(d)], hAlign="LEFT")
    t.setStyle(grid)
    story += [t, Spacer(1, 12)]
    for g in drawings(d):
        story += [g, Spacer(1, 10)]
    for title, header, rows in tables(d):
        block: list[Any] = [Paragraph(esc(title), styles["Heading2"])]
        if rows:
            body = [[Paragraph(esc(str(c)), styles["BodyText"]) for c in row] for row in rows]
            widths = [doc.width / len(header)] * len(header)
            tbl = Table([header, *body], hAlign="LEFT", repeatRows=1, colWidths=widths)
            tbl.setStyle(grid)
            block.append(tbl)
        else:
            block.append(Paragraph("None in this period.", styles["Normal"]))
        story.append(KeepTogether(block) if len(rows) < 15 else block[0])
        if len(rows) >= 15:
            story.append(block[1])
    doc.build(story)
    return buf.getvalue()
