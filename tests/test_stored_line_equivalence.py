"""The native stored-line writer (``segments.encode_line`` on the native backend) against the
reference (``encode_line_reference``, orjson): the same bytes for every event, whether the
writer wrote the line itself or handed it to the reference.

The line is the store's contract: the query path's ``instr()`` prefilters and the segment
search index look for orjson's bytes, so a float written ``1e+16`` by one and ``1e16`` by the
other, or a character escaped by one only, would hide events from searches."""

from __future__ import annotations

import ipaddress
import math
import random
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import dataplane
from appliance.store.segments import encode_line, encode_line_reference

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

TS = 1764912766.123456

SYSLOG_FIELDS: dict[str, Any] = {
    "message": "Failed password for invalid user admin from 203.0.113.7 port 51234 ssh2",
    "event.kind": "event",
    "event.dataset": "linux.auth",
    "observer.ip": "127.0.0.1",
    "log.level": "info",
    "log.syslog.priority": 38,
    "log.syslog.severity.code": 6,
    "host.hostname": "bench-host",
    "process.pid": 4242,
    "log.syslog.structured_data": {"meta@1": {"seq": "1", "q": 'a "b" \\ c'}},
    "tags": ["syslog_no_timestamp"],
    "source.port": 51234,
    "event.risk_score": 12.5,
    "user.roles": None,
    "event.outcome": True,
}


def both(
    fields: Any, raw: bytes = b"<38>raw", ts: Any = TS, created: Any = TS + 0.25
) -> tuple[bytes, bytes]:
    return (
        encode_line(ts, created, "syslog", fields, raw),
        encode_line_reference(ts, created, "syslog", fields, raw),
    )


def writes(fields: Any, raw: bytes = b"<38>raw", ts: Any = TS, created: Any = TS) -> bool:
    return bool(encode_line.writes(ts, created, "syslog", fields, raw))  # type: ignore[attr-defined]


def test_a_syslog_events_line_is_the_references_and_written_natively() -> None:
    native, reference = both(SYSLOG_FIELDS, b"<38>1 2026-12-05T04:32:46Z h p 1 - - \xef\xbb\xbfx\n")
    assert native == reference
    assert writes(SYSLOG_FIELDS)


def test_an_empty_raw_is_null_as_in_the_reference() -> None:
    native, reference = both({"a": 1}, b"")
    assert native == reference
    assert native.endswith(b",null]")


def test_every_character_of_a_value_and_a_key_is_escaped_as_the_reference_escapes_it() -> None:
    text = "".join(chr(c) for c in range(0x100)) + "\u2028\u2029\ufeff\U0010ffff"
    native, reference = both({text: text, "k": [text]}, text.encode())
    assert native == reference
    assert writes({text: text}, text.encode())


def test_a_long_raw_text_with_escapes_throughout_is_the_references() -> None:
    raw = b'key="v\\al" \t\x01 ' * 2000  # 34 KB: the writer makes room a step at a time
    native, reference = both({"message": raw.decode()}, raw)
    assert native == reference
    assert writes({"message": raw.decode()}, raw)


def test_integers_to_the_edges_of_64_bits_are_the_references() -> None:
    for n in (0, -1, 2**31, -(2**63), 2**63 - 1, 2**63, 2**64 - 1):
        native, reference = both({"n": n})
        assert native == reference, n
        assert writes({"n": n})


def test_floats_across_every_magnitude_are_written_as_the_reference_writes_them() -> None:
    rng = random.Random(20261205)
    values = [0.0, -0.0, 1.0, 0.1, 1e-4, 1e15, 1e16, 1e-5, 5e-324, 1.7976931348623157e308]
    values += [math.nan, math.inf, -math.inf, 1e15 - 0.125, 99999999999999.98]
    for _ in range(20_000):  # random bit patterns: every exponent, subnormals, NaNs
        values.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
    for exp in range(-8, 17):  # and dense around each power of ten of the band's edges
        for _ in range(200):
            values.append(rng.uniform(0.5, 10) * 10.0**exp)
    for x in values:
        native, reference = both({"x": x, "y": [x]}, ts=x, created=-x)
        assert native == reference, repr(x)


def test_timestamps_with_microseconds_are_written_natively() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        ts = round(rng.uniform(1e9, 2e9), 6)
        assert writes({}, ts=ts, created=ts)
        native, reference = both({}, ts=ts, created=ts)
        assert native == reference


@pytest.mark.parametrize(
    "fields",
    [
        {"s": {"a", "b"}},  # _json_default's types
        {"b": b"\xffbytes"},
        {"ip": ipaddress.ip_address("192.0.2.1")},
        {1: "a key that is not text"},
        {"n": 2**64},  # past 64 bits: orjson's error, then the reference's
        {"x": 1e16},  # a float notation left to orjson
        {"deep": [[[[[[[[[["ten levels"]]]]]]]]]]},
        {"sub": type("Text", (str,), {})("a str subclass")},
    ],
    ids=["set", "bytes", "ipaddress", "int-key", "big-int", "float-1e16", "deep", "str-subclass"],
)
def test_values_the_writer_leaves_to_the_reference_get_the_references_line(
    fields: dict[Any, Any],
) -> None:
    assert not writes(fields)
    try:
        reference = encode_line_reference(TS, TS, "syslog", fields, b"raw")
    except Exception as exc:  # the reference's own error, raised by both alike
        with pytest.raises(type(exc)):
            encode_line(TS, TS, "syslog", fields, b"raw")
        return
    assert encode_line(TS, TS, "syslog", fields, b"raw") == reference


def test_raw_bytes_that_are_not_utf8_get_the_references_base64_form() -> None:
    assert not writes({}, b"\xff\xfe bad")
    native, reference = both({}, b"\xff\xfe bad")
    assert native == reference
    assert native.endswith(b'["//4gYmFk"]]')


def test_a_lone_surrogate_raises_the_references_error() -> None:
    with pytest.raises(Exception) as ref:
        encode_line_reference(TS, TS, "syslog", {"s": "\ud800"}, b"")
    with pytest.raises(type(ref.value)):
        encode_line(TS, TS, "syslog", {"s": "\ud800"}, b"")


_scalars = (
    st.text()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.dictionaries(st.text(max_size=20), _values, max_size=12), raw=st.binary(max_size=64)
)
def test_generated_events_get_the_references_line(fields: dict[str, Any], raw: bytes) -> None:
    try:
        reference = encode_line_reference(TS, TS, "syslog", fields, raw)
    except Exception as exc:
        with pytest.raises(type(exc)):
            encode_line(TS, TS, "syslog", fields, raw)
        return
    assert encode_line(TS, TS, "syslog", fields, raw) == reference
