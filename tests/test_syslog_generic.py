"""Lines from devices no decoder names keep their key fields: the names vendors commonly use
map to ECS, validated, whatever the shape (key=value, JSON, RFC 5424 structured data or the
``[key:"value"; ...]`` blocks some devices write there)."""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any

import pytest

from appliance.event import Event
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import device_time
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.protocols.syslog.vendors.generic import bracket_pairs, split_address
from tests.ruletools import fired, run

pytestmark = pytest.mark.usefixtures("backend")

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def decode(line: bytes) -> dict[str, Any]:
    msg = decode_syslog(line, NOW)
    fields = syslog_fields(msg, "192.0.2.1")
    fields["decoder"] = REGISTRY.decode(msg, fields)
    fields["@device_time"] = device_time(msg)
    return fields


def pick(f: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: f.get(k) for k in keys}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("203.0.113.7", ("203.0.113.7", None, None)),
        ("203.0.113.7:51234", ("203.0.113.7", 51234, None)),
        ("203.0.113.7:51234:X1", ("203.0.113.7", 51234, "X1")),
        ("[2001:db8::1]:443", ("2001:db8::1", 443, None)),
        ("2001:db8::1", ("2001:db8::1", None, None)),
        ("999.1.1.1:80", (None, None, None)),
        ("203.0.113.7:99999", ("203.0.113.7", None, None)),
    ],
)
def test_address_forms_split_into_ip_port_and_interface(text: str, want: tuple) -> None:
    assert split_address(text) == want


def test_address_with_port_and_interface_fills_three_fields() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: id=fw src=203.0.113.7:51234:X1 "
               b"dst=198.51.100.2:445:X0 action=drop")  # fmt: skip
    assert pick(f, "source.ip", "source.port", "observer.ingress.interface.name",
                "destination.port", "observer.egress.interface.name") == {
        "source.ip": "203.0.113.7", "source.port": 51234,
        "observer.ingress.interface.name": "X1", "destination.port": 445,
        "observer.egress.interface.name": "X0"}  # fmt: skip


def test_common_key_spellings_map_to_ecs() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: SrcAddr=203.0.113.7 dest_ip=198.51.100.2 "
               b"sport=5000 dst-port=53 usr=alice proto=17 sent=120 rcvd=480")  # fmt: skip
    assert pick(f, "source.ip", "destination.ip", "source.port", "destination.port",
                "user.name", "network.transport", "source.bytes", "destination.bytes") == {
        "source.ip": "203.0.113.7", "destination.ip": "198.51.100.2", "source.port": 5000,
        "destination.port": 53, "user.name": "alice", "network.transport": "udp",
        "source.bytes": 120, "destination.bytes": 480}  # fmt: skip


def test_protocol_with_port_gives_transport_and_destination_port() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: src=203.0.113.7 dst=198.51.100.2 proto=tcp/443")
    assert pick(f, "network.transport", "destination.port") == {
        "network.transport": "tcp",
        "destination.port": 443,
    }


def test_single_quoted_values_keep_their_spaces_and_escapes() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: user='jane doe' rule='allow \\'web\\'' "
               b"src=203.0.113.7")  # fmt: skip
    assert (f["user.name"], f["rule.name"]) == ("jane doe", "allow 'web'")


def test_a_field_typed_ip_never_holds_a_non_address() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: src=laptop-7 dst=10.0.0.300 user=x")
    assert "source.ip" not in f and "destination.ip" not in f
    assert f["kv.src"] == "laptop-7"


def test_verdict_word_on_a_line_with_addresses_is_a_firewall_decision() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: src=203.0.113.7 dst=198.51.100.2 dpt=445 "
               b"fw_action=Blocked")  # fmt: skip
    assert pick(
        f, "event.category", "event.type", "event.action", "event.outcome", "observer.type"
    ) == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "observer.type": "firewall",
    }


def test_status_is_an_action_only_when_it_is_a_verdict_word() -> None:
    assert decode(b"<134>Nov 29 11:59:00 gw app: src=203.0.113.7 status=200 x=1").get(
        "event.action") is None  # fmt: skip
    f = decode(b"<134>Nov 29 11:59:00 gw app: src=203.0.113.7 status=Deny x=1")
    assert f["event.action"] == "deny"


