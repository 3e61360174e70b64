"""The native syslog batch path (one call per ``recvmmsg`` batch or stream read) against the
per-message Python path it replaces: the same events (time stamps, fields in order, raw bytes),
the same stored lines byte for byte and the same counters, for every corpus line and for
generated hostile input (empty, oversize, bad PRI and SD, non-UTF-8, NULs), from senders with
every vendor decoder as their configured hint, allowed and denied, within and past their rate
limit, and through a decoder that raises."""

from __future__ import annotations

import calendar
import random
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.event import Event
from appliance.metrics import Registry
from appliance.protocols.syslog import decode
from appliance.protocols.syslog.framing import SyslogFramer
from appliance.protocols.syslog.vendors import BUILTIN, VendorRegistry
from appliance.protocols.syslog.vendors.base import VendorDecoder
from appliance.protocols.syslog.vendors.declarative import load_file
from appliance.sources import syslog_intake
from appliance.sources.syslog_intake import SyslogIntake
from appliance.store.segments import encode_line_reference
from tests.conftest import syslog_corpus_lines
from tests.test_dataplane_equivalence import SEEDS, mutations

NOW = calendar.timegm((2026, 12, 4, 13, 0, 0)) + 0.5  # a float, as the clock gives
RAW_MAX = 2048


def reference_line(event: Event) -> bytes:
    """The stored line the reference writes for ``event`` (orjson, not the native writer)."""
    return encode_line_reference(
        event.timestamp, event.created, event.module, event.fields, event.raw[:RAW_MAX]
    )


pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)


def _boom(msg: Any, fields: dict[str, Any]) -> bool:
    if "BOOM" in msg.message:
        raise RuntimeError("decoder bug on purpose")
    return False


BOOM = VendorDecoder(name="boom", decode=_boom, programs=("boom",))
DECODERS = VendorRegistry([*BUILTIN, BOOM])
VENDORS = sorted(DECODERS.by_name)

# One sender network per vendor decoder (as its configured hint), plus a zone, a site and
# tags on some, so every profile shape is exercised. 203.0.113.0/24 is outside the allow-list.
SENDERS = [
    SyslogSender(
        networks=[f"10.{1 + k // 250}.{k % 250}.0/24"],
        vendor=name,
        timezone=["", "Europe/Berlin", "America/New_York", "UTC"][k % 4],
        site="branch" if k % 3 == 0 else "",
        device_name=f"dev{k}" if k % 2 else "",
        tags=["dmz", "edge"] if k % 5 == 0 else [],
    )
    for k, name in enumerate(VENDORS)
]
ALLOWED = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]


def sender_ips() -> list[str]:
    ips = [f"10.{1 + k // 250}.{k % 250}.7" for k in range(len(VENDORS))]
    return [*ips, "192.0.2.9", "2001:db8::5", "203.0.113.4"]


def make_intake(rate: float = 0.0, burst: int = 20_000, max_bytes: int = 8192) -> SyslogIntake:
    cfg = SyslogSource(
        listen="127.0.0.1:0",
        name="batch-test",  # its own rate-limited log key: other tests look for their lines
        allowed=ALLOWED,
        rate_limit=rate,
        rate_burst=burst,
        max_message_bytes=max_bytes,
    )
    return SyslogIntake(cfg, SENDERS, Registry(), "udp", DECODERS)


def counters(intake: SyslogIntake, dropped: Any, truncated: Any) -> dict[str, dict[Any, Any]]:
    return {
        "dropped": dict(dropped.values),
        "truncated": dict(truncated.values),
        "parse_errors": dict(intake.parse_errors.values),
        "decoded": dict(intake.decoded.values),
        "skew": dict(intake.skew.values),
    }


