"""The network vendors' decoder files are chosen by the registry: every sample a file claims is
claimed by that file when the line goes the way the listeners send it (syslog header, then the
registry's selection), and the lines they share a program or a prefix with still go where they
went before."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import BUILTIN_FILES, REGISTRY

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))

VENDOR_FILES = (
    "aruba_cx",
    "aruba_cx_auth",
    "barracuda_cloudgen",
    "cisco_ftd_connection",
    "cisco_ftd_security",
    "juniper_junos_auth",
    "juniper_junos_config",
    "juniper_junos_link",
    "mikrotik_firewall",
    "opnsense_filterlog",
    "ubiquiti_edgeos",
    "watchguard_firebox",
    "zyxel_usg",
)
FILES = {f.decoder.name: f for f in BUILTIN_FILES}


# Samples whose header hides the program: a sender's configured vendor selects the file.
BY_VENDOR = {("watchguard_firebox", 1)}


def routed(line: str, hint: str | None = None) -> dict[str, Any]:
    msg = decode_syslog(line.encode(), NOW)
    fields = syslog_fields(msg, "192.0.2.1")
    fields["decoder"] = REGISTRY.decode(msg, fields, REGISTRY.by_name[hint] if hint else None)
    return fields


SAMPLES = [(name, i, t) for name in VENDOR_FILES for i, t in enumerate(FILES[name].tests)]


def test_every_vendor_file_is_shipped() -> None:
    assert set(VENDOR_FILES) <= set(FILES)


@pytest.mark.parametrize(("name", "i", "sample"), SAMPLES, ids=[f"{n}-{i}" for n, i, _ in SAMPLES])
def test_each_sample_routes_through_the_registry_to_its_file(
    name: str, i: int, sample: dict[str, Any]
) -> None:
    f = routed(sample["line"], name if (name, i) in BY_VENDOR else None)
    if not sample.get("claims", True):
        assert f["decoder"] != name
        return
    assert f["decoder"] == name
    for key, value in (sample.get("expect") or {}).items():
        assert f.get(key) == value, key
    for key in sample.get("absent") or ():
        assert key not in f


@pytest.mark.parametrize(
    ("line", "decoder"),
    [
        # FTD: the ASA-engine ids stay cisco_asa's
        ('<164>2019-08-15T16:05:37Z firepower %FTD-4-106023: Deny tcp src outside:203.0.113.9/'
         '40022 dst inside:192.0.2.10/22 by access-group "outside_in" [0x0, 0x0]', "cisco_asa"),
        ("<166>%FTD-1-430003: AccessControlRuleAction: Block, SrcIP: 10.0.1.20, DstIP: "
         "10.0.100.30, SrcPort: 41544, DstPort: 8000, Protocol: tcp", "cisco_ftd_connection"),
        # netfilter keeps the kernel LOG lines without the EdgeOS rule shape
        ("<4>Nov 29 11:59:00 fw1 kernel: [4475569.016000] DROP-IN: IN=eth0 OUT= SRC=203.0.113.9 "
         "DST=192.0.2.10 LEN=60 PROTO=TCP SPT=40022 DPT=22", "netfilter"),
        # pfSense keeps numeric trackers
        ("<134>Nov 29 11:59:00 filterlog[123]: 5,,,1000000103,igb0,match,block,in,4,0x0,,64,12345,"
         "0,none,6,tcp,60,203.0.113.9,192.0.2.10,40022,22,0,S,1234,,64240,,mss",
         "pfsense_filterlog"),
        # OpenSSH on a Junos box stays linux_auth's
        ("<38>Nov 29 11:59:00 ex1 sshd[4711]: Failed password for root from 203.0.113.9 port "
         "40022 ssh2", "linux_auth"),
        # an unrelated key=value line still reaches the generic layer
        ("<134>Nov 29 11:59:00 app1 svc: user=alice action=login result=ok", "kv"),
        # AOS-CX: the login events are aruba_cx_auth's, the rest of the event log aruba_cx's
        ("2024-08-01T16:35:13.517915-04:00 6300-DIST-RDL log-proxyd[762]: Event|5209|LOG_INFO|"
         "CDTR|1|User satori logged in from 127.0.0.1 through SSH session.", "aruba_cx_auth"),
        ("2024-08-01T05:22:26.478775-04:00 6300-DIST-RDL log-proxyd[762]: Event|5211|LOG_INFO|"
         "CDTR|1|User oxidized logged out of SSH session from 127.0.0.1.", "aruba_cx"),
        # Zyxel: the firewall categories are zyxel_usg's, other ZLD categories stay generic
        ('<134>Nov 29 11:59:00 usg60 src="192.168.1.33:0" dst="192.168.1.1:443" msg="Administrator '
         'admin from https has logged in Device" note="Account: admin" user="admin" '
         'devID="0023f8000002" cat="User"', "kv"),
    ],
)  # fmt: skip
def test_shared_programs_and_prefixes_still_go_where_they_went(line: str, decoder: str) -> None:
    assert routed(line)["decoder"] == decoder


def test_a_link_flap_meets_the_device_rules_fields() -> None:
    down = routed("<28>Nov 29 11:59:00 ex1 mib2d[2905]: SNMP_TRAP_LINK_DOWN: ifIndex 527, "
                  "ifAdminStatus up(1), ifOperStatus down(2), ifName ge-0/0/1")  # fmt: skip
    up = routed("<28>Nov 29 11:59:30 ex1 mib2d[2905]: SNMP_TRAP_LINK_UP: ifIndex 527, "
                "ifAdminStatus up(1), ifOperStatus up(1), ifName ge-0/0/1")  # fmt: skip
    assert (down["event.action"], up["event.action"]) == ("interface_down", "interface_up")
    assert down["observer.ingress.interface.name"] == up["observer.ingress.interface.name"]
    down["event.category"].append("x")  # a constant list field is the event's own copy
    assert up["event.category"] == ["network"]
