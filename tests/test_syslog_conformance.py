"""Conformance over the shared real-world corpus: per family, how many lines get a vendor
decode and carry the key fields, compared with the corpus's ground truth where it has one
(Wazuh's decoder names, loghub's OpenSSH templates). Skipped when the corpus is absent."""

from __future__ import annotations

import calendar
import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import REGISTRY
from tests.conftest import corpus_dir

pytestmark = [pytest.mark.corpus, pytest.mark.usefixtures("backend")]
NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def decoded(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            msg = decode_syslog(line, NOW)
            fields = syslog_fields(msg, "192.0.2.1")
            fields["decoder"] = REGISTRY.decode(msg, fields)
            out.append(fields)
    return out


def share(rows: list[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]) -> float:
    return sum(1 for r in rows if pred(r)) / len(rows) if rows else 0.0


def has(*keys: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: all(r.get(k) not in (None, "") for k in keys)


# family file → (our decoder, min share decoded by it, [(selector, required fields, min share)])
FAMILIES: dict[str, tuple[str, float, list[tuple[str, tuple[str, ...], float]]]] = {
    "syslog/cisco_asa.log": (
        "cisco_asa",
        0.97,
        [
            (
                r"%ASA-\d-(106023|106001|106006|106010|106015|710003)",
                ("source.ip", "event.outcome"),
                0.95,
            ),
            (r"%ASA-\d-(605004|605005|113004|113005|611101|611102)", ("event.outcome",), 1.0),
            (r"%ASA-\d-(111008|111010|502101|502102)", ("event.action",), 1.0),
        ],
    ),
    "syslog/cisco_pix.log": ("cisco_asa", 0.9, [(r"Deny|denied", ("event.outcome",), 1.0)]),
    "syslog/cisco_ios.log": (
        "cisco_ios",
        0.9,
        [
            (r"IPACCESSLOGP|SIGNATURE", ("source.ip", "destination.ip"), 0.7),
            (r"UPDOWN", ("observer.ingress.interface.name", "event.action"), 1.0),
        ],
    ),
    "syslog/fortinet_fortigate.log": (
        "fortigate",
        0.95,
        [
            (r"type=\"?traffic", ("source.ip", "destination.ip", "event.outcome"), 0.8),
            (r"action=\"?login", ("user.name", "event.outcome"), 1.0),
        ],
    ),
    "syslog/paloalto_panos.log": (
        "paloalto",
        0.7,
        [(r",THREAT,\w+,.*,.*,.*,.*,.*,.*,", ("event.kind",), 1.0)],
    ),
    "syslog/pfsense_filterlog.log": (
        "pfsense_filterlog",
        1.0,
        [(r".", ("source.ip", "destination.ip", "event.action"), 1.0)],
    ),
    "syslog/linux_iptables.log": (
        "netfilter",
        1.0,
        [(r"SRC=", ("source.ip", "destination.ip", "network.transport"), 1.0)],
    ),
    "syslog/juniper_junos.log": ("juniper_srx", 1.0, [(r".", ("source.ip",), 1.0)]),
    "syslog/f5_bigip.log": ("f5_bigip", 0.8, [(r":\d: ", ("event.code",), 1.0)]),
    "syslog/juniper_netscreen.log": (
        "netscreen",
        1.0,
        [
            (r".", ("event.code", "event.action"), 0.75),
            (r"by \w+ via", ("user.name", "source.ip"), 1.0),
            (r"flood!", ("rule.name", "source.ip", "destination.port"), 1.0),
        ],
    ),
    "syslog/linux_sshd.log": (
        "linux_auth",
        1.0,
        [
            (
                r"Failed password|Accepted|Invalid user",
                ("user.name", "source.ip", "event.outcome"),
                0.9,
            )
        ],
    ),
    "syslog/openssh_loghub.log": ("linux_auth", 1.0, []),
    "syslog/dropbear_sshd.log": ("linux_auth", 1.0, [(r".", ("source.ip", "event.outcome"), 1.0)]),
    "syslog/linux_sudo.log": (
        "linux_auth",
        1.0,
        [(r"COMMAND=", ("user.name", "process.command_line"), 1.0)],
    ),
    "syslog/linux_su.log": ("linux_auth", 1.0, [(r".", ("event.outcome",), 0.8)]),
    "syslog/linux_pam.log": (
        "linux_auth",
        1.0,
        [(r"authentication failure", ("event.outcome",), 1.0)],
    ),
    "syslog/snort_fast-alert_elastic.log": (
        "snort",
        1.0,
        [(r".", ("rule.id", "rule.name", "source.ip", "destination.ip"), 1.0)],
    ),
    "syslog/cef_fireeye.log": ("cef", 1.0, [(r".", ("observer.vendor", "rule.name"), 1.0)]),
    "syslog/cef_elastic-vaporware.log": ("cef", 1.0, [(r"src=", ("source.ip",), 1.0)]),
    "syslog/leef_panda_adaptive_defense.log": ("leef", 1.0, [(r"usrName=", ("user.name",), 1.0)]),
    "syslog/windows_snare_rsyslog-win2022.log": (
        "windows",
        1.0,
        [(r".", ("event.code", "winlog.channel"), 1.0)],
    ),
    "syslog/windows_snare_rfc5424_rsyslog-events.log": (
        "windows",
        1.0,
        [(r"\t4624\t|\t4625\t", ("user.name", "source.ip", "event.outcome"), 1.0)],
    ),
    "json/suricata_eve_elastic-small.jsonl": (
        "suricata_eve",
        1.0,
        [(r'"event_type":"alert"', ("rule.id", "rule.name", "source.ip"), 1.0)],
    ),
    "json/windows_security_eventchannel_json.log": ("windows", 1.0, [(r".", ("event.code",), 1.0)]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_decodes_with_key_fields(family: str) -> None:
    sub, _, name = family.partition("/")
    path = corpus_dir(sub) / name
    if not path.exists():
        pytest.skip(f"{path} not in this corpus")
    rows = decoded(path)
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln]
    decoder, min_share, checks = FAMILIES[family]
    got = share(rows, lambda r: r["decoder"] == decoder)
    assert got >= min_share, f"{family}: {got:.0%} decoded by {decoder}, want {min_share:.0%}"
    for selector, keys, min_fields in checks:
        picked = [r for r, ln in zip(rows, lines, strict=True) if re.search(selector, ln)]
        assert picked, f"{family}: selector {selector!r} matched nothing"
        ok = share(picked, has(*keys))
        assert ok >= min_fields, f"{family} [{selector}]: {ok:.0%} have {keys}"


def test_every_corpus_line_becomes_an_event_with_text() -> None:
    for path in sorted(corpus_dir("syslog").glob("*.log")):
        for row in decoded(path):
            assert row.get("message") is not None, path.name


# Wazuh decoder names → ours: where Wazuh decodes a line, we must claim it with the same vendor.
WAZUH = {
    "cisco-asa": "cisco_asa",
    "cisco-ios": "cisco_ios",
    "sshd": "linux_auth",
    "sudo": "linux_auth",
    "su": "linux_auth",
    "pam": "linux_auth",
    "dropbear": "linux_auth",
    "kernel": "netfilter",
    "pf": "pfsense_filterlog",
    "paloalto": "paloalto",
    "junos-ids": "juniper_srx",
    "junos-rt-flow": "juniper_srx",
    "f5-bigip": "f5_bigip",
    "f5-bigip-cef": "cef",
    "cef-fireeye": "cef",
    "paps": "leef",
    "auditd": "kv",
    "netscreenfw": "netscreen",
}


def test_agreement_with_wazuh_decoders() -> None:
    root = corpus_dir("syslog")
    total = agree = 0
    for expected in sorted(root.glob("*.expected.jsonl")):
        log = root / expected.name.replace(".expected.jsonl", ".log")
        rows = decoded(log)
        for item in map(json.loads, expected.read_text().splitlines()):
            want = WAZUH.get(item["decoder"] or "")
            if (item["decoder"] or "").startswith("fortigate"):
                want = "fortigate"
            if want is None:
                continue
            total += 1
            agree += rows[item["line"] - 1]["decoder"] == want
    assert total > 300
    assert agree / total >= 0.95, f"agree on {agree}/{total} lines"


def test_openssh_fields_match_loghub_templates() -> None:
    root = corpus_dir("syslog")
    rows = decoded(root / "openssh_loghub.log")
    templates = {
        "Failed password for <*> from <*> port <*> ssh2": ("failure", "user.name"),
        "Failed password for invalid user <*> from <*> port <*> ssh2": ("failure", "user.name"),
        "Accepted password for <*> from <*> port <*> ssh2": ("success", "user.name"),
        "Invalid user <*> from <*>": ("failure", "user.name"),
    }
    checked = 0
    with (root / "openssh_loghub.expected_structured.csv").open() as fh:
        for rec in csv.DictReader(fh):
            spec = templates.get(rec["EventTemplate"])
            if spec is None:
                continue
            pattern = "^" + re.escape(rec["EventTemplate"]).replace(r"<\*>", "(.*?)") + "$"
            params = re.match(pattern, rec["Content"])
            assert params is not None
            row = rows[int(rec["LineId"]) - 1]
            assert row["event.outcome"] == spec[0], rec["Content"]
            assert row["user.name"] == params.group(1), rec["Content"]
            assert row["source.ip"] == params.group(2), rec["Content"]
            if "port" in rec["EventTemplate"]:
                assert row["source.port"] == int(params.group(3))
            checked += 1
    assert checked > 400
