"""Baselines with an injected clock: weeks of hourly traffic simulated in milliseconds, then
the hour that doubles (an incident) beside the hour that does not; new terms after the
learning period (one incident each); bounds; the API."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.analysis.baselines import (
    BaselineStage,
    RateBaselines,
    RateSettings,
    baselines_of,
    hour_of_week,
)
from appliance.app import Appliance
from appliance.config import AnalysisSection, parse_config
from appliance.event import Event
from tests.conftest import Running, make_config
from tests.test_incidents_api import incidents, wait_incident
from tests.test_syslog_udp import send_udp

HOUR = 3600
WEEK = 168
# Monday 2026-11-02 00:00 UTC, an hour boundary.
MONDAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
RATE = "Event rate far above its usual level for this hour of the week"
NEW_TERM = "First time seen after the learning period (new user, country, port or device)"


def device_event(ts: float, device: str) -> Event:
    return Event(ts, ts, "syslog", {"observer.ip": device, "message": "tick"}, b"tick")


def listener_event(ts: float, listener: str, dataset: str = "history") -> Event:
    """An event as the pipeline hands it to the stages: stamped with the listener it came in
    on (``Pipeline.offer`` does that); the dataset keeps it apart from the live lines' source."""
    f = {"event.dataset": dataset, "message": "tick"}
    return Event(ts, ts, "syslog", f, b"tick", listener=listener)


def login(ts: float, user: str, host: str = "srv1", country: str | None = None) -> Event:
    f: dict[str, Any] = {
        "event.category": ["authentication"],
        "event.outcome": "success",
        "event.action": "ssh_login",
        "user.name": user,
        "host.hostname": host,
        "source.ip": "198.51.100.20",
    }
    if country:
        f["source.geo.country_iso_code"] = country
    return Event(ts, ts, "syslog", f, b"login")


