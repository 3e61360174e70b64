"""The NetFlow source end to end: real UDP on loopback, real SQLite, the HTTP API."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import struct
import threading
import time
from typing import Any

import pytest

from appliance import dataplane
from appliance.event import Event
from appliance.flows import path as path_module
from appliance.flows import store as flowstore
from appliance.protocols.netflow.native import NativeNetflowDecoder
from appliance.sources.udp import NativeUdpReader, UdpBatchReader
from tests.conftest import TOKEN
from tests.netflow_packets import ipfix, ipfix_flows, set_, template_record, v5, v5_record, v9_flows

LOOPBACK = ["127.0.0.0/8"]


def _netflow(**extra: Any) -> dict[str, Any]:
    return {"netflow": [{"listen": "127.0.0.1:0", "allowed": LOOPBACK, **extra}]}


def _send(addr: tuple[str, int], *datagrams: bytes, source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for d in datagrams:
            s.sendto(d, addr)


INT64_MAX = (1 << 63) - 1


def _huge_flows(n: int = 1) -> bytes:
    """IPFIX: ``n`` flows 10.0.0.1 → 10.0.0.2 of 2**64 - 1 bytes (a valid unsigned64)."""
    template = set_(2, template_record(256, [(8, 4), (12, 4), (1, 8)]))
    record = bytes.fromhex("0a000001 0a000002") + struct.pack(">Q", (1 << 64) - 1)
    return ipfix([template, set_(256, record * n)])


def _processed(run: Any) -> float:
    return run.app.flows.processed.total()


async def _each_minute_closing_at_once(start_appliance: Any) -> Any:
    """A NetFlow appliance whose flow path's clock runs two minutes ahead: each batch's
    minute closes as the batch is processed, and its rows go to the store at once."""
    run = await start_appliance(sources=_netflow())
    run.app.flows.clock = lambda: time.time() + 120
    return run


async def test_one_port_accepts_v5_v9_and_ipfix(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    rec = v5_record("10.9.0.1", "10.9.0.2", 5555, 53, 17, 80, 1)
    _send(run.source("netflow").address, v5([rec, rec]), v9_flows(3), ipfix_flows(4))
    await run.wait_for(lambda: _processed(run) >= 9)
    await run.wait_for(lambda: run.app.flows.stored.total() >= 9)
    body = await run.get_json("/api/v1/flows", limit=50)
    assert body["count"] == 9
    versions = sorted(f["netflow"]["exporter"]["version"] for f in body["flows"])
    assert versions == [5, 5, 9, 9, 9, 10, 10, 10, 10]
    for one in body["flows"]:
        assert one["event"]["module"] == "netflow" and one["observer"]["ip"] == "127.0.0.1"
    v5_flow = next(f for f in body["flows"] if f["netflow"]["exporter"]["version"] == 5)
    assert v5_flow["event"]["start"] < v5_flow["event"]["end"]
    assert v5_flow["event"]["end"].endswith("Z")


async def test_healthz_counts_flows_for_netflow_sources(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    _send(run.source("netflow").address, v9_flows(3))
    await run.wait_for(lambda: _processed(run) >= 3)
    health = await run.get_json("/healthz", token=None)
    assert health["sources"]["netflow"] == {"received": 3, "dropped": 0}


async def test_flows_api_filters_like_events(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    rec = v5_record("10.9.0.1", "10.9.0.2", 5555, 53, 17, 80, 1)
    _send(run.source("netflow").address, v5([rec]), v9_flows(3))
    await run.wait_for(lambda: run.app.flows.stored.total() >= 4)
    udp = await run.get_json("/api/v1/flows", **{"network.transport": "udp"})
    assert [f["source"]["ip"] for f in udp["flows"]] == ["10.9.0.1"]
    by_src = await run.get_json("/api/v1/flows", **{"source.ip": "10.0.1.1"})
    assert by_src["count"] == 1 and by_src["flows"][0]["destination"]["port"] == 443
    by_port = await run.get_json("/api/v1/flows", port="53")
    assert by_port["count"] == 1
    page = await run.get_json("/api/v1/flows", limit=2)
    rest = await run.get_json("/api/v1/flows", limit=10, cursor=page["next_cursor"])
    assert page["count"] + rest["count"] == 4


async def test_exporters_outside_the_allow_list_are_refused(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow(allowed=["192.0.2.0/24"]))
    _send(run.source("netflow").address, v9_flows(3))
    src = run.source("netflow")
    await run.wait_for(lambda: src.rejected.value("netflow", "not_allowed") == 1)
    assert _processed(run) == 0


async def test_allow_list_defaults_to_the_private_and_loopback_ranges(
    start_appliance: Any,
) -> None:
    run = await start_appliance(sources={"netflow": [{"listen": "127.0.0.1:0"}]})
    _send(run.source("netflow").address, v9_flows(2))
    await run.wait_for(lambda: _processed(run) >= 2)


async def test_an_empty_allow_list_refuses_every_exporter(start_appliance: Any) -> None:
    run = await start_appliance(sources={"netflow": [{"listen": "127.0.0.1:0", "allowed": []}]})
    src = run.source("netflow")
    _send(src.address, v9_flows(1))
    await run.wait_for(lambda: src.rejected.value("netflow", "not_allowed") == 1)


async def test_an_exporter_past_its_rate_limit_has_datagrams_rejected(
    start_appliance: Any,
) -> None:
    run = await start_appliance(sources=_netflow(rate_limit=0.001, rate_burst=2))
    src = run.source("netflow")
    _send(src.address, v9_flows(1), v9_flows(1), v9_flows(1), v9_flows(1))
    await run.wait_for(lambda: src.rejected.value("netflow", "rate_limited") == 2)


async def test_top_talkers_include_flows_whose_minute_closed_as_they_were_processed(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each batch's minute closes as it is processed, and its rows go to the store while the
    # flows are counted; a slow disk holds them there.
    run = await _each_minute_closing_at_once(start_appliance)
    write = flowstore.insert_rollups

    async def slow_write(store: Any, *args: Any) -> None:
        await asyncio.sleep(0.5)
        await write(store, *args)

    monkeypatch.setattr(flowstore, "insert_rollups", slow_write)
    _send(run.source("netflow").address, v9_flows(5))
    await run.wait_for(lambda: _processed(run) >= 5)
    assert run.app.flows.rollup.open_rows() == []
    top = await run.get_json("/api/v1/flows/top", by="source.ip", limit=2)
    assert [t["key"] for t in top["top"]] == ["10.0.4.1", "10.0.3.1"]


def _unwritten(run: Any) -> float:
    """The ``flow_rollup_rows_unwritten`` gauge as ``/metrics`` reads it."""
    gauge = run.app.metrics.get("flow_rollup_rows_unwritten")
    return dict(gauge.samples())[()]


def _held_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Rollup writes that wait for ``release`` before they write; ``begun`` is set when one
    waits (its rows taken from the open minutes)."""
    begun, release = asyncio.Event(), asyncio.Event()
    write = flowstore.insert_rollups

    async def held(store: Any, *args: Any) -> None:
        begun.set()
        await release.wait()
        await write(store, *args)

    monkeypatch.setattr(flowstore, "insert_rollups", held)
    return begun, release


