"""``appliance report``: a database filled through the real pipeline (corpus syslog lines over
UDP, SSH brute force raising incidents that are acknowledged and resolved, NetFlow v5 into the
rollups) read by the CLI into HTML (tables and inline SVG graphs), CSV (parses) and PDF (its
pages render with pdftoppm into PNGs that are not blank) — also while the appliance runs."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.reports.period import parse_span
from tests.conftest import TOKEN, corpus_dir, free_port, need_tool, running_appliance
from tests.netflow_packets import v5, v5_record
from tests.test_lifecycle import Proc, write_config

CORPUS_FILES = ("linux_sshd.log", "cisco_asa.log", "fortinet_fortigate.log", "paloalto_panos.log")
LINES_PER_FILE = 150


def corpus_lines() -> list[bytes]:
    out = []
    for name in CORPUS_FILES:
        with (corpus_dir("syslog") / name).open("rb") as fh:
            lines = [raw.rstrip(b"\r\n") for raw in fh if raw.strip()]
        out += lines[:LINES_PER_FILE]
    return out


def brute_force(ip: str, n: int = 12) -> list[bytes]:
    """SSH failures stamped now (RFC 5424), so correlation takes them as on time."""
    now = time.time()
    return [
        f"<38>1 {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now - n + i))}Z srv1 sshd"
        f" 26279 - - Failed password for root from {ip} port {40000 + i} ssh2".encode()
        for i in range(n)
    ]


async def fill(tmp: Path) -> Path:
    """Run an appliance on ``tmp``, feed it, handle two incidents, stop it; its config path."""
    sections: dict[str, Any] = {
        "appliance": {"data_dir": str(tmp / "data"), "sensor_id": "report-01"},
        "sources": {
            "syslog": [{"protocol": "udp", "listen": "127.0.0.1:0"}],
            "netflow": [{"listen": "127.0.0.1:0", "allowed": ["127.0.0.0/8"]}],
        },
    }
    async with running_appliance(tmp, **sections) as run:
        syslog = next(s for s in run.app.sources if "netflow" not in s.name)
        netflow = next(s for s in run.app.sources if "netflow" in s.name)
        lines = corpus_lines() + brute_force("203.0.113.9") + brute_force("198.51.100.23")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, line in enumerate(lines):
                s.sendto(line, syslog.address)
                if i % 50 == 49:
                    await asyncio.sleep(0.01)  # paced: the loopback buffer drops bursts
            records = [
                v5_record(f"10.0.0.{k}", "192.0.2.80", 50000 + k, 443, 6, 1000 * (k + 1), k + 1)
                for k in range(1, 9)
            ]
            s.sendto(v5(records), netflow.address)
        await run.wait_stored(len(lines) * 0.9, timeout=20)

        brute = "SSH brute force from one source"

        async def brute_incidents() -> list[dict[str, Any]]:
            got = await run.get_json("/api/v1/incidents")
            return [i for i in got["incidents"] if i["rule"]["title"] == brute]

        await run.wait_for(lambda: _count(brute_incidents(), 2), timeout=20)
        incidents = await brute_incidents()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for inc, actions in zip(incidents, (("ack", "resolve"), ("ack",)), strict=False):
            for action in actions:
                url = f"{run.api}/api/v1/incidents/{inc['id']}/{action}"
                async with run.session.post(url, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
    config = tmp / "appliance.toml"
    config.write_text(
        f'[appliance]\ndata_dir = "{tmp / "data"}"\nsensor_id = "report-01"\nallow_empty = true\n'
    )
    return config


async def _count(found: Any, n: int) -> bool:
    return len(await found) >= n


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus_dir("syslog")  # skip without the corpus
    tmp = tmp_path_factory.mktemp("report")
    return asyncio.run(fill(tmp))


def report(config: Path, fmt: str, out: Path, since: str = "24h") -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "report",
            "--since",
            since,
            "--format",
            fmt,
            "--output",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_html_report_has_the_tables_and_graphs(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = report(filled, "html", out)
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    for heading in (
        "Incidents by severity",
        "Incidents by rule",
        "Noisiest rules",
        "Top event sources",
        "Device health",
        "Top talkers (flows)",
        "MTTA (mean time to acknowledge)",
    ):
        assert f">{heading}<" in page, heading
    assert page.count("<svg") == 6
    assert "SSH brute force" in page and "203.0.113.9" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
    )  # loads nothing from anywhere


def test_csv_report_parses_with_the_facts(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert report(filled, "csv", out).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    summary = {r["key"]: r["value"] for r in rows if r["section"] == "summary"}
    assert int(summary["Incidents"]) >= 2
    assert summary["Acknowledged / resolved"] == "2 / 1"
    assert summary["MTTR (mean time to resolve)"] != "-"
    by_sev = {r["key"]: int(r["value"]) for r in rows if r["section"] == "incidents_by_severity"}
    assert by_sev["high"] >= 2
    talkers = {r["key"]: int(r["value"]) for r in rows if r["section"] == "top_talkers_flows"}
    assert talkers["10.0.0.8"] == 9000  # 1000 bytes x (k + 1) for 10.0.0.k
    devices = [r for r in rows if r["section"] == "device_health"]
    assert devices and all(int(r["value"]) >= 0 for r in devices)


def page_stats(path: Path) -> tuple[float, float]:
    """(variance of the grey levels, share of pixels not white) of a rendered page. Pillow
    comes with reportlab."""
    from PIL import Image, ImageStat

    with Image.open(path) as img:
        grey = img.convert("L")
        variance = ImageStat.Stat(grey).var[0]
        hist = grey.histogram()
    return variance, 1 - hist[255] / sum(hist)


def test_pdf_report_pages_render_and_are_not_blank(filled: Path, tmp_path: Path) -> None:
    pdftoppm = need_tool("pdftoppm")
    out = tmp_path / "r.pdf"
    result = report(filled, "pdf", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"%PDF-")
    subprocess.run(
        [pdftoppm, "-png", "-r", "40", str(out), str(tmp_path / "page")], check=True, timeout=60
    )
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 2
    for page in pages:
        variance, ink = page_stats(page)
        assert variance > 50 and ink > 0.005, f"{page.name} looks blank: {variance=}, {ink=}"
    assert page_stats(pages[0])[1] > 0.03  # the summary and the first graphs


def test_report_runs_while_the_appliance_does(filled: Path, tmp_path: Path) -> None:
    api_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "live.toml"
    write_config(config, filled.parent / "data", api_port, [udp_port])
    proc = Proc(config, api_port)
    try:
        proc.wait_healthy()
        out = tmp_path / "live.csv"
        result = report(config, "csv", out)
        assert result.returncode == 0, result.stderr
        assert "incidents_by_severity" in out.read_text()
        assert (proc.healthz() or {}).get("status") == "ok"
    finally:
        proc.kill()


def test_a_bad_period_is_a_usage_error(filled: Path, tmp_path: Path) -> None:
    result = report(filled, "csv", tmp_path / "x.csv", since="yesterday")
    assert result.returncode == 2 and "--since" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_periods_parse_with_units() -> None:
    assert parse_span("24h") == 86400 and parse_span("7d") == 7 * 86400
    assert parse_span("90m") == 5400 and parse_span("30") == 30
    with pytest.raises(ValueError):
        parse_span("0h")


def test_no_database_is_a_clear_failure(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text(f'[appliance]\ndata_dir = "{tmp_path / "none"}"\nallow_empty = true\n')
    result = report(config, "html", tmp_path / "r.html")
    assert result.returncode == 1 and "no database" in result.stderr
    assert os.listdir(tmp_path) == ["empty.toml"]
