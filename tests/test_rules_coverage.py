"""Every built-in rule can match something real, through the real decoding path.

Hand-built events (tests/ruletools.py) show what a rule does with the fields it expects; they
cannot show that a decoder ever produces those fields. Here each single-event rule must match
at least one real input decoded the way the listeners decode it:

- syslog lines: every decoder file's ``[[tests]]`` samples, ``tests/data/rule_samples.log``
  (real lines with their provenance) and the shared corpus's ``syslog/*.log``;
- SNMP traps: messages from the appliance's own encoder (as the interop tests send them with
  net-snmp's ``snmptrap``) and the corpus's trap captures, through the trap decoder;
- flows: NetFlow v9 datagrams from ``tests/netflow_packets.py`` and the corpus's pmacct
  captures and python-netflow packets, through the flow decoder.

A correlation cannot fire unless the rules it references match, so each correlation's
referenced rules (down to the detections) must be covered too. Rules only the corpus reaches
are listed in ``CORPUS_ONLY``; without the corpus their check skips with its reason, and every
other rule is still checked on the in-repo inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.analysis.baselines import BaselineStage
from appliance.analysis.intel import SourceText, build_index
from appliance.analysis.intel_stage import IntelEnricher
from appliance.config import AnalysisSection
from appliance.correlate import Engine
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from appliance.metrics import Registry
from appliance.mibs import MibResolver
from appliance.protocols.netflow.decoder import NetflowDecoder
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.ecs import SeverityTable, trap_event
from appliance.protocols.snmp.message import decode_message, encode_trap_v2c, v2_varbinds
from appliance.protocols.syslog.decode import decode_with_fields
from appliance.protocols.syslog.vendors import BUILTIN_FILES, REGISTRY
from tests.conftest import CORPUS
from tests.netflow_packets import FLOW_FIELDS, flow_record, pad4, set_, template_record, v9
from tests.pcap_reader import udp_packets
from tests.ruletools import builtin

NOW = 1_790_000_000.0
SENDER = "192.0.2.1"
SAMPLES = Path(__file__).parent / "data" / "rule_samples.log"

# Rules whose only real input today is the shared corpus (checked when it is present).
CORPUS_ONLY = {
    "ids_alert_severity_3",  # Snort fast alerts
    "privilege_escalation_failure",  # linux_su.log, linux_sudo.log
}

IF_INDEX_3 = "1.3.6.1.2.1.2.2.1.1.3"
IF_DESCR_3 = "1.3.6.1.2.1.2.2.1.2.3"
# SNMPv2-MIB / IF-MIB notifications, sent as net-snmp's snmptrap sends them in
# tests/test_rules_snmp_interop.py (same OIDs and varbinds).
TRAPS = {
    "coldStart": ("1.3.6.1.6.3.1.1.5.1", []),
    "authenticationFailure": ("1.3.6.1.6.3.1.1.5.5", []),
    "linkDown": ("1.3.6.1.6.3.1.1.5.3", [(IF_INDEX_3, ber.INTEGER, b"\x03"),
                                         (IF_DESCR_3, ber.OCTET_STRING, b"Gi0/3")]),
    "linkUp": ("1.3.6.1.6.3.1.1.5.4", [(IF_INDEX_3, ber.INTEGER, b"\x03"),
                                       (IF_DESCR_3, ber.OCTET_STRING, b"Gi0/3")]),
}  # fmt: skip


# ---------------------------------------------------------------------------- decoding paths


def syslog_event(line: str) -> Event:
    """As the syslog intake makes it (appliance/sources/syslog_intake.py)."""
    data = line.encode()
    msg, fields = decode_with_fields(data, NOW, None, SENDER)
    fields["log.source.transport"] = "udp"
    name = REGISTRY.decode(msg, fields)
    if name:
        fields["event.dataset"] = name
    return Event(NOW, NOW, "syslog", fields, raw=data)


def trap_events(data: bytes, peer: str, port: int) -> list[Event]:
    """As the trap source makes it (appliance/sources/snmp_trap.py); [] if not a notification."""
    try:
        msg = decode_message(data)
    except Exception:
        return []
    v1 = msg.v1
    agent = v1.agent_addr if v1 is not None and v1.agent_addr != "0.0.0.0" else None
    ev = trap_event(
        v2_varbinds(msg), version="1" if v1 is not None else "2c", pdu="trap", peer_ip=peer,
        peer_port=port, agent_ip=agent, now=NOW, resolver=MibResolver(),
        severities=SeverityTable({}),
    )  # fmt: skip
    return [ev]


def flow_events(decoder: NetflowDecoder, data: bytes, exporter: str, port: int) -> list[Event]:
    """As the NetFlow source hands them to the flow path (appliance/sources/netflow_udp.py)."""
    try:
        records = decoder.decode(data, exporter, NOW, port)
    except Exception:
        return []
    return [Event(ts, NOW, "netflow", f) for ts, f in records]


# ---------------------------------------------------------------------------- inputs


def sample_lines() -> Iterator[tuple[str, str]]:
    """The lines of rule_samples.log (each after its provenance comment)."""
    for n, line in enumerate(SAMPLES.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            yield f"rule_samples.log:{n}", line


def in_repo_events() -> Iterator[tuple[str, Event]]:
    for f in BUILTIN_FILES:
        for i, t in enumerate(f.tests):
            yield f"{f.decoder.name}.toml [[tests]] {i}", syslog_event(t["line"])
    for where, line in sample_lines():
        yield where, syslog_event(line)
    for name, (oid, varbinds) in TRAPS.items():
        for ev in trap_events(encode_trap_v2c(b"public", oid, varbinds), "192.0.2.7", 50162):
            yield f"trap {name}", ev
    # One exporter's v9 datagram: a large upload from an inside host, a DNS query out, and a
    # flow between two inside hosts.
    recs = b"".join((
        flow_record("10.1.1.20", "198.51.100.200", 40000, 443, 6, 600_000_000, 420_000),
        flow_record("192.168.1.30", "203.0.113.53", 53000, 53, 17, 120, 1),
        flow_record("10.1.1.20", "10.1.1.21", 40001, 445, 6, 4_000, 12),
    ))  # fmt: skip
    packet = v9([set_(0, template_record(256, FLOW_FIELDS)), set_(256, pad4(recs))])
    for ev in flow_events(NetflowDecoder(), packet, "192.0.2.9", 2055):
        yield "netflow v9 (tests/netflow_packets.py)", ev


def corpus_events() -> Iterator[tuple[str, Event]]:
    for path in sorted((CORPUS / "syslog").glob("*.log")):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.strip():
                yield f"corpus syslog/{path.name}:{n}", syslog_event(line)
    for path in sorted((CORPUS / "snmp").glob("*.pcap")):
        for pkt in udp_packets(path):
            for ev in trap_events(pkt.payload, pkt.src, pkt.sport):
                yield f"corpus snmp/{path.name}", ev
    for path in sorted((CORPUS / "netflow").glob("*.pcap")):
        decoder = NetflowDecoder()  # one per capture: templates are per exporter session
        for pkt in udp_packets(path):
            for ev in flow_events(decoder, pkt.payload, pkt.src, pkt.sport):
                yield f"corpus netflow/{path.name}", ev
    for path in sorted((CORPUS / "netflow").glob("python-netflow_*.hex")):
        data = bytes.fromhex("".join(path.read_text().split()))
        for ev in flow_events(NetflowDecoder(), data, "192.0.2.9", 2055):
            yield f"corpus netflow/{path.name}", ev


# The threat-intel stage runs on the listeners' path before the rules: with the documentation
# ranges listed (the addresses samples use), its fields reach the intel rule as they would.
INTEL_LIST = "192.0.2.0/24\n198.51.100.0/24\n203.0.113.0/24\n"


def coverage(events: Iterator[tuple[str, Event]]) -> dict[str, list[str]]:
    """Rule name -> where its matching inputs came from."""
    eng = Engine(builtin())
    index, _ = build_index([SourceText("test-list", "plain", INTEL_LIST, 80, NOW, None)], 10)
    intel = IntelEnricher(index, Registry())
    # The baseline stage with nothing to learn first: every key's second event in an hour is
    # above its (empty) baseline and every first value is a new term, so its fields reach the
    # baseline rules on the real decoded inputs.
    baselines = BaselineStage(
        dataclasses.replace(AnalysisSection(), new_term_learning=0.0, baseline_min_count=1)
    )
    baselines.rates.s.warmup_weeks = 0
    hour = int(NOW // 3600)
    out: dict[str, list[str]] = {}
    for where, ev in events:
        intel.enrich(ev, NOW)
        baselines.observe(ev, hour, NOW)
        for d in eng.matches(ev):
            out.setdefault(d.meta.name or d.meta.id, []).append(where)
    return out


@functools.cache
def in_repo() -> dict[str, list[str]]:
    return coverage(in_repo_events())


def corpus_present() -> bool:
    return all((CORPUS / sub).is_dir() for sub in ("syslog", "snmp", "netflow"))


@functools.cache
def with_corpus() -> dict[str, list[str]]:
    found = {k: list(v) for k, v in in_repo().items()}
    for name, where in coverage(corpus_events()).items():
        found.setdefault(name, []).extend(where)
    return found


# ---------------------------------------------------------------------------- rule sets


def detections(rs: RuleSet) -> set[str]:
    return {d.meta.name or d.meta.id for d in rs.detections}


def referenced_detections(rs: RuleSet) -> dict[str, set[str]]:
    """Correlation name -> the detections it rests on (through inner correlations)."""
    by_id = {r.meta.id: r for r in [*rs.detections, *rs.correlations]}
    corr_ids = {c.meta.id for c in rs.correlations}

    def leaves(rule_id: str) -> set[str]:
        r = by_id[rule_id]
        if rule_id not in corr_ids:
            return {r.meta.name or r.meta.id}
        return set().union(*(leaves(ref) for ref in r.refs))  # type: ignore[union-attr]

    return {c.meta.name or c.meta.id: leaves(c.meta.id) for c in rs.correlations}


def uncovered(names: set[str], found: dict[str, list[str]]) -> list[str]:
    return sorted(n for n in names if n not in found)


# ---------------------------------------------------------------------------- the checks


def test_the_samples_file_gives_every_line_its_provenance() -> None:
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()
    data = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    assert data
    for i in data:
        assert lines[i - 1].startswith("# "), f"rule_samples.log:{i + 1} has no provenance line"
        source = lines[i - 1].lower()  # a licence, or the vendor's documentation
        assert any(w in source for w in ("licen", "gpl", "learn.microsoft.com")), source


def test_every_detection_rule_matches_an_in_repo_sample() -> None:
    """Checked without the corpus: every rule but CORPUS_ONLY has an in-repo input."""
    rs = builtin()
    assert not rs.failures
    assert detections(rs) >= CORPUS_ONLY, "CORPUS_ONLY names a rule that is not built in"
    missing = uncovered(detections(rs) - CORPUS_ONLY, in_repo())
    assert not missing, f"no in-repo sample matches: {missing}"


def test_corpus_only_list_is_not_stale() -> None:
    """A rule an in-repo sample now reaches leaves CORPUS_ONLY (so it is checked everywhere)."""
    stale = sorted(CORPUS_ONLY & set(in_repo()))
    assert not stale, f"covered in repo, drop from CORPUS_ONLY: {stale}"


@pytest.mark.corpus
def test_every_detection_rule_matches_a_corpus_line_or_sample() -> None:
    if not corpus_present():
        pytest.skip(f"corpus {CORPUS} not present (set APPLIANCE_CORPUS): cannot check "
                    f"{sorted(CORPUS_ONLY)}")  # fmt: skip
    missing = uncovered(detections(builtin()), with_corpus())
    assert not missing, f"no corpus line or sample matches: {missing}"


def test_every_correlation_rests_on_covered_rules() -> None:
    found = with_corpus() if corpus_present() else in_repo()
    problems = {}
    for name, refs in sorted(referenced_detections(builtin()).items()):
        bare = uncovered(refs - (set() if corpus_present() else CORPUS_ONLY), found)
        if bare:
            problems[name] = bare
    assert not problems, f"correlations whose rules match nothing real: {problems}"
    assert referenced_detections(builtin())  # the built-ins do have correlations


@pytest.mark.parametrize(
    ("rule", "source"),
    [
        ("device_reboot", "trap coldStart"),
        ("snmp_authentication_failure", "trap authenticationFailure"),
        ("interface_down", "trap linkDown"),
        ("flow_record", "netflow v9 (tests/netflow_packets.py)"),
        ("flow_outbound", "netflow v9 (tests/netflow_packets.py)"),
        ("single_large_outbound_flow", "netflow v9 (tests/netflow_packets.py)"),
    ],
)
def test_trap_and_flow_rules_match_decoded_packets(rule: str, source: str) -> None:
    assert source in in_repo().get(rule, [])


def test_a_real_cold_start_trap_capture_restarts_the_device() -> None:
    """zeek's snmpv1_trap.pcap: a v1 trap with generic-trap 0 is coldStart (RFC 3584)."""
    path = CORPUS / "snmp" / "zeek_snmpv1_trap.pcap"
    if not path.is_file():
        pytest.skip(f"corpus {path} not present (set APPLIANCE_CORPUS)")
    events = [ev for pkt in udp_packets(path) for ev in trap_events(pkt.payload, pkt.src, 162)]
    assert [e.fields["event.action"] for e in events] == ["coldStart"]
    assert "device_reboot" in {d.meta.name for d in Engine(builtin()).matches(events[0])}