def test_hour_of_week_starts_on_monday_midnight_utc() -> None:
    assert hour_of_week(int(MONDAY // HOUR)) == 0
    assert hour_of_week(int(MONDAY // HOUR) + 24 * 6 + 23) == 167
    assert hour_of_week(int(MONDAY // HOUR) + WEEK) == 0


def learn_weeks(rates: RateBaselines, weeks: int, per_hour: dict[str, int]) -> int:
    """Feed ``weeks`` of hours with a steady count per key; returns the next hour."""
    start = int(MONDAY // HOUR)
    for h in range(start, start + weeks * WEEK):
        for key, n in per_hour.items():
            assert rates.observe("device", key, h, n) is None
    return start + weeks * WEEK


def test_doubling_the_usual_rate_for_the_hour_is_an_anomaly_once() -> None:
    rates = RateBaselines(RateSettings(min_count=5, warmup_weeks=2))
    hour = learn_weeks(rates, 3, {"steady": 30, "busy": 30})
    got = [rates.observe("device", "busy", hour) for _ in range(70)]
    flagged = [g for g in got if g is not None]
    assert len(flagged) == 1  # once per key and hour
    assert flagged[0]["observed"] == 61 and flagged[0]["expected"] == 30.0
    assert all(rates.observe("device", "steady", hour) is None for _ in range(30))


def test_the_same_hour_of_the_week_is_the_reference_not_the_day_before() -> None:
    """A key busy every Monday 09:00 and quiet otherwise: 09:00 on a Monday is normal."""
    rates = RateBaselines(RateSettings(min_count=5, warmup_weeks=2))
    start = int(MONDAY // HOUR)
    for h in range(start, start + 3 * WEEK):
        n = 100 if hour_of_week(h) == 9 else 2
        rates.observe("device", "office", h, n)
    monday_9 = start + 3 * WEEK + 9
    rates.roll(monday_9)
    assert rates.observe("device", "office", monday_9, 100) is None
    tuesday_9 = monday_9 + 24
    rates.roll(tuesday_9)
    assert rates.observe("device", "office", tuesday_9, 100) is not None


def test_silent_hours_count_as_zero() -> None:
    rates = RateBaselines(RateSettings(min_count=1, warmup_weeks=1))
    start = int(MONDAY // HOUR)
    rates.observe("device", "d", start, 10)
    rates.roll(start + WEEK)  # a whole week without a message
    series = rates.series[("device", "d")]
    mean, _sd, weeks = series.expected(start + WEEK + 1)
    assert (mean, weeks) == (0.0, 1)


def test_rate_keys_beyond_the_bound_are_refused_and_counted() -> None:
    rates = RateBaselines(RateSettings(max_keys=2))
    for key in ("a", "b", "c", "d"):
        rates.observe("device", key, 1)
    assert len(rates.series) == 2 and rates.refused == 2


async def test_a_new_user_after_the_learning_period_is_stamped_once() -> None:
    stage = BaselineStage(dataclasses.replace(AnalysisSection(), new_term_learning=86400.0))
    await stage.process([login(MONDAY, "alice"), login(MONDAY + 10, "bob")], MONDAY)
    # Learning: a user first seen within the period is learned, not reported.
    await stage.process([login(MONDAY + 3600, "carol")], MONDAY + 3600)
    later = MONDAY + 2 * 86400
    first, again = login(later, "mallory"), login(later + 5, "mallory")
    await stage.process([first], later)
    await stage.process([again], later + 5)
    assert first.fields["baseline.new_term.kind"] == "user_per_host"
    assert first.fields["baseline.new_term.key"] == "srv1"
    assert first.fields["baseline.new_term.value"] == "mallory"
    assert first.line is None  # encoded again for the store
    assert "baseline.new_term.kind" not in again.fields
    assert [t["value"] for t in stage.terms.recent] == ["mallory"]


def test_the_snapshot_restores_what_was_learned() -> None:
    stage = BaselineStage(AnalysisSection())
    for h in range(3):
        stage.observe(device_event(MONDAY + h * HOUR, "10.0.0.1"), int(MONDAY // HOUR) + h, 0)
    stage.observe(login(MONDAY, "alice"), int(MONDAY // HOUR), MONDAY)
    copy = BaselineStage(AnalysisSection())
    copy.restore(stage.snapshot())
    assert copy.rates.series.keys() == stage.rates.series.keys()
    assert copy.terms.seen["user_per_host"] == {"srv1": {"alice"}}


def test_a_batch_stamps_the_event_that_crosses_the_line_as_counting_one_by_one_does() -> None:
    def warmed() -> BaselineStage:
        stage = BaselineStage(dataclasses.replace(AnalysisSection(), baseline_min_count=5))
        start = int(MONDAY // HOUR)
        for h in range(start, start + 2 * WEEK):
            stage.observe_batch([listener_event(h * HOUR, "dmz") for _ in range(10)], h, 0)
        return stage

    hour = int(MONDAY // HOUR) + 2 * WEEK
    batch = [listener_event(hour * HOUR, "dmz", "live") for _ in range(30)]
    assert warmed().observe_batch(batch, hour, 0) == 1
    one_by_one = [listener_event(hour * HOUR, "dmz", "live") for _ in range(30)]
    stage = warmed()
    assert [stage.observe(e, hour, 0) for e in one_by_one].count(True) == 1
    stamped = [i for i, e in enumerate(batch) if "baseline.rate.kind" in e.fields]
    assert stamped == [i for i, e in enumerate(one_by_one) if "baseline.rate.kind" in e.fields]
    assert stamped == [20]  # the 21st event: twice the usual 10 is the line
    assert batch[20].fields["baseline.rate.observed"] == 21
    assert batch[20].fields["baseline.rate.kind"] == "listener"
    assert batch[20].line is None  # marked changed: the store encodes it again


# ------------------------------------------------------------------------- in the appliance


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Running, Clock]]:
    clock = Clock(MONDAY)
    cfg = parse_config(
        make_config(
            tmp_path,
            analysis={
                "baseline_min_count": 5,
                "baseline_warmup_weeks": 2,
                "new_term_learning": 86400.0,
            },
        ),
        base_dir=tmp_path,
    )
    app = Appliance(cfg, clock=clock)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        yield run, clock
    finally:
        await run.session.close()
        await app.stop()


async def offer(run: Running, events: list[Event]) -> None:
    before = run.app.pipeline.stored.total()
    for e in events:
        assert run.app.pipeline.offer(e, "test")
    await run.wait_stored(before + len(events))


async def test_a_device_doubling_its_rate_for_the_hour_raises_an_incident_a_steady_one_not(
    clocked: tuple[Running, Clock],
) -> None:
    run, clock = clocked
    comp = baselines_of(run.app)
    assert comp is not None
    # Three weeks of 10 events an hour from two firewalls, straight into the running stage.
    start = int(MONDAY // HOUR)
    for h in range(start, start + 3 * WEEK):
        ts = h * HOUR + 60.0
        batch = [device_event(ts, d) for d in ("10.0.0.1", "10.0.0.2") for _ in range(10)]
        await comp.stage.process(batch, ts)
    # Week four, the same hour as the first: one firewall sends its usual 10, the other 25.
    clock.now = (start + 3 * WEEK) * HOUR + 120.0
    await offer(run, [device_event(clock.now, "10.0.0.1") for _ in range(10)])
    await offer(run, [device_event(clock.now, "10.0.0.2") for _ in range(25)])
    inc = await wait_incident(run, RATE)
    assert inc["group"] == {"baseline.rate.kind": "device", "baseline.rate.key": "10.0.0.2"}
    full = await run.get_json(f"/api/v1/incidents/{inc['id']}")
    assert full["hit_count"] == 1
    rated = [i for i in await incidents(run) if i["rule"]["title"] == RATE]
    assert len(rated) == 1
    body = await run.get_json("/api/v1/baselines", kind="device")
    by_key = {r["key"]: r for r in body["rates"]}
    assert by_key["10.0.0.2"]["this_hour"] == 25 and by_key["10.0.0.2"]["expected"] == 10.0
    assert body["anomalies"][0]["key"] == "10.0.0.2"


async def test_a_listener_doubling_its_rate_for_the_hour_raises_an_incident_a_steady_one_not(
    tmp_path: Path,
) -> None:
    """Two named syslog listeners (a DMZ and a LAN one) with three weeks of 10 events an
    hour each; in week four the DMZ listener receives 25 datagrams in that hour and the LAN
    one its usual 10: one incident, for the DMZ listener."""
    clock = Clock(MONDAY)
    udp = {"protocol": "udp", "listen": "127.0.0.1:0"}
    cfg = parse_config(
        make_config(
            tmp_path,
            analysis={"baseline_min_count": 5, "baseline_warmup_weeks": 2},
            sources={"syslog": [{**udp, "name": "dmz"}, {**udp, "name": "lan"}]},
        ),
        base_dir=tmp_path,
    )
    app = Appliance(cfg, clock=clock)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        comp = baselines_of(app)
        assert comp is not None
        start = int(MONDAY // HOUR)
        for h in range(start, start + 3 * WEEK):
            ts = h * HOUR + 60.0
            batch = [listener_event(ts, name) for name in ("dmz", "lan") for _ in range(10)]
            await comp.stage.process(batch, ts)
        clock.now = (start + 3 * WEEK) * HOUR + 120.0
        send_udp(run.source("lan").address, *[b"<14>lan-host app: tick %d" % i for i in range(10)])
        send_udp(run.source("dmz").address, *[b"<14>dmz-host app: tick %d" % i for i in range(25)])
        await run.wait_stored(35)
        inc = await wait_incident(run, RATE)
        assert inc["group"] == {"baseline.rate.kind": "listener", "baseline.rate.key": "dmz"}
        rated = [i for i in await incidents(run) if i["rule"]["title"] == RATE]
        assert len(rated) == 1
        body = await run.get_json("/api/v1/baselines", kind="listener")
        by_key = {r["key"]: r for r in body["rates"]}
        assert by_key["dmz"]["this_hour"] == 25 and by_key["dmz"]["expected"] == 10.0
        assert by_key["lan"]["this_hour"] == 10 and by_key["lan"]["expected"] == 10.0
        assert [a["key"] for a in body["anomalies"]] == ["dmz"]
    finally:
        await run.session.close()
        await app.stop()


async def test_flows_count_under_the_listener_that_received_them(
    clocked: tuple[Running, Clock],
) -> None:
    run, _clock = clocked
    comp = baselines_of(run.app)
    assert comp is not None
    flows = [
        Event(MONDAY, MONDAY, "netflow", {"source.ip": "192.0.2.1", "destination.port": 443})
        for _ in range(3)
    ]
    assert run.app.flows.offer(flows, "netflow-dmz")
    series = comp.stage.rates.series
    await run.wait_for(lambda: ("listener", "netflow-dmz") in series)
    assert series[("listener", "netflow-dmz")].count == 3


async def test_a_login_from_a_never_seen_country_raises_a_new_term_incident_once(
    clocked: tuple[Running, Clock],
) -> None:
    run, clock = clocked
    await offer(run, [login(clock.now, "alice", country="DE") for _ in range(3)])
    clock.now += 2 * 86400  # past the one-day learning period
    await offer(run, [login(clock.now, "alice", country="DE")])
    await offer(run, [login(clock.now + 1, "alice", country="KP")])
    await offer(run, [login(clock.now + 2, "alice", country="KP")])
    inc = await wait_incident(run, NEW_TERM)
    assert inc["group"] == {
        "baseline.new_term.kind": "country_per_user",
        "baseline.new_term.key": "alice",
        "baseline.new_term.value": "KP",
    }
    terms = [i for i in await incidents(run) if i["rule"]["title"] == NEW_TERM]
    assert len(terms) == 1 and terms[0]["hit_count"] == 1
    body = await run.get_json("/api/v1/baselines/new-terms")
    assert body["recent"][-1]["value"] == "KP"
    kinds = {k["kind"]: k for k in body["kinds"]}
    assert kinds["country_per_user"]["learning"] is False


async def test_baselines_survive_a_restart(tmp_path: Path) -> None:
    cfg = parse_config(make_config(tmp_path), base_dir=tmp_path)
    app = Appliance(cfg, clock=Clock(MONDAY))
    await app.start()
    comp = baselines_of(app)
    assert comp is not None
    await comp.stage.process([device_event(MONDAY, "10.0.0.9")], MONDAY)
    await app.stop()
    app = Appliance(cfg, clock=Clock(MONDAY))
    await app.start()
    try:
        again = baselines_of(app)
        assert again is not None
        assert ("device", "10.0.0.9") in again.stage.rates.series
    finally:
        await app.stop()
