"""Vendor decoding, sender profiles and rate limits through real listeners and the API."""

from __future__ import annotations

import pytest

from appliance import dataplane
from appliance.protocols.syslog.decode import header_templates
from tests.test_syslog_udp import send_udp

pytestmark = pytest.mark.usefixtures("backend")


async def test_udp_sshd_failure_is_stored_with_contract_fields(start_appliance) -> None:
    run = await start_appliance()
    send_udp(
        run.source().address,
        b"<38>Nov 29 10:00:00 web1 sshd[9]: Failed password for root "
        b"from 203.0.113.5 port 4242 ssh2",
    )
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["event"]["category"] == ["authentication"]
    assert (ev["event"]["action"], ev["event"]["outcome"]) == ("ssh_login", "failure")
    assert ev["event"]["dataset"] == "linux_auth"
    assert ev["user"]["name"] == "root"
    assert ev["source"] == {"ip": "203.0.113.5", "port": 4242}
    text = await run.metrics()
    assert 'appliance_syslog_vendor_decoded_total{decoder="linux_auth"} 1' in text


async def test_sender_profile_from_config_tags_events(start_appliance) -> None:
    run = await start_appliance(
        sources={
            "syslog": [{"listen": "127.0.0.1:0"}],
            "syslog_senders": [
                {
                    "networks": ["127.0.0.0/8"],
                    "site": "lab",
                    "device_name": "gw1",
                    "timezone": "America/New_York",
                    "vendor": "netfilter",
                }
            ],
        }
    )
    send_udp(
        run.source().address,
        b"<4>Nov 29 05:00:00 gw kernel: DROP IN=eth0 OUT= "
        b"SRC=198.51.100.1 DST=10.0.0.1 PROTO=TCP SPT=1 DPT=2",
    )
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["observer"]["name"] == "gw1"
    assert ev["labels"]["site"] == "lab"
    assert ev["event"]["timezone"] == "America/New_York"
    assert ev["@timestamp"].endswith("T10:00:00.000000Z")  # 05:00 in New York (EST)
    assert ev["event"]["action"] == "drop"
    assert 'appliance_syslog_clock_skew_seconds{sender="127.0.0.1"}' in await run.metrics()


async def test_udp_rate_limit_counts_the_excess(start_appliance) -> None:
    run = await start_appliance(
        sources={"syslog": [{"listen": "127.0.0.1:0", "rate_limit": 0.001, "rate_burst": 3}]}
    )
    send_udp(run.source().address, *[b"<13>app: m%d" % i for i in range(10)])
    await run.wait_for(lambda: run.app.pipeline.dropped.value("syslog-udp", "rate_limited") == 7)
    await run.wait_stored(3)
    assert run.app.pipeline.received.value("syslog-udp") == 10


async def test_reload_applies_changed_sender_profiles(start_appliance, tmp_path) -> None:
    from appliance.config import parse_config
    from tests.conftest import make_config

    sections = {
        "sources": {
            "syslog": [{"listen": "127.0.0.1:0"}],
            "syslog_senders": [{"networks": ["127.0.0.1/32"], "site": "old"}],
        }
    }
    run = await start_appliance(**sections)
    sections["sources"]["syslog_senders"][0]["site"] = "new"
    await run.app.reload(parse_config(make_config(tmp_path, **sections), base_dir=tmp_path))
    send_udp(run.source().address, b"<13>Nov 29 10:00:00 h app: after reload")
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["labels"]["site"] == "new"


async def test_listener_limits_are_visible_in_metrics(start_appliance) -> None:
    run = await start_appliance(
        sources={
            "syslog": [
                {"listen": "127.0.0.1:0", "name": "u", "rate_limit": 500.0},
                {
                    "protocol": "tcp",
                    "listen": "127.0.0.1:0",
                    "name": "t",
                    "max_connections": 77,
                    "max_connections_per_ip": 7,
                },
            ]
        }
    )
    text = await run.metrics()
    assert 'appliance_syslog_limit{source="u",limit="rate_limit"} 500' in text
    assert 'appliance_syslog_limit{source="t",limit="max_connections"} 77' in text
    assert 'appliance_syslog_limit{source="t",limit="frame_timeout"} 30' in text


async def test_native_panics_and_header_templates_are_visible_in_metrics(start_appliance) -> None:
    run = await start_appliance()
    send_udp(run.source().address, b"<13>Nov 29 10:00:00 h app: one", b"<14>1 - h a - - - two")
    await run.wait_stored(2)
    text = await run.metrics()
    held, untemplated = header_templates()
    assert f"appliance_native_panics_total {dataplane.native_panics()}\n" in text
    assert f"appliance_syslog_header_templates {held}\n" in text
    assert f"appliance_syslog_header_untemplated_total {untemplated}\n" in text
    past_bound = dataplane.records_past_bound()
    assert f"appliance_syslog_fields_records_past_bound_total {past_bound}\n" in text
    assert held >= (2 if dataplane.native is not None else 0)


async def test_datagrams_queued_in_the_kernel_at_stop_are_stored(start_appliance) -> None:
    run = await start_appliance()
    # Sent while the loop is blocked: all 3000 wait in the socket when stop begins.
    send_udp(
        run.source().address, *[b"<13>Nov 29 10:00:00 h app: queued %d" % i for i in range(3000)]
    )
    app = run.app
    await app.stop()
    p = app.pipeline
    assert p.received.value("syslog-udp") == 3000
    assert p.stored.total() + p.dropped.total() == 3000
    assert p.stored.total() == 3000
