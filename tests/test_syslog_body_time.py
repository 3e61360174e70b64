"""A line whose header has no time takes the device's time from its body (FortiGate's
``date=``/``time=``, read in the sender's zone, or its ``eventtime``): the native batch intake
gives each event the reference's timestamp without a message object per line, remembering a
body time's answer for the lines that share it."""

from __future__ import annotations

import calendar
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.event import Event
from appliance.metrics import Registry
from appliance.protocols.syslog import decode
from appliance.sources.syslog_intake import SyslogIntake

pytestmark = pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")

NOW = calendar.timegm((2026, 11, 29, 18, 0, 0))
ZONES = {"127.0.0.1": "America/New_York", "127.0.0.2": "Asia/Kolkata"}
BODY_TIMES_MAX = 1024  # the batch's memo of body times (python_batch.rs)


def fortigate(clock: str, extra: str = "") -> bytes:
    return (
        f'<189>date=2026-11-29 time={clock} devname="fg1" devid="FG100E" logid="0000000013" '
        f'type="traffic" subtype="forward" level="notice" srcip=10.1.100.11 srcport=40000 '
        f'dstip=172.16.200.55 dstport=80 proto=6 action="deny" policyid=1{extra}'
    ).encode()


def intake() -> SyslogIntake:
    senders = [SyslogSender(networks=[f"{ip}/32"], timezone=tz) for ip, tz in ZONES.items()]
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["127.0.0.0/8"], rate_limit=0.0)
    return SyslogIntake(cfg, senders, Registry(), "udp")


def counters() -> tuple[object, object]:
    metrics = Registry()
    return (
        metrics.counter("dropped", "", ["source", "reason"]),
        metrics.counter("truncated", "", ["source"]),
    )


def batch_events(items: list[tuple[bytes, str]]) -> list[Event]:
    source, (dropped, truncated) = intake(), counters()
    batch = [(line, (ip, 514)) for line, ip in items]
    out = source.datagrams(batch, NOW, 8192, 8192, dropped, truncated)
    assert len(out) == len(items)
    return out


def reference_events(
    monkeypatch: pytest.MonkeyPatch, items: list[tuple[bytes, str]]
) -> list[Event]:
    source, (dropped, truncated) = intake(), counters()
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        got = [source.datagram(line, ip, NOW, 8192, dropped, truncated) for line, ip in items]
    assert all(e is not None for e in got)
    return [e for e in got if e is not None]


def local(clock: str, zone: str) -> float:
    naive = datetime.fromisoformat(f"2026-11-29T{clock}")
    return naive.replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_a_body_time_is_read_in_each_senders_zone() -> None:
    items = [(fortigate("10:00:00"), ip) for ip in ZONES for _ in range(3)]
    got = [e.timestamp for e in batch_events(items)]
    assert got == [local("10:00:00", ZONES[ip]) for _, ip in items]


def test_body_times_are_the_references_across_seconds_and_zones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # more distinct (second, zone) pairs than the memo holds, each second on several lines
    clocks = [f"{h:02d}:{m:02d}:{s:02d}" for h in (9, 10) for m in range(10) for s in range(60)]
    items = [(fortigate(c), ip) for c in clocks for ip in ZONES for _ in range(2)]
    assert len(set(items)) > BODY_TIMES_MAX
    got = [e.timestamp for e in batch_events(items)]
    want = [e.timestamp for e in reference_events(monkeypatch, items)]
    assert got == want


@pytest.mark.parametrize(
    "eventtime", ["1764410400", "1764410400123456789"], ids=["seconds", "nanoseconds"]
)
def test_an_epoch_in_the_body_is_the_references_whatever_the_zone(
    monkeypatch: pytest.MonkeyPatch, eventtime: str
) -> None:
    items = [(fortigate("10:00:00", f" eventtime={eventtime}"), ip) for ip in ZONES]
    got = [e.timestamp for e in batch_events(items)]
    want = [e.timestamp for e in reference_events(monkeypatch, items)]
    assert got == want
    assert got[0] == got[1] == pytest.approx(1764410400.0, abs=1.0)


def test_a_python_decoders_body_time_is_read_in_each_senders_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the generic key=value decoder is Python's: its time object is made for its message
    line = b"<13>date=2026-11-29 time=10:00:00 user=a action=login src=192.0.2.4 dst=192.0.2.5"
    items = [(line, ip) for ip in ZONES for _ in range(2)]
    got = batch_events(items)
    assert {e.fields["event.dataset"] for e in got} == {"kv"}
    assert [e.timestamp for e in got] == [local("10:00:00", ZONES[ip]) for _, ip in items]
    assert [e.timestamp for e in got] == [e.timestamp for e in reference_events(monkeypatch, items)]
