"""An event the native batch decode makes holds its fields as a record (the header
template's keys, its own values, the decoders' items after them) until Python first reads
``Event.fields``: that read makes the same dict the decode made before, kept from then on, and
the native readers (the rules, the intel pre-filter) give the same answers from the record as
from the dict."""

from __future__ import annotations

import calendar
import gc
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.correlate import Engine
from appliance.event import Event
from appliance.metrics import Registry
from appliance.protocols.syslog import decode
from appliance.protocols.syslog.vendors import BUILTIN, VendorRegistry
from appliance.protocols.syslog.vendors.declarative import load_file
from appliance.sources.syslog_intake import SyslogIntake
from appliance.store.segments import encode_line_reference
from tests.conftest import syslog_corpus_lines
from tests.ruletools import builtin

pytestmark = pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")

MAX_ITEMS = 48  # a record's bound (python_record.rs)
NOW = calendar.timegm((2027, 1, 5, 10, 1, 0)) + 0.5  # a minute after the lines' time
SSHD = "<38>Jan  5 10:00:{s:02d} srv1 sshd[{pid}]: Failed password for {user} from {ip} port 5 ssh2"
LINES = [
    *(
        SSHD.format(s=k % 60, pid=100 + k, user=f"u{k % 7}", ip=f"198.51.100.{k % 3}").encode()
        for k in range(40)
    ),
    b'<13>1 2026-12-04T13:00:00Z h app 1 ID7 [x@1 a="b"] text',
    b"<86>Jan  5 10:00:00 srv1 sshd[9]: Accepted publickey for ops from 192.0.2.7 port 2 ssh2",
    b"<134>%ASA-6-302013: Built inbound TCP connection 1 for outside:203.0.113.9/443"
    b" (203.0.113.9/443) to inside:10.0.0.5/51000 (10.0.0.5/51000)",
    b"<14>Jan  5 10:00:00 plain message without a program",
]


def intake(**sender: Any) -> SyslogIntake:
    metrics = Registry()
    senders = [SyslogSender(networks=["127.0.0.0/8"], **sender)] if sender else []
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["127.0.0.0/8"], rate_limit=0.0)
    return SyslogIntake(cfg, senders, metrics, "udp")


def batch_events(source: SyslogIntake | None = None, lines: list[bytes] = LINES) -> list[Event]:
    """The lines decoded by the native batch path (twice over, so that every header shape
    has its template and the second pass is made of records)."""
    source = source or intake()
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    batch = [(line, ("127.0.0.1", 514)) for line in lines]
    out: list[Event] = []
    for _ in range(2):
        out = source.datagrams(batch, NOW, 8192, 8192, dropped, truncated)
    assert len(out) == len(lines)
    return out


def reference_events(
    monkeypatch: pytest.MonkeyPatch, lines: list[bytes] = LINES, source: SyslogIntake | None = None
) -> list[Event]:
    source = source or intake()
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    with monkeypatch.context() as m:
        m.setattr(decode, "_native", None)
        got = [source.datagram(line, "127.0.0.1", NOW, 8192, dropped, truncated) for line in lines]
    return [e for e in got if e is not None]


def holds_record(ev: Event) -> bool:
    """Whether the event still holds its record (what the garbage collector sees of it)."""
    return any(type(r).__name__ == "FieldsRecord" for r in gc.get_referents(ev))


def test_a_batch_event_holds_a_record_until_python_reads_its_fields() -> None:
    events = batch_events()[:40]  # the sshd lines: no Python decoder reads them
    assert all(holds_record(e) for e in events)
    assert events[0].fields
    assert not holds_record(events[0]) and holds_record(events[1])


def test_the_fields_read_from_python_are_the_reference_decodes_items_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got, want = batch_events(), reference_events(monkeypatch)
    assert [list(e.fields.items()) for e in got] == [list(e.fields.items()) for e in want]


@pytest.mark.corpus
def test_every_corpus_line_reads_back_the_reference_items_in_order_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # half the corpus' lines are records here (no sender profile, so no static fields)
    lines = list(syslog_corpus_lines())
    if not lines:
        pytest.skip("corpus not present")
    got = batch_events(lines=lines)
    want = reference_events(monkeypatch, lines)
    assert sum(map(holds_record, got)) > len(got) // 3
    for g, w in zip(got, want, strict=True):
        assert list(g.fields.items()) == list(w.fields.items()), g.raw
        assert g.line == encode_line_reference(
            w.timestamp, w.created, w.module, w.fields, w.raw[:8192]
        ), g.raw


