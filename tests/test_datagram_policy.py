"""One datagram policy: the three UDP sources share their defaults, keys and drop reasons."""

from __future__ import annotations

import dataclasses

from appliance.config import NetflowSource, SnmpSource, SyslogSource
from appliance.sources.policy import DEFAULT_ALLOWED, DROP_REASONS, AllowList

DATAGRAM_SOURCES = (SyslogSource, SnmpSource, NetflowSource)


def test_every_datagram_source_defaults_to_the_same_allow_list() -> None:
    for cls in DATAGRAM_SOURCES:
        assert tuple(cls().allowed) == DEFAULT_ALLOWED, cls.__name__


def test_every_datagram_source_takes_the_same_rate_limit_keys() -> None:
    for cls in DATAGRAM_SOURCES:
        names = {f.name for f in dataclasses.fields(cls)}
        assert {"allowed", "rate_limit", "rate_burst", "max_senders"} <= names, cls.__name__


def test_every_datagram_source_is_read_with_the_same_buffer_keys() -> None:
    for cls in DATAGRAM_SOURCES:
        names = {f.name for f in dataclasses.fields(cls)}
        assert {"rcvbuf_bytes", "backlog_bytes"} <= names, cls.__name__
        assert cls().backlog_bytes == 64 * 1024 * 1024, cls.__name__


def test_the_default_allow_list_takes_private_and_loopback_senders_only() -> None:
    allowed = AllowList(DEFAULT_ALLOWED)
    for ip in ("10.1.2.3", "172.16.0.9", "192.168.1.1", "127.0.0.1", "::1", "fe80::1"):
        assert ip in allowed, ip
    for ip in ("203.0.113.7", "8.8.8.8", "2001:db8::1", "not-an-ip"):
        assert ip not in allowed, ip


def test_an_ipv4_mapped_sender_is_judged_by_its_ipv4_address() -> None:
    assert "::ffff:10.0.0.1" in AllowList(["10.0.0.0/8"])
    assert "::ffff:203.0.113.7" not in AllowList(["10.0.0.0/8"])


def test_the_start_up_line_names_the_effective_list() -> None:
    assert AllowList(["10.0.0.0/8"]).describe() == "10.0.0.0/8"
    assert AllowList([]).describe() == "nobody (allowed = [])"
    assert AllowList(["0.0.0.0/0", "::/0"]).describe() == "any address"


def test_every_shared_drop_reason_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for reason in DROP_REASONS:
        assert f"`{reason}`" in readme, reason
