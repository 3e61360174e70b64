"""The ``[analysis]`` file parsers (``appliance/analysis``): any bytes under any file name are
a loaded file or :class:`AnalysisFileError`; whatever loads builds its indexes, stamps storable
fields on events and scores incidents without raising.

Input: one byte choosing the file name (its extension picks CSV/TOML/rules; content picks the
rest), then the file's bytes. Seeds: the sample files in tests/data/analysis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from appliance.analysis import risk
from appliance.analysis.assets import AssetIndex
from appliance.analysis.context import (
    AnalysisFileError,
    Context,
    enrich,
    parse_file,
    risk_inputs,
)
from appliance.analysis.idsrules import SignatureIndex
from appliance.analysis.vulns import VulnIndex
from tests.fuzz.harness import committed_seeds, stored_json

MAX_LEN = 65_536
NAMES = ["assets.csv", "assets.toml", "local.rules", "scan.nessus", "report.xml", "kev.json"]
DATA = Path(__file__).resolve().parents[2] / "data" / "analysis"

DICTIONARY = (b"<ReportHost", b"<ReportItem", b"<cve>", b"</cve>", b"<result>", b"<host>",
              b'<ref type="cve" id="', b"<nmaprun", b'<script id="vulners"', b"<elem key=",
              b"<!DOCTYPE", b"<!ENTITY", b"CVE-2020-1350", b"reference:cve,", b"sid:", b";)",
              b'"cveID"', b'"vulnerabilities"', b'"cvssMetricV31"', b"ip,cidr,zone",
              b"/24", b"::/64", b"[[asset]]")  # fmt: skip

EVENTS = [
    {"source.ip": "192.168.88.10", "destination.ip": "4.2.2.3", "destination.port": 53,
     "event.kind": "alert", "event.category": ["intrusion_detection"], "rule.id": "2012811"},
    {"source.ip": "2001:db8:10::1", "destination.ip": "172.16.5.20", "rule.id": 42,
     "event.kind": "alert", "event.category": "intrusion_detection"},
]  # fmt: skip


def seeds() -> Iterator[bytes]:
    for path in sorted(DATA.iterdir()):
        name = next((n for n in NAMES if n.endswith(path.suffix)), NAMES[4])
        yield bytes([NAMES.index(name)]) + path.read_bytes()
    yield from committed_seeds("analysis-files")


def one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    try:
        loaded = parse_file(name, data[1:])
    except AnalysisFileError as exc:
        assert str(exc).startswith(name), exc  # the error names the file
        return
    rep = loaded.report
    ctx = Context(
        AssetIndex(loaded.assets + (rep.hosts if rep else [])),
        VulnIndex([rep] if rep else []),
        SignatureIndex(loaded.signatures),
    )
    for asset in ctx.assets.assets:
        assert asset.criticality is None or 1 <= asset.criticality <= 5, asset
    for f in rep.findings if rep else []:
        assert f.cvss is None or 0.0 <= f.cvss <= 10.0, f
    for template in EVENTS:
        fields = dict(template)
        enrich(fields, ctx)
        stored_json(fields, "enriched event")
        inputs = risk_inputs("medium", fields, ctx)
        for policy in (risk.Policy(), risk.Policy(unmatched_ids="suppress")):
            a = risk.assess(inputs, policy)
            assert 0 <= a.score <= 100 and a.severity in risk.SEVERITIES, a