def wide_decoder(tmp_path: Path) -> VendorRegistry:
    """The built-in decoders and a decoder file (native) mapping 40 key=value pairs."""
    mapping = "\n".join(f'"labels.k{i:02d}" = "k{i:02d}"' for i in range(40))
    path = tmp_path / "acme_wide.toml"
    path.write_text(
        'name = "acme_wide"\ndescription = "many fields"\nprovenance = "made up for the tests"\n'
        '[select]\nprefixes = ["wide "]\n[[parse]]\nkv = { start = "k00=" }\n'
        f"[fields]\n{mapping}\n"
    )
    return VendorRegistry([*BUILTIN, load_file(path).decoder])


@pytest.mark.parametrize("pairs", [20, 40])
def test_a_native_decoder_past_the_records_bound_has_the_dict_made_part_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pairs: int
) -> None:
    # 20 pairs stay a record; 40 fill it (MAX_ITEMS) while the decoder file sets them, and
    # the rest go into the dict made from it then
    registry = wide_decoder(tmp_path)
    kv = " ".join(f"k{i:02d}=v{i}" for i in range(pairs))
    lines = [
        f"<13>1 2026-12-04T12:00:00Z host - - - - wide {kv} k99={n}".encode() for n in range(3)
    ]
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["127.0.0.0/8"], rate_limit=0.0)
    native = SyslogIntake(cfg, [], Registry(), "udp", registry)
    reference = SyslogIntake(cfg, [], Registry(), "udp", registry)
    past_bound = dataplane.records_past_bound()
    got = batch_events(native, lines)
    assert [holds_record(e) for e in got] == [pairs == 20] * len(lines)  # before any read
    # counted once a line it passes (batch_events decodes the lines twice)
    assert dataplane.records_past_bound() - past_bound == (2 * len(lines) if pairs == 40 else 0)
    want = reference_events(monkeypatch, lines, reference)
    assert {e.fields["event.dataset"] for e in got} == {"acme_wide"}
    assert (len(got[0].fields) > MAX_ITEMS) == (pairs == 40)
    for g, w in zip(got, want, strict=True):
        assert list(g.fields.items()) == list(w.fields.items())
        assert g.line == encode_line_reference(
            w.timestamp, w.created, w.module, w.fields, w.raw[:8192]
        )


def test_the_dict_is_made_once_and_what_python_changes_in_it_stays() -> None:
    ev = batch_events()[0]
    fields = ev.fields
    assert ev.fields is fields
    fields["labels.note"] = "kept"
    assert ev.get("labels.note") == "kept" and ev.fields["labels.note"] == "kept"


def test_the_stored_line_is_the_json_of_the_fields_as_python_reads_them() -> None:
    for ev in batch_events():
        line = orjson.loads(ev.line)
        assert line[3] == ev.fields and list(line[3]) == list(ev.fields)


def test_events_of_one_header_shape_do_not_share_their_values() -> None:
    events = batch_events()[:3]
    assert [e.fields["process.pid"] for e in events] == [100, 101, 102]
    events[0].fields["log.level"] = "changed"
    assert events[1].fields["log.level"] != "changed"


def test_a_senders_static_fields_are_set_after_the_header_as_the_reference_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = batch_events(intake(site="branch", tags=["dmz"]))
    assert all(e.fields["labels.site"] == "branch" for e in got)
    assert all(e.fields["tags"][-1] == "dmz" for e in got)
    assert all(orjson.loads(e.line)[3] == e.fields for e in got)


def test_the_rules_answer_the_same_from_the_record_as_from_the_dict() -> None:
    def alerts(events: list[Event]) -> list[tuple[Any, ...]]:
        eng = Engine(builtin())
        # the first sight of each candidate set is registered from Python (it reads those
        # events' fields): a batch of each kind of line first, too few to fire
        first = [SSHD.format(s=0, pid=1, user="w", ip="192.0.2.50").encode(), *LINES[40:]]
        eng.observe_batch(batch_events(lines=first), NOW, lambda e: None)
        got = eng.observe_batch(events, NOW, lambda e: None)
        return sorted(
            (a.rule.id, a.kind, orjson.dumps(a.group), a.count, a.suppressed) for a in got
        )

    fresh = batch_events()
    read = batch_events()
    for e in read:
        assert isinstance(e.fields, dict)
    want = alerts(read)
    assert want, "the sshd failures fire a brute-force rule"
    assert alerts(fresh) == want
    assert sum(map(holds_record, fresh)) > len(fresh) // 2, "the rules read the records"


def test_the_intel_prefilter_picks_the_same_events_from_the_record_as_from_the_dict() -> None:
    select = dataplane.native.intel_select
    args = ({None, "198.51.100.1"}, "source.ip", "destination.ip", ("threat.indicator.ip",))
    fresh, read = batch_events(), batch_events()
    for e in read:
        assert isinstance(e.fields, dict)
    assert select(fresh, *args) == select(read, *args) is not None