def test_device_time_from_date_and_time_keys_is_the_event_time() -> None:
    f = decode(b"<134>date=2026-11-29 time=11:58:57 src=203.0.113.7 action=allow")  # no stamp
    assert f["@device_time"] == datetime(2026, 11, 29, 11, 58, 57).timestamp()


def test_device_time_with_an_offset_is_read_in_that_offset() -> None:
    f = decode(b'<134>app: timestamp="2026-11-29T11:58:57+01:00" src=203.0.113.7 dst=x')
    assert f["@device_time"] == calendar.timegm((2026, 11, 29, 10, 58, 57))


def test_rfc5424_bracket_pairs_where_structured_data_belongs_become_fields() -> None:
    f = decode(b'<134>1 2026-11-29T11:59:00Z fw01 filter - - [src:"203.0.113.7"; '
               b'dst:"198.51.100.2"; dport:"22"; action:"deny"] session denied')  # fmt: skip
    assert pick(f, "decoder", "source.ip", "destination.ip", "destination.port",
                "event.outcome") == {
        "decoder": "kv_brackets", "source.ip": "203.0.113.7", "destination.ip": "198.51.100.2",
        "destination.port": 22, "event.outcome": "failure"}  # fmt: skip


def test_bracket_blocks_without_a_quote_hold_no_pairs_and_the_next_block_is_still_read() -> None:
    assert bracket_pairs("[ 35958.123456] eth0: link up") == []
    assert bracket_pairs('[ 12.5] [user:"bob"; src:"203.0.113.7"] x') == [
        ("user", "bob"),
        ("src", "203.0.113.7"),
    ]
    f = decode(b"<6>Nov 29 11:59:00 srv1 kernel: [ 35958.123456] eth0: link up, 1000Mbps")
    assert f["decoder"] == ""  # netfilter, kv_brackets and the rest leave it


def test_rfc5424_epoch_timestamp_with_bracket_pairs() -> None:
    f = decode(b'<134>1 1764417540 fw01 filter - - [user:"bob"; src:"203.0.113.7"] login')
    assert (f["@device_time"], f["user.name"]) == (1764417540.0, "bob")


def test_rfc5424_structured_data_params_with_common_names_fill_ecs() -> None:
    f = decode(b'<134>1 2026-11-29T11:59:00Z fw01 app - - [meta@32473 src="203.0.113.7" '
               b'dst_port="3389" user="eve"] rdp attempt')  # fmt: skip
    assert pick(f, "decoder", "source.ip", "destination.port", "user.name") == {
        "decoder": "structured_data", "source.ip": "203.0.113.7", "destination.port": 3389,
        "user.name": "eve"}  # fmt: skip


def test_json_with_common_nested_names_maps_to_ecs() -> None:
    f = decode(b'<134>Nov 29 11:59:00 gw app: {"client":{"ip":"203.0.113.7"},'
               b'"user":{"name":"zoe"},"dst_port":"8443","action":"allowed"}')  # fmt: skip
    assert pick(f, "user.name", "destination.port", "event.action") == {
        "user.name": "zoe",
        "destination.port": 8443,
        "event.action": "allow",
    }


def test_free_text_with_one_equals_sign_stays_generic() -> None:
    f = decode(b"<134>Nov 29 11:59:00 gw app: the value x=1 was seen")
    assert f["decoder"] == ""


def test_deny_lines_from_an_unnamed_firewall_raise_a_port_scan() -> None:
    """31 drops to port 445 across hosts from a device no decoder names (issue 14): the same
    firewall rules that see netfilter lines see these."""
    events = []
    for i in range(31):
        f = decode(b"<134>Nov 29 11:59:%02d edge gw: src=203.0.113.9 dst=10.0.0.%d "
                   b"proto=tcp dpt=445 action=drop" % (i % 60, i + 1))  # fmt: skip
        events.append(Event(NOW + i, NOW + i, "syslog", f))
    assert "firewall_horizontal_port_scan" in fired(run(events))
