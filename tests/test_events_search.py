"""Event search API: field filters, free text, bounded scans with a cursor, counts by field and
histograms, over events stored through the real pipeline into a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.event import Event
from appliance.store import Store, search
from appliance.store.search import FilterError, Query, parse_condition
from tests.conftest import TOKEN
from tests.ruletools import T0, ev, ssh
from tests.test_incidents_api import feed


async def get(run: Any, path: str, **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with run.session.get(run.api + path, params=params, headers=headers) as resp:
        return resp.status, await resp.json()


async def mixed(start_appliance: Any) -> Any:
    """An appliance holding 12 SSH failures (alice x4 from 10.1.0.x, bob x8 from 192.0.2.x,
    source ports 40000..40011) and 3 firewall denies, one minute apart."""
    run = await start_appliance()
    events = []
    for i in range(12):
        user, ip = ("alice", f"10.1.0.{i}") if i < 4 else ("bob", f"192.0.2.{i}")
        events.append(ssh(i * 60, ip, user, port=40000 + i))
    for i in range(3):
        events.append(
            ev(
                (12 + i) * 60,
                {
                    "event.category": ["network"],
                    "event.type": ["connection", "denied"],
                    "event.action": "deny",
                    "source.ip": "198.51.100.7",
                    "destination.port": 22 if i else 3389,
                    "message": f"deny tcp 198.51.100.7 -> 10.0.0.1 rule {i}",
                    "acme.widget.colour": "blue",
                },
            )
        )
    await feed(run, events)
    return run


async def test_a_field_filter_returns_only_matching_events(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events", **{"user.name": "alice"})
    assert status == 200
    assert body["count"] == 4
    assert {e["user"]["name"] for e in body["events"]} == {"alice"}


async def test_a_repeated_filter_matches_any_of_its_values(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    params = [("event.action", "deny"), ("event.action", "ssh_login"), ("user.name", "alice")]
    async with run.session.get(run.api + "/api/v1/events", params=params, headers=headers) as r:
        body = await r.json()
    assert body["count"] == 4  # conditions on different fields all hold


async def test_a_filter_matches_a_value_inside_a_stored_list(start_appliance: Any) -> None:
    # The firewall decoders store event.type as a list; "denied" is not its first item.
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events", **{"event.type": "denied"})
    assert status == 200 and body["count"] == 3
    status, agg = await get(
        run, "/api/v1/events/aggregate", field="source.ip", since=0, **{"event.type": "denied"}
    )
    assert status == 200 and agg["buckets"] == [{"value": "198.51.100.7", "count": 3}]


async def test_ip_fields_take_cidr_blocks(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    _s, body = await get(run, "/api/v1/events", **{"source.ip": "10.1.0.0/16"})
    assert sorted(e["source"]["ip"] for e in body["events"]) == [f"10.1.0.{i}" for i in range(4)]


async def test_numeric_ranges_filter_ports(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    _s, body = await get(run, "/api/v1/events", **{"source.port": "40002..40004"})
    assert sorted(e["source"]["port"] for e in body["events"]) == [40002, 40003, 40004]
    _s, body = await get(run, "/api/v1/events", **{"destination.port": "<1024"})
    assert [e["destination"]["port"] for e in body["events"]] == [22, 22]


async def test_event_module_filters_on_the_module(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    _s, body = await get(run, "/api/v1/events", **{"event.module": "syslog"})
    assert body["count"] == 15
    _s, body = await get(run, "/api/v1/events", **{"event.module": "snmp"})
    assert body["count"] == 0 and body["complete"] is True


async def test_free_text_matches_inside_the_message(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    _s, body = await get(run, "/api/v1/events", q="rule 1")
    assert [e["message"] for e in body["events"]] == ["deny tcp 198.51.100.7 -> 10.0.0.1 rule 1"]


async def test_an_unknown_field_is_a_400_naming_it(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events", **{"user_name": "alice"})
    assert status == 400
    assert body["error"].startswith("user_name: unknown field")


async def test_more_than_32_field_filters_is_a_400(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    params = {f"labels.k{i}": "v" for i in range(33)}
    status, body = await get(run, "/api/v1/events", **params)
    assert status == 400 and body["error"] == "labels.k32: at most 32 field filters"


async def test_a_field_only_stored_events_have_is_known(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events", **{"acme.widget.colour": "blue"})
    assert status == 200 and body["count"] == 3


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("source.ip", "10.0.0.0/33", "not an address or CIDR"),
        ("source.ip", "not-an-ip", "not an address or CIDR"),
        ("source.port", "1..x", "is not a number"),
        ("source.port", "9..1", "range start is after its end"),
        ("event.severity", ">=nan", "must be a finite number"),
    ],
)
async def test_a_malformed_filter_value_is_a_400_naming_the_field(
    start_appliance: Any, name: str, value: str, problem: str
) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events", **{name: value})
    assert status == 400
    assert body["error"].startswith(f"{name}: ") and problem in body["error"]


async def test_a_scan_stops_at_its_budget_and_the_cursor_continues_it(
    start_appliance: Any,
) -> None:
    run = await mixed(start_appliance)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"user.name": "alice", "max_scan": 5}
        if cursor:
            params["cursor"] = cursor
        _s, body = await get(run, "/api/v1/events", **params)
        assert body["scanned"] <= 5
        seen += [e["source"]["ip"] for e in body["events"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert sorted(seen) == [f"10.1.0.{i}" for i in range(4)]
    assert pages >= 3  # 15 events at 5 a request


async def test_aggregate_counts_events_by_a_field(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(
        run,
        "/api/v1/events/aggregate",
        field="user.name",
        since=str(T0 - 1),
        until=str(T0 + 3600),
        limit=1,
    )
    assert status == 200
    assert body["buckets"] == [{"value": "bob", "count": 8}]
    assert body["other"] == 4 and body["missing"] == 3 and body["complete"] is True


async def test_aggregate_applies_the_filters(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    _s, body = await get(
        run,
        "/api/v1/events/aggregate",
        field="destination.port",
        since=str(T0 - 1),
        until=str(T0 + 3600),
        **{"event.action": "deny"},
    )
    assert body["buckets"] == [{"value": 22, "count": 2}, {"value": 3389, "count": 1}]


async def test_aggregate_without_a_known_field_is_a_400(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events/aggregate", field="no.such.field")
    assert status == 400 and body["error"].startswith("field: unknown field")
    status, body = await get(run, "/api/v1/events/aggregate")
    assert status == 400 and body["error"].startswith("field: required")


async def test_histogram_counts_events_per_interval(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    since = T0 // 300 * 300
    status, body = await get(
        run,
        "/api/v1/events/histogram",
        interval=300,
        since=str(since),
        until=str(since + 1200),
        **{"event.action": "ssh_login"},
    )
    assert status == 200
    counts = [b["count"] for b in body["buckets"]]
    assert sum(counts) == 12 and len(counts) == 5
    assert body["buckets"][0]["start"].endswith("Z")


async def test_histogram_refuses_more_buckets_than_its_bound(start_appliance: Any) -> None:
    run = await mixed(start_appliance)
    status, body = await get(run, "/api/v1/events/histogram", interval=1, since="0", until=str(T0))
    assert status == 400 and body["error"].startswith("interval: ")


def test_a_range_cannot_be_combined_with_exact_values() -> None:
    with pytest.raises(FilterError, match="cannot be combined"):
        parse_condition("source.port", ["1..5", "7"])


def test_a_condition_matches_list_values_and_numbers_given_as_text() -> None:
    cond = parse_condition("event.category", ["network"])
    assert cond.matches(["authentication", "network"])
    assert parse_condition("destination.port", ["443"]).matches(443)
    assert not parse_condition("destination.port", ["443"]).matches(4430)


async def stored_in_segments(
    tmp_path: Path, segments: int, per: int, *, search_index: bool = True
) -> Store:
    """A store holding ``segments`` segments of ``per`` events each (one insert each)."""
    store = Store(tmp_path / "s.db", search_index=search_index)
    await store.open()
    for s in range(segments):
        await store.insert_events(
            [
                Event(
                    timestamp=T0 + s * per + k,
                    created=T0 + s * per + k,
                    module="syslog",
                    fields={"user.name": "alice" if k == 0 else "bob", "message": f"m{s}.{k}"},
                )
                for k in range(per)
            ]
        )
    return store


async def test_a_budget_ending_on_a_batch_boundary_still_hands_back_a_cursor(
    tmp_path: Path,
) -> None:
    store = await stored_in_segments(tmp_path, 9, 10)  # SQL fetches 8 segments at a time
    try:
        counted = 0
        cursor = None
        rounds = 0
        while True:
            r = await search.count_by(store, Query(), "user.name", before_id=cursor, max_scan=80)
            counted += r.matched
            rounds += 1
            if r.next_cursor is None:
                break
            cursor = r.next_cursor
        assert (counted, rounds) == (90, 2)
    finally:
        await store.close()


async def test_the_sql_prefilter_stops_at_its_span_and_hands_back_a_cursor(
    tmp_path: Path,
) -> None:
    store = await stored_in_segments(tmp_path, 20, 10, search_index=False)
    try:
        absent = Query(text="no such text")
        r = await search.find_events(store, absent, limit=10, before_id=None, max_scan=4)
        # 4 x SQL_SPAN_FACTOR ids looked at by SQL, nothing parsed, the rest left for later.
        assert r.scanned == 0 and r.events == [] and r.next_cursor is not None
        assert r.next_cursor > 200 - 4 * search.SQL_SPAN_FACTOR - 10
        present = Query(text="m0.0")  # the oldest event
        seen = []
        cursor = None
        for _ in range(50):
            r = await search.find_events(store, present, limit=10, before_id=cursor, max_scan=4)
            seen += [e.fields["message"] for e in r.events]
            cursor = r.next_cursor
            if cursor is None:
                break
        assert seen == ["m0.0"]
    finally:
        await store.close()
