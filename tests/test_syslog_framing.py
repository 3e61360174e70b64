"""RFC 6587 framing, sans-I/O: every case is fed whole and byte at a time with the same result."""

from __future__ import annotations

import pytest

from appliance.protocols.syslog.framing import new_framer

pytestmark = pytest.mark.usefixtures("backend")


def frames_of(stream: bytes, *, chunk: int | None = None, **kw: int) -> tuple[list[bytes], dict]:
    f = new_framer(**kw)
    out: list[bytes] = []
    step = chunk or len(stream) or 1
    for i in range(0, len(stream), step):
        f.feed(stream[i : i + step])
        out.extend(f)
    return out, f.errors


def both_ways(stream: bytes, **kw: int) -> tuple[list[bytes], dict]:
    whole = frames_of(stream, **kw)
    bytewise = frames_of(stream, chunk=1, **kw)
    assert whole == bytewise
    return whole


def test_octet_counted_frames() -> None:
    assert both_ways(b"5 <13>a7 <13>bcd") == ([b"<13>a", b"<13>bcd"], {})


def test_lf_and_nul_delimited_frames() -> None:
    assert both_ways(b"<13>one\n<13>two\x00<13>three\r\n") == (
        [b"<13>one", b"<13>two", b"<13>three"],
        {},
    )


def test_mixed_framing_on_one_connection() -> None:
    stream = b"<13>lf framed\n12 <13>counted\n<13>again\n3 <1>"
    assert both_ways(stream) == ([b"<13>lf framed", b"<13>counted\n", b"<13>again", b"<1>"], {})


def test_octet_count_may_hold_lf_inside_the_message() -> None:
    assert both_ways(b"9 <13>a\nb\nc") == ([b"<13>a\nb\nc"], {})


def test_leading_zeros_in_count_are_read_as_openbsd_sends_them() -> None:
    assert both_ways(b"000002 ab<13>x\n") == ([b"ab", b"<13>x"], {})


def test_digit_run_longer_than_the_cap_is_skipped_to_next_lf() -> None:
    frames, errors = both_ways(b"99999999999999999999 <13>evil\n<13>good\n")
    assert frames == [b"<13>good"]
    assert errors == {"octet_count_invalid": 1}


def test_zero_count_is_counted_and_skipped() -> None:
    assert both_ways(b"0 4 <1>x") == ([b"<1>x"], {"octet_count_zero": 1})


def test_count_above_max_keeps_the_head_and_resyncs_after_the_frame() -> None:
    body = b"<13>" + b"A" * 96
    frames, errors = both_ways(b"100 " + body + b"5 <13>z", max_length=10)
    assert frames == [body[:10], b"<13>z"]
    assert errors == {"frame_too_long": 1}


def test_overlong_line_is_cut_and_the_rest_skipped_to_the_lf() -> None:
    frames, errors = both_ways(b"<13>" + b"B" * 1000 + b"\n<13>next\n", max_length=64)
    assert frames == [(b"<13>" + b"B" * 60), b"<13>next"]
    assert errors == {"frame_too_long": 1}


def test_buffer_stays_bounded_on_a_megabyte_line() -> None:
    f = new_framer(max_length=1024)
    for _ in range(1024):
        f.feed(b"C" * 1024)
        list(f)
        assert f.buffered <= 2048
    f.feed(b"\n<13>ok\n")
    assert list(f) == [b"<13>ok"]
    assert f.errors == {"frame_too_long": 1}


def test_line_starting_with_a_digit_is_non_transparent() -> None:
    stream = b"05/30-19:09:10.917356  [**] alert\n2026-01-01T00:00:00Z host x\n"
    assert both_ways(stream) == (
        [b"05/30-19:09:10.917356  [**] alert", b"2026-01-01T00:00:00Z host x"],
        {},
    )


def test_incomplete_frame_is_held_not_returned() -> None:
    f = new_framer()
    f.feed(b"20 <13>partial")
    assert list(f) == []
    assert f.buffered == len(b"20 <13>partial")
    f.feed(b"\n<13>hal")
    assert list(f) == []


@pytest.mark.parametrize("junk", [b"\n\n\n", b"\r\n \x00", b" "])
def test_blank_separators_yield_nothing(junk: bytes) -> None:
    assert both_ways(junk + b"<13>x\n" + junk) == ([b"<13>x"], {})


def test_frames_counter_counts_returned_frames() -> None:
    f = new_framer()
    f.feed(b"<1>a\n<1>b\n")
    assert len(list(f)) == 2 and f.frames == 2