def run_both(
    batches: list[list[tuple[bytes, tuple[str, int]]]],
    monkeypatch: pytest.MonkeyPatch,
    **limits: Any,
) -> tuple[int, dict[str, dict[Any, Any]]]:
    """Every batch through the native batch path and through the per-message pure-Python
    path (header decoded by the reference); assert the same events, lines and counters.
    Returns how many events both made, and the counters."""
    native, reference = make_intake(**limits), make_intake(**limits)
    assert native._batch is not None
    counts = []
    for _ in (native, reference):
        metrics = Registry()
        counts.append(
            (
                metrics.counter("dropped", "", ["source", "reason"]),
                metrics.counter("truncated", "", ["source"]),
            )
        )
    max_bytes = limits.get("max_bytes", 8192)
    made = 0
    for i, batch in enumerate(batches):
        now = NOW + i * 0.25
        got = native.datagrams(batch, now, max_bytes, RAW_MAX, *counts[0])
        with monkeypatch.context() as m:
            m.setattr(decode, "_native", None)
            want: list[Event] = []
            for data, addr in batch:
                event = reference.datagram(data, addr[0], now, max_bytes, *counts[1])
                if event is not None:
                    want.append(event)
        assert len(got) == len(want), batch
        for g, w in zip(got, want, strict=True):
            assert g.raw == w.raw
            assert (g.timestamp, g.created, g.module) == (w.timestamp, w.created, w.module), g.raw
            assert orjson.dumps(g.fields) == orjson.dumps(w.fields), g.raw
            line = reference_line(w)
            assert g.line == line, g.raw
        made += len(got)
    seen = counters(native, *counts[0])
    assert seen == counters(reference, *counts[1])
    assert list(seen["skew"].items()) == list(reference.skew.values.items())
    return made, seen


def batched(lines: Iterator[bytes], ips: list[str], size: int = 256) -> list[list[Any]]:
    out: list[list[Any]] = [[]]
    for k, line in enumerate(lines):
        if len(out[-1]) == size:
            out.append([])
        out[-1].append((line, (ips[k % len(ips)], 514)))
    return out


@pytest.mark.corpus
def test_every_corpus_line_from_every_vendor_profile_makes_the_same_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made, seen = run_both(batched(syslog_corpus_lines(), sender_ips()), monkeypatch)
    assert made > 1000
    assert len(seen["decoded"]) > 10  # many vendor decoders claimed lines


HOSTILE = [
    b"",
    b"\x00",
    b"\x00\x00\n",
    b"<999>1 - - - - - - bad pri",
    b"<13 no close",
    b"<-1>x",
    b"<013>leading zero pri",
    b'<13>1 - h a p m [x@1 k="unterminated',
    b"<13>1 - h a p m [x@1 k=nq] bad sd",
    b"<13>1 - h a p m [] empty sd",
    b"<13>Aug  7 10:00:00 host app: \xff\xfe not utf-8",
    b"<13>1 2024-01-05T10:00:00Z h \xc3 p m - broken utf-8 in header",
    b"<13>Aug  7 10:00:00 host app[\xc3\xa9]: non-ascii pid",
    b"<13>1 - h a \xd9\xa3 m - arabic-indic digit procid",
    b"<13>Aug  7 10:00:00 host app: nul \x00 inside\x00",
    b"<13>Aug  7 10:00:00 host boom: BOOM the decoder raises",
    b"<13>Aug  7 10:00:00 host boom: a line the raising decoder declines",
    b"<13>" + b"x" * 9000,
    b"<13>1 - h a p m - " + "é".encode() * 5000,
    b"\xef\xbb\xbf<13>Aug  7 10:00:00 host app: bom",
]


def test_generated_hostile_datagrams_make_the_same_events_and_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261204)
    lines = [*HOSTILE * 3, *SEEDS, *mutations(rng, 4000)]
    rng.shuffle(lines)
    _, seen = run_both(batched(iter(lines), sender_ips(), 97), monkeypatch, max_bytes=1024)
    reasons = {reason for _source, reason in seen["dropped"]}
    assert reasons == {"empty", "not_allowed", "decode_error"}
    assert seen["truncated"] and len(seen["parse_errors"]) > 5