async def _top_sources(run: Any) -> list[tuple[str, int]]:
    top = await run.get_json("/api/v1/flows/top", by="source.ip", limit=10)
    return [(t["key"], t["bytes"]) for t in top["top"]]


FIVE_SOURCES = [("10.0.4.1", 1004), ("10.0.3.1", 1003), ("10.0.2.1", 1002),
                ("10.0.1.1", 1001), ("10.0.0.1", 1000)]  # fmt: skip


async def test_top_talkers_include_minutes_being_written(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _each_minute_closing_at_once(start_appliance)
    begun, release = _held_writes(monkeypatch)
    _send(run.source("netflow").address, v9_flows(5))
    await asyncio.wait_for(begun.wait(), 10)
    assert run.app.flows.rollup.open_rows() == []  # neither open nor stored: being written
    assert await _top_sources(run) == FIVE_SOURCES
    release.set()
    await run.wait_for(lambda: _processed(run) >= 5)
    assert await _top_sources(run) == FIVE_SOURCES  # stored now, and counted once


async def test_top_counts_a_write_committed_during_its_query_once(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _each_minute_closing_at_once(start_appliance)
    committed, resume = asyncio.Event(), asyncio.Event()
    write, query = flowstore.insert_rollups, flowstore.query_top

    async def write_then_hold(store: Any, *args: Any) -> None:
        await write(store, *args)  # committed: the rows are in the store...
        committed.set()
        await resume.wait()  # ...and still pending on the flow path

    async def query_after_the_commit(store: Any, **kw: Any) -> Any:
        await asyncio.wait_for(committed.wait(), 10)
        return await query(store, **kw)

    monkeypatch.setattr(flowstore, "insert_rollups", write_then_hold)
    monkeypatch.setattr(flowstore, "query_top", query_after_the_commit)
    _send(run.source("netflow").address, v9_flows(5))
    assert await _top_sources(run) == FIVE_SOURCES
    resume.set()
    await run.wait_for(lambda: _processed(run) >= 5)


async def test_a_failed_rollup_write_is_retried_with_the_next(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _each_minute_closing_at_once(start_appliance)
    write = flowstore.insert_rollups
    failures = [sqlite3.OperationalError("database or disk is full")]

    async def fails_once(store: Any, *args: Any) -> None:
        if failures:
            raise failures.pop()
        await write(store, *args)

    monkeypatch.setattr(flowstore, "insert_rollups", fails_once)
    addr = run.source("netflow").address
    _send(addr, v9_flows(5))
    await run.wait_for(lambda: _processed(run) >= 5)
    assert _unwritten(run) > 0
    assert await _top_sources(run) == FIVE_SOURCES  # kept for the next write, still counted
    _send(addr, v9_flows(5, seq=1))
    await run.wait_for(lambda: _processed(run) >= 10)
    assert _unwritten(run) == 0
    await run.app.stop()
    again = await start_appliance(sources=_netflow())
    top = await _top_sources(again)
    assert top == [(key, 2 * b) for key, b in FIVE_SOURCES]


async def test_rollup_rows_past_the_retry_bound_are_counted_as_dropped(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await _each_minute_closing_at_once(start_appliance)

    async def always_fails(store: Any, *args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(flowstore, "insert_rollups", always_fails)
    monkeypatch.setattr(path_module, "MAX_UNWRITTEN_ROWS", 3)
    _send(run.source("netflow").address, v9_flows(5))
    await run.wait_for(lambda: _processed(run) >= 5)
    flows = run.app.flows
    assert _unwritten(run) == 3
    assert flows.rollup_rows_dropped.total() > 0
    assert flows.rollup_rows.total() == 0


async def test_top_talkers_by_bytes_include_the_open_minute(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    _send(run.source("netflow").address, v9_flows(5))  # 10.0.i.1 sends 1000+i bytes
    await run.wait_for(lambda: _processed(run) >= 5)
    top = await run.get_json("/api/v1/flows/top", by="source.ip", limit=2)
    assert [t["key"] for t in top["top"]] == ["10.0.4.1", "10.0.3.1"]
    assert top["top"][0]["bytes"] == 1004
    assert top["other"] == {"bytes": 1000 + 1001 + 1002, "packets": 30, "flows": 3}
    ports = await run.get_json("/api/v1/flows/top", by="destination.port")
    assert ports["top"] == [{"key": "443/tcp", "bytes": 5010, "packets": 50, "flows": 5}]


async def test_rollups_are_written_at_stop_and_served_from_sqlite(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    _send(run.source("netflow").address, v9_flows(3))
    await run.wait_for(lambda: _processed(run) >= 3)
    await run.app.stop()
    again = await start_appliance(sources=_netflow())
    top = await again.get_json("/api/v1/flows/top", by="destination.ip")
    assert top["top"] == [{"key": "10.1.0.2", "bytes": 3003, "packets": 30, "flows": 3}]


async def test_templates_survive_a_restart(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    _send(run.source("netflow").address, v9_flows(1))
    await run.wait_for(lambda: _processed(run) >= 1)
    await run.app.stop()
    again = await start_appliance(sources=_netflow())
    _send(again.source("netflow").address, v9_flows(4, with_template=False, seq=1))
    await again.wait_for(lambda: _processed(again) >= 4)
    assert again.source("netflow").decoder.counts.get(("data", "no_template"), 0) == 0


async def test_raw_storage_cap_counts_what_it_does_not_keep(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow(), flows={"raw_max_per_second": 10})
    _send(run.source("netflow").address, *(v9_flows(20, seq=i) for i in range(3)))
    await run.wait_for(lambda: _processed(run) >= 60)
    flows = run.app.flows
    assert flows.stored.total() + flows.not_stored.value("raw_rate_limit") == 60
    assert flows.stored.total() <= 20  # one second of burst plus what refilled meanwhile
    assert flows.received.value("netflow") == 60


async def test_pipeline_stages_see_every_flow(start_appliance: Any) -> None:
    seen: list[Event] = []

    class Recorder:
        name = "recorder"

        async def process(self, events: list[Event], now: float) -> None:
            seen.extend(events)

    run = await start_appliance(sources=_netflow())
    run.app.pipeline.after_store.append(Recorder())
    _send(run.source("netflow").address, v9_flows(7), ipfix_flows(5))
    await run.wait_for(lambda: len(seen) >= 12)
    assert {e.module for e in seen} == {"netflow"}
    assert all(e.fields["destination.port"] == 443 for e in seen)


async def test_bad_datagrams_are_counted_and_the_listener_keeps_going(
    start_appliance: Any,
) -> None:
    run = await start_appliance(sources=_netflow())
    addr = run.source("netflow").address
    bad = [b"", b"\x00\x05", v5([], count=0), b"\x00\x0a" + b"\xff" * 30, v9_flows(2)[:30]]
    _send(addr, *bad, v9_flows(2, seq=1))
    await run.wait_for(lambda: _processed(run) >= 2)
    text = await run.metrics()
    assert 'appliance_netflow_errors_total{source="netflow",reason="v5_count"} 1' in text
    assert 'appliance_netflow_errors_total{source="netflow",reason="length_mismatch"} 1' in text
    assert 'appliance_netflow_errors_total{source="netflow",reason="set_past_end"} 1' in text
    assert "appliance_udp_socket_drops" in text


async def test_flows_api_needs_the_token_and_checks_its_parameters(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    async with run.session.get(run.api + "/api/v1/flows") as resp:
        assert resp.status == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for query in ("by=host.name", "order=size", "limit=0", "since=yesterday"):
        async with run.session.get(run.api + "/api/v1/flows/top?" + query, headers=headers) as r:
            assert r.status == 400, query
    async with run.session.get(
        run.api + "/api/v1/flows?network.transport=carrier-pigeon", headers=headers
    ) as resp:
        assert resp.status == 400


async def test_query_values_the_fuzzer_found_are_400s_not_500s(start_appliance: Any) -> None:
    """Found by ``scripts/fuzz api-params``: "²" passed ``str.isdigit()`` and then made
    ``int()`` raise, as did 5,000 digits (past ``int()``'s 4,300-digit limit); ``nan`` and
    ``inf`` were accepted as times."""
    run = await start_appliance(sources=_netflow())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for query in ("limit=%C2%B2", "limit=" + "9" * 5000, "cursor=%D9%A1", "since=nan",
                  "until=inf", "since=-1e999"):  # fmt: skip
        async with run.session.get(run.api + "/api/v1/flows?" + query, headers=headers) as r:
            assert r.status == 400, query
    async with run.session.get(run.api + "/api/v1/flows?limit=" + "0" * 30 + "5",
                               headers=headers) as r:  # fmt: skip
        assert r.status == 200


async def test_while_the_flow_path_is_busy_datagrams_wait_raw_and_none_is_lost(
    start_appliance: Any, monkeypatch: Any
) -> None:
    import asyncio

    run = await start_appliance(sources=_netflow(), flows={"batch_size": 30})
    path = run.app.flows
    gate = asyncio.Event()
    real = path._process

    async def held(*args: Any, **kw: Any) -> Any:
        await gate.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(path, "_process", held)
    src = run.source("netflow")
    _send(src.address, *(v9_flows(30, seq=i, base=i * 30) for i in range(200)))  # 6000 flows
    await run.wait_for(lambda: src.reader.pending > 100)
    # Decoded flows stop at two batches plus the slice that crossed the line (64 datagrams).
    assert len(path) <= 2 * 30 + 64 * 30
    gate.set()
    await run.wait_for(lambda: _processed(run) == 6000, timeout=30)
    assert path.dropped.total() == 0 and not src.reader.pending


async def test_the_socket_is_read_on_a_native_thread_on_the_native_backend(
    start_appliance: Any,
) -> None:
    run = await start_appliance(sources=_netflow())
    src = run.source("netflow")
    native = dataplane.native is not None  # what the backend promises, not the code's test
    assert isinstance(src.reader, NativeUdpReader if native else UdpBatchReader)
    assert isinstance(src.decoder, NativeNetflowDecoder) is native


async def test_while_the_loop_is_busy_the_native_thread_empties_the_socket(
    start_appliance: Any,
) -> None:
    """An exporter's burst leaves the kernel's buffer while the event loop is held (as a
    long correlation slice holds it), so the buffer's size no longer bounds the burst."""
    run = await start_appliance(sources=_netflow())
    src = run.source("netflow")
    if not isinstance(src.reader, NativeUdpReader):
        pytest.skip("the Python reader reads on the loop")
    _send(src.address, *(v9_flows(30, seq=i, base=i * 30) for i in range(200)))
    deadline = time.monotonic() + 10
    while src.reader.pending < 200 and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251 - the loop is held: only the reader thread reads
    assert src.reader.pending == 200
    await run.wait_for(lambda: _processed(run) == 6000, timeout=30)
    assert src.reader.pending == 0 and src.kernel_drops() in (0, None)


async def test_the_native_rollup_counts_on_a_thread_the_flow_path_stops(
    start_appliance: Any,
) -> None:
    def counting() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("flow-rollup")]

    run = await start_appliance(sources=_netflow())
    if not run.app.flows._columns:
        pytest.skip("the Python rollup counts on the loop")
    _send(run.source("netflow").address, v9_flows(30))
    await run.wait_for(lambda: _processed(run) == 30)
    assert counting()
    await run.app.stop()
    assert not counting()
    assert run.app.flows.rollup.flows == 30


async def test_netflow_limits_and_backlog_are_visible_in_metrics(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow(max_templates=77, backlog_bytes=123_456))
    text = await run.metrics()
    assert 'appliance_netflow_limit{source="netflow",limit="max_templates"} 77' in text
    assert 'appliance_netflow_limit{source="netflow",limit="backlog_bytes"} 123456' in text
    assert 'appliance_udp_backlog_bytes{source="netflow"} 0' in text
    assert 'appliance_udp_backlog_full{source="netflow"} 0' in text


async def test_a_flow_past_int64_is_stored_clamped_and_loses_no_other_flow(
    start_appliance: Any,
) -> None:
    seen: list[Event] = []

    class Recorder:
        name = "recorder"

        async def process(self, events: list[Event], now: float) -> None:
            seen.extend(events)

    run = await start_appliance(sources=_netflow())
    run.app.pipeline.after_store.append(Recorder())
    addr = run.source("netflow").address
    _send(addr, _huge_flows())
    _send(addr, ipfix_flows(100), source="127.0.0.2")
    flows = run.app.flows
    # processed is counted last, once the batch is rolled up (after its rows are stored)
    await run.wait_for(lambda: _processed(run) >= 101)
    assert _processed(run) == 101 and flows.stored.total() == 101
    assert flows.not_stored.total() == 0
    assert flows.clamped.value("network.bytes") == 1
    assert len(seen) == 101
    assert max(e.fields["network.bytes"] for e in seen) == (1 << 64) - 1  # rules: exact
    body = await run.get_json("/api/v1/flows", **{"observer.ip": "127.0.0.1"})
    [huge] = body["flows"]
    assert huge["network"]["bytes"] == INT64_MAX
    assert huge["netflow"]["clamped"]["network"]["bytes"] == str((1 << 64) - 1)


async def test_rollup_totals_past_int64_are_written_as_the_maximum(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    _send(run.source("netflow").address, _huge_flows(2))
    await run.wait_for(lambda: _processed(run) >= 2)
    await run.app.stop()
    again = await start_appliance(sources=_netflow())
    top = await again.get_json("/api/v1/flows/top", by="source.ip")
    assert top["top"] == [{"key": "10.0.0.1", "bytes": INT64_MAX, "packets": 0, "flows": 2}]


async def test_a_flow_whose_row_cannot_be_built_costs_only_itself(start_appliance: Any) -> None:
    class Spoiler:  # a stage that leaves one flow with a protocol number that is no number
        name = "spoiler"

        async def process(self, events: list[Event], now: float) -> None:
            for ev in events:
                if ev.fields.get("source.port") == 40003:
                    ev.fields["network.iana_number"] = "tcp"

    run = await start_appliance(sources=_netflow())
    run.app.pipeline.before_store.append(Spoiler())
    _send(run.source("netflow").address, ipfix_flows(10))
    flows = run.app.flows
    await run.wait_for(lambda: _processed(run) >= 10)
    assert flows.stored.total() == 9
    assert flows.not_stored.value("invalid_record") == 1


async def test_a_flow_port_scan_raises_the_same_incident_and_rollups_on_both_backends(
    start_appliance: Any, backend: str
) -> None:
    """One source to 60 hosts on port 22 in a minute: the built-in horizontal port scan rule
    fires from the flows the extension (or the reference) decoded, and the rollups count
    them the same way."""
    run = await start_appliance(sources=_netflow())
    native_rollup = run.app.flows.rollup.__class__.__module__ == "appliance._dataplane"
    assert native_rollup == (backend == "native")
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)]
    template = set_(2, template_record(256, fields))
    records = b"".join(
        socket.inet_aton("10.5.5.5") + socket.inet_aton(f"10.6.0.{i + 1}")
        + struct.pack(">HHBQQ", 40000 + i, 22, 6, 60 + i, 1)
        for i in range(60)
    )  # fmt: skip
    _send(run.source("netflow").address, ipfix([template, set_(256, records)]))
    await run.wait_for(lambda: _processed(run) >= 60)
    found: list[dict[str, Any]] = []

    async def incident() -> bool:
        body = await run.get_json("/api/v1/incidents")
        found[:] = [i for i in body["incidents"] if i["rule"]["title"].startswith("Horizontal")]
        return bool(found)

    await run.wait_for(incident)
    assert found[0]["rule"]["title"] == "Horizontal port scan (flows)"
    top = await run.get_json("/api/v1/flows/top", by="destination.port")
    assert top["top"] == [{"key": "22/tcp", "bytes": sum(60 + i for i in range(60)),
                           "packets": 60, "flows": 60}]  # fmt: skip
    by_src = await run.get_json("/api/v1/flows/top", by="conversation", limit=100)
    assert len(by_src["top"]) == 60 and by_src["other"]["flows"] == 0


async def test_datagrams_the_socket_holds_at_stop_are_decoded(start_appliance: Any) -> None:
    run = await start_appliance(sources=_netflow())
    src = run.source("netflow")
    _send(src.address, *(v9_flows(3, seq=i, base=i * 3) for i in range(100)))
    await run.app.stop()  # before the reader ran: the datagrams are still in the socket
    assert src.datagrams.value("netflow") == 100
    assert _processed(run) == 300
