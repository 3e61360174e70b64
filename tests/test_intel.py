"""Threat intel end to end: the index, its aging, the enrichment stage, the built-in rule's
incident, and HTTPS feeds (conditional fetch, atomic swap) on a real loopback server."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from appliance.analysis.feeds import feed_paths
from appliance.analysis.intel import (
    EXPIRED,
    NONE,
    Indicator,
    IntelIndex,
    Match,
    SourceText,
    build_index,
)
from appliance.analysis.intel_stage import IntelEnricher, intel_of
from appliance.cli import main as cli_main
from appliance.config import parse_config
from appliance.event import Event
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.protocols.syslog.decode import decode_with_fields
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.store import Store
from tests import conftest
from tests.conftest import corpus_dir, make_config
from tests.test_incidents_api import wait_incident
from tests.test_syslog_udp import send_udp

DAY = 86400.0
T0 = 1_790_000_000.0


def index_of(text: str, *, ttl: float | None = None, seen: float = T0) -> IntelIndex:
    index, _report = build_index([SourceText("blocklist", "plain", text, 80, seen, ttl)], 10_000)
    return index


def hit(index: IntelIndex, address: str, now: float) -> Match:
    idx = index.lookup_ip(address, now)
    assert idx >= 0, f"{address} not matched"
    return index.match(idx, address)


def flow_event(src: str, dst: str = "192.0.2.10") -> Event:
    return Event(
        T0,
        T0,
        "netflow",
        {"source.ip": src, "destination.ip": dst, "destination.port": 443},
        b"",
    )


# ------------------------------------------------------------------------------ the index


def test_the_most_specific_live_block_answers_a_lookup() -> None:
    index = index_of("10.0.0.0/8\n10.1.0.0/16\n10.1.2.3\n10.255.255.255\n2001:db8::/32\n")
    assert hit(index, "10.255.255.255", T0).value == "10.255.255.255"
    assert hit(index, "10.255.0.0", T0).value == "10.0.0.0/8"
    assert hit(index, "10.1.2.3", T0).value == "10.1.2.3"
    assert hit(index, "10.1.9.9", T0).value == "10.1.0.0/16"
    assert hit(index, "10.200.0.1", T0).value == "10.0.0.0/8"
    assert hit(index, "2001:db8::1", T0).kind == "ipv6-addr"
    assert index.lookup_ip("11.0.0.1", T0) == NONE
    assert index.lookup_ip("garbage", T0) == NONE


def test_an_expired_inner_block_falls_back_to_the_live_block_around_it() -> None:
    index = IntelIndex()
    index.add(Indicator("ip", "10.0.0.0/8"), feed="wide", confidence=40, seen=T0, ttl=None)
    index.add(Indicator("ip", "10.1.0.0/16"), feed="narrow", confidence=90, seen=T0, ttl=DAY)
    index.finish()
    assert hit(index, "10.1.0.1", T0 + 1).feed == "narrow"
    assert hit(index, "10.1.0.1", T0 + 2 * DAY).feed == "wide"


def test_of_two_feeds_listing_the_same_address_the_more_confident_answers() -> None:
    index = IntelIndex()
    index.add(Indicator("ip", "203.0.113.9"), feed="a", confidence=90, seen=T0, ttl=None)
    index.add(Indicator("ip", "203.0.113.9"), feed="b", confidence=30, seen=T0, ttl=None)
    index.finish()
    assert hit(index, "203.0.113.9", T0).feed == "a"


def test_a_host_listed_twice_is_still_matched_when_the_more_confident_copy_expires() -> None:
    index = IntelIndex()
    index.add(Indicator("ip", "203.0.113.9"), feed="short", confidence=90, seen=T0, ttl=DAY)
    index.add(Indicator("ip", "203.0.113.9"), feed="long", confidence=30, seen=T0, ttl=None)
    index.finish()
    assert hit(index, "203.0.113.9", T0).feed == "short"
    assert hit(index, "203.0.113.9", T0 + 2 * DAY).feed == "long"


def test_another_spelling_of_a_listed_ipv6_host_matches_it() -> None:
    index = index_of("2001:db8:0:0::7\n")
    assert hit(index, "2001:DB8::7", T0).kind == "ipv6-addr"


def test_a_domain_indicator_covers_its_subdomains_and_not_its_parent() -> None:
    index = index_of("evil.example.com\n")
    assert index.lookup_domain("cdn.EVIL.example.com.", T0) >= 0
    assert index.lookup_domain("example.com", T0) == -1


def test_an_indicator_ages_out_ttl_after_the_list_last_listed_it() -> None:
    index = index_of("203.0.113.9\n", ttl=7 * DAY, seen=T0)
    assert index.lookup_ip("203.0.113.9", T0 + 7 * DAY - 1) >= 0
    assert index.lookup_ip("203.0.113.9", T0 + 7 * DAY + 1) == EXPIRED


# ------------------------------------------------------------------------------ the stage


async def test_enrichment_stamps_threat_fields_and_stops_after_the_ttl(tmp_path: Path) -> None:
    """Through the real pipeline and store, with the pipeline's clock injected: the same flow
    is enriched on day 1 and not on day 8 (the feed's TTL is 7 days)."""
    now = [T0 + DAY]
    store = Store(tmp_path / "a.db")
    await store.open()
    pipeline = Pipeline(store, Registry(), batch_size=1, flush_interval=0.01, clock=lambda: now[0])
    pipeline.before_store.append(
        IntelEnricher(index_of("203.0.113.0/24\n", ttl=7 * DAY), Registry())
    )
    pipeline.start()
    try:
        assert pipeline.offer(flow_event("203.0.113.9"), "test")
        await wait_until(lambda: pipeline.stored.value() >= 1)
        now[0] = T0 + 8 * DAY
        assert pipeline.offer(flow_event("203.0.113.9"), "test")
        await wait_until(lambda: pipeline.stored.value() >= 2)
        first, second = sorted(await store.query_events(limit=10), key=lambda e: e.id or 0)
    finally:
        await pipeline.stop(5.0)
        await store.close()
    f = first.fields
    assert f["threat.indicator.type"] == "ipv4-addr"
    assert f["threat.indicator.ip"] == "203.0.113.9"
    assert f["threat.indicator.name"] == "203.0.113.0/24"
    assert f["threat.indicator.confidence"] == 80
    assert f["threat.feed.name"] == "blocklist"
    assert f["threat.enrichments.matched.field"] == "source.ip"
    assert "threat.indicator.type" not in second.fields


def test_domain_and_hash_hits_name_the_field_that_matched() -> None:
    index = index_of(
        "bad.example.net\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    )
    stage = IntelEnricher(index, Registry())
    dns = Event(T0, T0, "syslog", {"dns.question.name": "x.bad.example.net"})
    av = Event(
        T0,
        T0,
        "syslog",
        {"file.hash.sha256": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"},
    )
    assert stage.enrich(dns, T0) and stage.enrich(av, T0)
    assert dns.fields["threat.enrichments.matched.field"] == "dns.question.name"
    assert dns.fields["threat.indicator.type"] == "domain-name"
    assert av.fields["threat.enrichments.matched.field"] == "file.hash.sha256"
    assert av.fields["threat.indicator.type"] == "file"


def test_a_value_that_missed_in_an_address_field_still_hits_as_a_domain() -> None:
    """The stage remembers misses, but only values no indicator of any kind could match: a
    name in an address field misses there and must still hit in a name field."""
    stage = IntelEnricher(index_of("bad.example.net\n"), Registry())
    odd = [Event(T0, T0, "syslog", {"source.ip": "bad.example.net"}) for _ in range(2)]
    assert stage.enrich_batch(odd, T0) == 0
    dns = Event(T0, T0, "syslog", {"dns.question.name": "bad.example.net"})
    assert stage.enrich_batch([dns], T0) == 1
    assert dns.fields["threat.enrichments.matched.field"] == "dns.question.name"


def test_repeated_misses_are_passed_over_and_a_listed_address_among_them_still_hits() -> None:
    stage = IntelEnricher(index_of("203.0.113.0/24\n"), Registry())
    quiet = [flow_event("192.0.2.1", "192.0.2.2") for _ in range(3)]
    assert stage.enrich_batch(quiet, T0) == 0
    listed = flow_event("192.0.2.1", "203.0.113.5")
    assert stage.enrich_batch([*quiet, listed], T0) == 1
    assert listed.fields["threat.enrichments.matched.field"] == "destination.ip"
    assert all("threat.indicator.type" not in e.fields for e in quiet)


def test_an_expired_indicator_is_not_remembered_as_a_miss_of_a_later_index() -> None:
    """Misses belong to the index they were found in: a new index that lists the address
    hits at once."""
    stage = IntelEnricher(index_of("203.0.113.9\n", ttl=DAY), Registry())
    assert stage.enrich_batch([flow_event("203.0.113.9")], T0 + 2 * DAY) == 0
    assert stage.enrich_batch([flow_event("198.51.100.1")], T0) == 0
    stage.use(index_of("198.51.100.1\n"))
    assert stage.enrich_batch([flow_event("198.51.100.1")], T0) == 1


def test_an_unhashable_value_is_skipped_and_the_other_fields_still_looked_at() -> None:
    stage = IntelEnricher(index_of("203.0.113.0/24\n"), Registry())
    ev = Event(T0, T0, "syslog", {"source.ip": ["192.0.2.1"], "destination.ip": "203.0.113.4"})
    assert stage.enrich_batch([ev], T0) == 1
    assert ev.fields["threat.enrichments.matched.field"] == "destination.ip"


def test_an_event_the_device_already_marked_keeps_its_threat_fields() -> None:
    stage = IntelEnricher(index_of("203.0.113.0/24\n"), Registry())
    ev = flow_event("203.0.113.4")
    ev.fields["threat.indicator.type"] = "url"
    assert stage.enrich_batch([ev], T0) == 0
    assert "threat.feed.name" not in ev.fields


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    await conftest.wait_until(predicate, timeout)


# ------------------------------------------------------------------------- in the appliance


def corpus_firewall_line() -> tuple[bytes, str]:
    """A real iptables line from the corpus whose source is a public address, and it."""
    path = corpus_dir("syslog") / "linux_iptables.log"
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = ("<4>" + raw).encode()
        msg, fields = decode_with_fields(line, T0, None, "127.0.0.1")
        REGISTRY.decode(msg, fields)
        src = fields.get("source.ip")
        if isinstance(src, str) and not src.startswith(("10.", "192.168.", "172.", "127.")):
            return line, src
    pytest.skip("no iptables line with a public source address in the corpus")


async def test_a_firewall_line_from_a_listed_address_raises_an_intel_incident(
    start_appliance: Any, tmp_path: Path
) -> None:
    line, src = corpus_firewall_line()
    (tmp_path / "blocklist.netset").write_text(f"# local list\n{src}\n; bad\n300.1.1.1\n")
    run = await start_appliance(
        analysis={"intel_files": ["blocklist.netset"], "intel_confidence": 85}
    )
    send_udp(run.source().address, line)
    inc = await wait_incident(run, "Traffic to or from a threat-intel indicator")
    assert inc["group"]["threat.feed.name"] == "blocklist"
    assert inc["group"]["threat.indicator.confidence"] == 85
    assert inc["group"]["threat.enrichments.matched.atomic"] == src
    assert inc["severity"] == "high"
    metrics = await run.metrics()
    assert 'appliance_intel_malformed_total{feed="blocklist"} 1' in metrics
    assert 'appliance_intel_indicators{feed="blocklist"} 1' in metrics


async def test_a_flow_from_a_listed_address_raises_an_intel_incident(
    start_appliance: Any, tmp_path: Path
) -> None:
    (tmp_path / "c2.txt").write_text("198.51.100.0/24\n")
    run = await start_appliance(analysis={"intel_files": ["c2.txt"]})
    assert run.app.flows.offer([flow_event("198.51.100.77")], "test")
    inc = await wait_incident(run, "Traffic to or from a threat-intel indicator")
    assert inc["group"]["threat.feed.name"] == "c2"


# ------------------------------------------------------------------------------ HTTPS feeds


class FeedServer:
    """A feed on loopback over TLS that answers conditional requests as a CDN would."""

    def __init__(self, ca: trustme.CA) -> None:
        self.cert = ca.issue_cert("127.0.0.1")
        self.body = b"203.0.113.0/24\n"
        self.etag = '"v1"'
        self.status = 200
        self.requests: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        if self.status != 200:
            return web.Response(status=self.status)
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(body=self.body, headers={"ETag": self.etag})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/drop.txt", self.handle)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def feed_server(tmp_path: Path) -> Any:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "feed-ca.pem"))
    server = FeedServer(ca)
    await server.start()
    yield server
    await server.stop()


def feed_config(tmp_path: Path, port: int) -> Path:
    data = make_config(
        tmp_path,
        analysis={
            "feeds": [
                {
                    "name": "drop",
                    "url": f"https://127.0.0.1:{port}/drop.txt",
                    "ca_file": "feed-ca.pem",
                    "confidence": 90,
                    "ttl": 2 * DAY,
                }
            ]
        },
    )
    parse_config(data, base_dir=tmp_path)  # valid
    path = tmp_path / "appliance.toml"
    path.write_text(to_toml(data))
    return path


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for make_config's dicts: tables, arrays of tables, scalars, lists."""
    out: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict | list)}
        scalars.update(
            {
                k: v
                for k, v in table.items()
                if isinstance(v, list) and not (v and isinstance(v[0], dict))
            }
        )
        if prefix:
            out.append(f"[{prefix}]")
        for k, v in scalars.items():
            out.append(f"{k} = {json.dumps(v)}")
        for k, v in table.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                emit(name, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    out.append(f"[[{name}]]")
                    for ik, iv in item.items():
                        out.append(f"{ik} = {json.dumps(iv)}")

    emit("", data)
    return "\n".join(out) + "\n"


async def intel_update(config: Path) -> int:
    return await asyncio.to_thread(cli_main, ["intel", "update", "--config", str(config)])


async def test_intel_update_fetches_then_revalidates_with_the_etag(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = feed_config(tmp_path, feed_server.port)
    assert await intel_update(config) == 0
    data, meta = feed_paths(tmp_path / "data", "drop")
    assert data.read_bytes() == b"203.0.113.0/24\n"
    first_inode = data.stat().st_ino
    assert await intel_update(config) == 0
    assert feed_server.requests[1]["If-None-Match"] == '"v1"'
    assert data.stat().st_ino == first_inode  # a 304 leaves the list alone
    assert json.loads(meta.read_text())["etag"] == '"v1"'


async def test_a_changed_feed_is_swapped_in_by_rename_with_no_temporary_left(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = feed_config(tmp_path, feed_server.port)
    assert await intel_update(config) == 0
    data, _meta = feed_paths(tmp_path / "data", "drop")
    old_inode = data.stat().st_ino
    feed_server.body, feed_server.etag = b"198.51.100.0/24\n", '"v2"'
    assert await intel_update(config) == 0
    assert data.read_bytes() == b"198.51.100.0/24\n"
    assert data.stat().st_ino != old_inode  # a new file renamed over the old one
    assert sorted(p.name for p in data.parent.iterdir()) == ["drop.data", "drop.json"]


async def test_a_failing_feed_keeps_the_list_it_had(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = feed_config(tmp_path, feed_server.port)
    assert await intel_update(config) == 0
    feed_server.status = 503
    assert await intel_update(config) == 1
    data, _meta = feed_paths(tmp_path / "data", "drop")
    assert data.read_bytes() == b"203.0.113.0/24\n"


async def test_a_feed_server_with_an_untrusted_certificate_is_refused(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = feed_config(tmp_path, feed_server.port)
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "feed-ca.pem"))  # not the server's CA
    assert await intel_update(config) == 1
    assert not feed_paths(tmp_path / "data", "drop")[0].exists()


async def test_the_running_appliance_loads_a_fetched_feed_and_matches_it(
    feed_server: FeedServer, start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance(
        analysis={
            "feeds": [
                {
                    "name": "drop",
                    "url": f"https://127.0.0.1:{feed_server.port}/drop.txt",
                    "ca_file": "feed-ca.pem",
                    "confidence": 90,
                }
            ]
        }
    )
    intel = intel_of(run.app)
    assert intel is not None
    await intel.tick()  # what its timer does every few seconds: fetch what is due, reload
    assert intel.status()["by_feed"] == {"drop": 1}
    assert run.app.flows.offer([flow_event("203.0.113.50")], "test")
    inc = await wait_incident(run, "Traffic to or from a threat-intel indicator")
    assert inc["group"]["threat.feed.name"] == "drop"
    assert inc["group"]["threat.indicator.confidence"] == 90
    assert os.path.exists(tmp_path / "data" / "intel" / "drop.data")


async def test_the_api_lists_loaded_feeds_and_answers_lookups(
    start_appliance: Any, tmp_path: Path
) -> None:
    (tmp_path / "drop.txt").write_text("1.10.16.0/20 ; SBL256894\nnot valid\n")
    run = await start_appliance(analysis={"intel_files": ["drop.txt"], "intel_confidence": 90})
    status = await run.get_json("/api/v1/intel")
    assert status["by_feed"] == {"drop": 1}
    assert status["malformed"] == {"drop": 1}
    hit = await run.get_json("/api/v1/intel/lookup", value="1.10.17.1")
    assert hit["listed"] is True
    assert hit["indicator"]["name"] == "1.10.16.0/20"
    assert hit["indicator"]["feed"] == "drop" and hit["indicator"]["confidence"] == 90
    assert hit["indicator"]["description"] == "SBL256894"
    miss = await run.get_json("/api/v1/intel/lookup", value="192.0.2.1")
    assert miss == {"value": "192.0.2.1", "listed": False}


async def test_an_edited_list_is_reloaded_without_a_restart(
    start_appliance: Any, tmp_path: Path
) -> None:
    path = tmp_path / "local.txt"
    path.write_text("192.0.2.1\n")
    run = await start_appliance(analysis={"intel_files": ["local.txt"]})
    intel = intel_of(run.app)
    assert intel is not None
    path.write_text("192.0.2.1\n192.0.2.2\n198.51.100.0/24\n")
    os.utime(path, (T0, T0))  # a different mtime even within the file system's granularity
    await intel.tick()  # its timer's check: the file changed on disk
    assert intel.status()["by_feed"] == {"local": 3}