def raw_text_lines() -> list[bytes]:
    """Datagrams whose raw text holds every byte value, every control character, quotes and
    backslashes, BOMs, the separators orjson leaves alone, bad UTF-8 and lines past RAW_MAX
    (cut there, also inside a character): the stored line's raw string is written natively
    and must be orjson's byte for byte."""
    heads = [b"<13>1 2026-12-04T13:00:00Z h app 1 - - \xef\xbb\xbf", b"<13>Dec  4 13:00:00 h app: "]
    bodies = [b"byte %d [" % b + bytes([b]) + b"] end" for b in range(256)]
    bodies += [
        bytes(range(128)),
        bytes(range(32)) * 3 + b'"\\/\x7f',
        "DEL \x7f C1 \x85 NBSP \xa0 LS \u2028 PS \u2029 BOM \ufeff é ☃ 😀 \ufffd".encode(),
        b"bad \xc3 utf-8 \xff\xfe",
        b"tail newline\r\n",
        b'quote " backslash \\ both \\" \\\\',
        b"\xef\xbb\xbfa second BOM",
    ]
    long = [
        b"x" * (RAW_MAX + 100),
        b'\t"\\' * (RAW_MAX // 2),
        "é".encode() * RAW_MAX,  # cut inside a character: not UTF-8 any more
        "☃".encode() * (RAW_MAX // 3 - 10),
    ]
    lines = [h + b for h in heads for b in [*bodies, *long]]
    lines += [b"\xef\xbb\xbf<13>Dec  4 13:00:00 h app: BOM first", b"<13>", b"plain \x01 no header"]
    return lines


def test_the_raw_text_of_every_byte_and_escape_is_stored_as_orjson_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = raw_text_lines()
    made, _ = run_both(batched(iter(lines), ["192.0.2.9", "10.1.3.7"], 64), monkeypatch)
    assert made == len(lines)
    events = make_intake().datagrams(
        [(line, ("192.0.2.9", 1)) for line in lines], NOW, 8192, RAW_MAX, *_counters()
    )
    for line, event in zip(lines, events, strict=True):
        raw = orjson.loads(event.line)[4]
        try:
            assert raw == line[:RAW_MAX].decode("utf-8")
        except UnicodeDecodeError:  # encode_line's form of bytes that are not UTF-8
            assert isinstance(raw, list)


def _counters() -> tuple[Any, Any]:
    metrics = Registry()
    return metrics.counter("dropped", "", ["source", "reason"]), metrics.counter(
        "truncated", "", ["source"]
    )


SSHD_FAILED = (
    b"<38>Nov 29 10:00:00 bench-host sshd[4242]: Failed password for invalid user admin"
    b" from 203.0.113.7 port %d ssh2"
)


def test_a_senders_messages_share_one_str_per_repeated_header_and_decoder_text() -> None:
    """The engine's signature memo compares the previous event's parts by identity: the
    texts a sender repeats are one object (equal to what the reference makes, see above)."""
    intake = make_intake()
    first = intake.datagrams(
        [(SSHD_FAILED % 1, ("192.0.2.9", 1))], NOW, 8192, RAW_MAX, *_counters()
    )
    more = intake.datagrams(
        [(SSHD_FAILED % k, ("192.0.2.9", 1)) for k in (2, 3)], NOW, 8192, RAW_MAX, *_counters()
    )
    a, b, c = (e.fields for e in [*first, *more])
    shared = ["host.hostname", "process.name", "log.syslog.procid", "event.action"]
    shared += ["event.outcome", "user.name", "source.ip"]
    for key in shared:
        assert a[key] is b[key] is c[key], key
    assert a["event.category"][0] is b["event.category"][0]
    assert a["event.category"] is not b["event.category"]  # lists stay the event's own
    assert a["source.port"] != b["source.port"]


def test_a_hint_that_is_not_one_of_the_registrys_decoders_is_still_tried_first() -> None:
    """The registry's decoders are resolved once, as hints too; any other hint object is
    read as it comes."""

    def mine(msg: Any, fields: dict[str, Any]) -> bool:
        fields["labels.mine"] = msg.app_name
        return True

    intake = make_intake()
    intake.profile("192.0.2.9").decoder = VendorDecoder(name="mine", decode=mine)
    line = SSHD_FAILED % 1
    (event,) = intake.datagrams([(line, ("192.0.2.9", 1))], NOW, 8192, RAW_MAX, *_counters())
    assert event.fields["event.dataset"] == "mine" and event.fields["labels.mine"] == "sshd"


def _reshuffle(msg: Any, fields: dict[str, Any]) -> bool:
    """A Python decoder that moves, replaces and adds header fields."""
    if "reshuffle" not in msg.message:
        return False
    fields["log.level"] = fields.pop("log.level")
    fields["message"] = msg.message.upper()
    fields["host.hostname"] = None
    if "in place" not in msg.message:  # else as many items as the header set
        fields["labels.shuffled"] = 3
    return True


RESHUFFLE = VendorDecoder(name="reshuffle", decode=_reshuffle, programs=("shuffle",))


def test_fields_replaced_moved_or_added_after_the_header_are_stored_as_they_end_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch writes the header's and a native decoder's pairs of the stored line as it
    sets them; a decoder file replacing header fields in place (acme_gateway's
    ``event.kind``), a Python decoder moving and replacing them, and senders' static fields
    must still store what the dict ends up holding."""
    files = [load_file(p) for p in sorted((Path(__file__).parent / "decoders").glob("*.toml"))]
    registry = VendorRegistry([*BUILTIN, BOOM, RESHUFFLE, *(f.decoder for f in files)])
    monkeypatch.setattr(sys.modules[__name__], "DECODERS", registry)
    lines = [str(t["line"]).encode() for f in files for t in f.tests]
    lines += [
        b"<13>Aug  7 10:00:00 host shuffle: reshuffle the header fields",
        b"<13>Aug  7 10:00:00 host shuffle: reshuffle them in place",
        b"<13>1 2026-12-04T12:00:00Z host shuffle 77 m - reshuffle from RFC 5424",
        b'<13>1 2026-12-04T12:00:00Z host shuffle 77 m [a@1 k="v"] reshuffle with SD',
        b"<13>Aug  7 10:00:00 host shuffle: a line it declines",
    ]
    batches = batched(iter(lines * 4), sender_ips(), size=16)
    # Senders without a hint or static fields: the header's pairs are all the batch wrote.
    batches += [[(line, (ip, 514)) for line in lines] for ip in ("192.0.2.9", "2001:db8::5")]
    made, seen = run_both(batches, monkeypatch)
    assert made > 5 * len(lines)
    assert {"acme_gateway", "reshuffle"} <= {key[0] for key in seen["decoded"]}


def test_every_priority_in_every_header_shape_makes_the_same_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header's dict is a copy of a template per shape and priority, and the templates
    are bounded (1,024): 192 priorities in 16 shapes run past the bound, and the messages
    past it are made whole, with the same items in the same order."""
    shapes = [
        b"<%d>1 - h a p m - x",
        b"<%d>1 - - - - - - x",
        b'<%d>1 2026-12-04T12:00:00Z h a 77 m [x@1 k="v"] x',
        b"<%d>1 - h - 77 - - x",
        b"<%d>Aug  7 10:00:00 host app[12]: x",
        b"<%d>Aug  7 10:00:00 host app: x",
        b"<%d>Aug  7 10:00:00 host: x",
        b"<%d>x",
        b"<%d>1 - h a p m [bad x",
        b"<%d>Aug  7 10:00:00 host app[x]: x",
        b"<%d>1 - h a 1a m - x",
        b"<%d>1 - h a p - - x",
        b"<%d>1 - - a p m - x",
        b"<%d>1 - h - - m - x",
        b"<%d>Aug  7 10:00:00 app[12]: x",
        b"<%d>1 - - - 5 - - x",
    ]
    lines = [shape % pri for shape in shapes for pri in range(192)]
    made, _ = run_both(batched(iter(lines * 2), ["192.0.2.9"], size=512), monkeypatch)
    assert made == 2 * len(lines)


def test_templates_first_made_by_the_per_message_decode_make_the_same_batch_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A header template made by the per-message decode has no stored-line pairs of its own
    (that path writes no line); the batch that meets it next writes them one by one, keeps
    them with the template, and the messages after copy them."""
    monkeypatch.setattr(decode, "_native", decode._native_header())
    lines = [b"<%d>1 - h a p m - x" % pri for pri in (0, 13, 86, 191)]
    lines += [b"<%d>Aug  7 10:00:00 host app[12]: x" % pri for pri in (5, 38, 190)]
    for line in lines:
        assert decode.decode_with_fields(line, NOW, None, "192.0.2.9") is not None
    made, _ = run_both(batched(iter(lines * 3), ["192.0.2.9", "2001:db8::5"], 5), monkeypatch)
    assert made == 3 * len(lines)


def test_messages_past_the_template_bound_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six header shapes in 192 priorities want 1,152 templates: 1,024 are kept, and each
    message of the other 128 is made whole and counted (the same event either way)."""
    monkeypatch.setattr(decode, "_native", decode._native_header())
    shapes = [
        b"<%d>1 - h a p m - x",
        b"<%d>1 - - - - - - x",
        b"<%d>1 - h - 77 - - x",
        b"<%d>Aug  7 10:00:00 host app[12]: x",
        b"<%d>Aug  7 10:00:00 host app: x",
        b"<%d>Aug  7 10:00:00 host: x",
    ]
    lines = [shape % pri for shape in shapes for pri in range(192)]
    for line in lines * 2:
        decode.decode_with_fields(line, NOW, None, "192.0.2.9")
    assert decode.header_templates() == (1024, 2 * 128)


def test_a_decoder_a_prefix_selects_is_tried_only_when_its_prefix_needle_occurs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kv_brackets' case: a kernel line's "[ 35958.12]" is no block of pairs (no quote), so
    neither registry calls the decoder for it, and the events are the same."""
    called: list[str] = []

    def record(msg: Any, fields: dict[str, Any]) -> bool:
        called.append(msg.message)
        return False

    registry = VendorRegistry(
        [*BUILTIN, VendorDecoder(name="rec", decode=record, prefixes=("{",), prefix_needle="!")]
    )
    lines = [b"<13>Dec  5 02:00:00 h k: { 1.5} x", b"<13>Dec  5 02:00:00 h k: { 1.5} x!"]
    cfg = SyslogSource(listen="127.0.0.1:0", name="needle-test", allowed=ALLOWED)
    native = SyslogIntake(cfg, [], Registry(), "udp", registry)
    reference = SyslogIntake(cfg, [], Registry(), "udp", registry)
    assert native._batch is not None
    got = native.datagrams([(line, ("192.0.2.9", 1)) for line in lines], NOW, 8192, RAW_MAX,
                           *_counters())  # fmt: skip
    assert called == ["{ 1.5} x!"]
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        want = [reference.datagram(line, "192.0.2.9", NOW, 8192, *_counters()) for line in lines]
    assert called == ["{ 1.5} x!"] * 2
    assert [g.line for g in got] == [reference_line(w) for w in want if w is not None]


def test_long_and_many_distinct_texts_are_each_their_own_value() -> None:
    long_host = "h" * 70
    lines = [b"<13>1 - %s app%d %d - - x" % (long_host.encode(), k % 7, k) for k in range(3)]
    lines += [b"<13>1 - host-%d app - - x" % k for k in range(6_000)]
    events = make_intake().datagrams(
        [(line, ("192.0.2.9", 1)) for line in lines], NOW, 8192, RAW_MAX, *_counters()
    )
    assert events[0].fields["host.hostname"] == events[1].fields["host.hostname"] == long_host
    assert events[0].fields["host.hostname"] is not events[1].fields["host.hostname"]
    hosts = [e.fields["host.hostname"] for e in events[3:]]
    assert hosts == [f"host-{k}" for k in range(6_000)]
    assert [e.fields["log.syslog.procid"] for e in events[:3]] == ["0", "1", "2"]


BODY_TIMED = [
    b'<189>date=2019-05-15 time=18:03:41 logid="0000000013" type="traffic" subtype="forward"'
    b" srcip=10.1.100.22 dstip=195.8.215.136 proto=6 action=deny",
    b"<189>date=2016-06-14 time=12:22:01 devname=FW1 logid=0100032002 type=event tz=+0200"
    b' subtype=system user="admin" action=login status=failed',
    b"<189>eventtime=1557968619 logid=0000000013 type=traffic srcip=10.1.100.22 action=accept",
    b"<14>1,2021/07/15 11:58:58,001801000000,TRAFFIC,end,0,2021/07/15 11:59:02,10.210.0.84,"
    b"198.51.100.232,,,DENY-ALL,alice,,not-applicable,vsys1,INSIDE,OUTSIDE,ethernet1/1,,FWD,"
    b"2021/07/15 11:59:02,0,1,500,500,0,0,0x0,udp,deny,120,60,60,2",
]


def test_a_decoder_files_device_time_dates_a_message_whose_header_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The native batch path runs decoder files without a message object; the time a file
    reads from the body must still date the event, whichever sender profile (hint) sent it."""
    made, _ = run_both(batched(iter(BODY_TIMED * 40), sender_ips(), 31), monkeypatch)
    assert made > 100
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    one = [(BODY_TIMED[0], ("192.0.2.9", 514))]
    events = make_intake().datagrams(one, NOW, 8192, RAW_MAX, dropped, truncated)
    assert events[0].fields["event.dataset"] == "fortigate"
    assert events[0].timestamp < NOW - 86400  # 2019, from the body, not the receive time


def test_the_clock_skew_gauge_ends_the_same_with_interleaved_senders_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch writes a sender's skew once per run of its messages: the gauge must still
    end as the reference leaves it, series in the same order, the last skew of each, and no
    series for a sender that came after the bound was reached."""
    monkeypatch.setattr(syslog_intake, "MAX_SKEW_SENDERS", 3)
    ips = ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.2"]
    batch = [
        (f"<13>1 2026-12-04T12:59:{10 + k:02d}Z h app - - - m{k}".encode(), (ip, 514))
        for k, ip in enumerate(ips * 2)
        for _ in range(2)
    ]
    _, seen = run_both([batch], monkeypatch)
    skew = seen["skew"]
    assert list(skew) == [("192.0.2.1",), ("192.0.2.2",), ("192.0.2.3",)]
    assert skew[("192.0.2.2",)] == pytest.approx(calendar.timegm((2026, 12, 4, 12, 59, 21)) - NOW)


def test_rate_limit_drops_the_same_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [s for s in SEEDS for _ in range(30)]
    _, seen = run_both(batched(iter(lines), sender_ips()[:3], 64), monkeypatch, rate=20.0, burst=25)
    assert any(reason == "rate_limited" for _source, reason in seen["dropped"])


def test_a_decoder_that_raises_costs_only_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = [
        (b"<13>Aug  7 10:00:00 host sshd[1]: before", ("192.0.2.9", 1)),
        (b"<13>Aug  7 10:00:00 host boom: BOOM", ("192.0.2.9", 1)),
        (b"<13>Aug  7 10:00:00 host sshd[1]: after", ("192.0.2.9", 1)),
    ]
    intake = make_intake()
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    events = intake.datagrams(batch, NOW, 8192, RAW_MAX, dropped, truncated)
    assert [e.fields["message"] for e in events] == ["before", "after"]
    assert dropped.values == {(intake.source, "decode_error"): 1}


def test_stream_frames_make_the_same_events_as_admit(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    frames = [f for f in [*SEEDS, *mutations(rng, 500)] if f]
    native, reference = make_intake(rate=200.0, burst=300), make_intake(rate=200.0, burst=300)
    ip = "10.1.3.7"
    d1 = Registry().counter("dropped", "", ["source", "reason"])
    d2 = Registry().counter("dropped", "", ["source", "reason"])
    got = native.frames(frames, ip, native.profile(ip), NOW, RAW_MAX, d1)
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        prof = reference.profile(ip)
        want = [e for f in frames if (e := reference.admit(f, ip, prof, NOW, d2, "frame"))]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert orjson.dumps(g.fields) == orjson.dumps(w.fields), g.raw
        assert g.line == reference_line(w)
    assert d1.values == d2.values
    assert native.parse_errors.values == reference.parse_errors.values
    assert native.decoded.values == reference.decoded.values


def test_stream_takes_and_decodes_frames_as_the_reference_framer_and_admit_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    frames = [f for f in [*SEEDS, *mutations(rng, 400)] if f and b"\n" not in f]
    # LF and octet-counted frames mixed, with blank separators and a bad count among them.
    wire = b"".join(
        (b"%d %s" % (len(f), f) if k % 3 else f + b"\n") + (b"\n" if k % 7 == 0 else b"")
        for k, f in enumerate(frames)
    )
    wire += b"00 bad\n<13>tail line\n"
    native, reference = make_intake(rate=150.0, burst=250), make_intake(rate=150.0, burst=250)
    ip = "10.1.3.7"
    d1 = Registry().counter("dropped", "", ["source", "reason"])
    d2 = Registry().counter("dropped", "", ["source", "reason"])
    framer = dataplane.native.SyslogFramer(4096, 8)  # type: ignore[union-attr]
    ref_framer = SyslogFramer(4096, 8)
    got: list[Event] = []
    taken = 0
    prof = native.profile(ip)
    for i in range(0, len(wire), 1000):  # reads that cut frames anywhere
        framer.feed(wire[i : i + 1000])
        ref_framer.feed(wire[i : i + 1000])
        while True:
            events, n, line_bytes = native.stream(framer, 37, ip, prof, NOW, RAW_MAX, d1, "tcp-x")
            assert line_bytes == sum(len(e.line) for e in events)
            assert all(e.listener == "tcp-x" for e in events)
            got.extend(events)
            taken += n
            if n < 37:
                break
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        ref_prof = reference.profile(ip)
        want = [e for f in ref_framer if (e := reference.admit(f, ip, ref_prof, NOW, d2, "frame"))]
    assert taken == ref_framer.frames and framer.errors == ref_framer.errors
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g.raw == w.raw and g.timestamp == w.timestamp
        assert g.line == reference_line(w)
    assert d1.values == d2.values
    assert native.parse_errors.values == reference.parse_errors.values
    assert native.decoded.values == reference.decoded.values


def test_a_batch_event_holds_no_more_memory_than_the_reference_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # orjson's output buffer comes back unshrunk (4-8 KiB); the batch path copies the line to
    # its size as encode_line does, or each queued event would hold that slack.
    frames = [b"<13>Nov 29 10:00:00 h app[1]: " + b"m%d " % k + b"x" * 600 for k in range(64)]
    native, reference = make_intake(), make_intake()
    ip = "10.1.3.7"
    dropped = Registry().counter("dropped", "", ["source", "reason"])

    def held(make: Any) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = make()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(kept) == len(frames)
        return (after - before) / len(kept)

    got = held(lambda: native.frames(frames, ip, native.profile(ip), NOW, RAW_MAX, dropped))
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        prof = reference.profile(ip)

        def one_by_one() -> list[Event]:
            out = []
            for f in frames:
                e = reference.admit(f, ip, prof, NOW, dropped, "frame")
                assert e is not None
                e.line = encode_line_reference(e.timestamp, e.created, e.module, e.fields, e.raw)
                out.append(e)
            return out

        want = held(one_by_one)
    # (The slack alone would be 3-7 KiB more per event.)
    assert got < want + 1024, f"{got:.0f} bytes per batch event, {want:.0f} per reference event"


def test_a_panic_costs_only_its_message_and_is_counted() -> None:
    batch = [(f"<13>1 - h sshd 1 - - line {k}".encode(), ("192.0.2.9", 1)) for k in range(3)]
    intake = make_intake()
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    before = dataplane.native_panics()
    intake._batch.inject_panic()
    events = intake.datagrams(batch, NOW, 8192, RAW_MAX, dropped, truncated)
    assert [e.fields["message"] for e in events] == ["line 1", "line 2"]
    assert dropped.values == {(intake.source, "decode_error"): 1}
    assert dataplane.native_panics() == before + 1


def test_a_registry_subclass_selects_as_it_says() -> None:
    """The batch walks ``VendorRegistry``'s own tables; a subclass may select otherwise, so
    its ``decode`` is called."""

    class Everything(VendorRegistry):
        def decode(self, msg: Any, fields: dict[str, Any], hint: Any = None) -> str:
            fields["labels.seen"] = True
            return "everything"

    cfg = SyslogSource(listen="127.0.0.1:0", name="batch-test")
    intake = SyslogIntake(cfg, [], Registry(), "udp", Everything(list(BUILTIN)))
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    batch = [(b"<13>Aug  7 10:00:00 host sshd[1]: Failed password", ("10.0.0.9", 1))]
    (event,) = intake.datagrams(batch, NOW, 8192, RAW_MAX, dropped, truncated)
    assert event.fields["event.dataset"] == "everything" and event.fields["labels.seen"]


FORTIGATE_VPN = (
    b"<189>date=2016-06-14 time=12:22:01 devname=FW1 logid=0101037141 type=event subtype=vpn"
    b' action=tunnel-up user="bob" remip=192.0.2.%d'
)


@pytest.mark.parametrize(
    ("line", "dataset"),
    [(FORTIGATE_VPN, "fortigate"), (SSHD_FAILED, "linux_auth")],
    ids=["decoder-file-constant", "sshd-one-item-list"],
)
def test_a_decoders_constant_list_is_each_events_own_list(line: bytes, dataset: str) -> None:
    """The lists a decoder sets the same for every message (a decoder file's constants,
    FortiGate's VPN ``event.category``; the sshd decoder's one-item lists) are shared by the
    records the batch makes and copied when Python first reads an event's fields: each
    event's list is its own, and changing it changes no other event's, nor the list a later
    message gets."""
    intake = make_intake()
    batch = [(line % k, ("192.0.2.9", 514)) for k in (1, 2, 3)]
    # the first message of a header shape makes its template, the others are records
    _, a, b = (e.fields for e in intake.datagrams(batch, NOW, 8192, RAW_MAX, *_counters()))
    assert a["event.dataset"] == dataset and isinstance(a["event.category"], list)
    assert a["event.category"] == b["event.category"]
    assert a["event.category"] is not b["event.category"]
    before = list(a["event.category"])
    a["event.category"].append("changed")
    (later,) = intake.datagrams([(line % 4, ("192.0.2.9", 514))], NOW, 8192, RAW_MAX, *_counters())
    assert b["event.category"] == before
    assert later.fields["event.category"] == before
    assert b"changed" not in later.line
