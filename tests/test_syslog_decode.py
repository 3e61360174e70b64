"""RFC 5424 / RFC 3164 header decoding: real shapes, edge cases, hostile input."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields

pytestmark = pytest.mark.usefixtures("backend")

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_rfc5424_example_from_the_rfc() -> None:
    m = decode_syslog(
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
        b'[examplePriority@32473 class="high"] \xef\xbb\xbfAn application event',
        NOW,
    )
    assert (m.format, m.facility, m.severity, m.version) == ("rfc5424", 20, 5, 1)
    assert m.timestamp == pytest.approx(ts(2003, 10, 11, 22, 14, 15) + 0.003)
    assert (m.hostname, m.app_name, m.procid, m.msgid) == (
        "mymachine.example.com",
        "evntslog",
        None,
        "ID47",
    )
    assert m.structured_data == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
        "examplePriority@32473": {"class": "high"},
    }
    assert m.message == "An application event"
    assert m.errors == []


def test_rfc5424_all_nil() -> None:
    m = decode_syslog(b"<13>1 - - - - - -", NOW)
    assert (m.timestamp, m.hostname, m.app_name, m.structured_data, m.message) == (
        None,
        None,
        None,
        None,
        "",
    )


def test_rfc5424_time_offset_is_applied() -> None:
    m = decode_syslog(b"<13>1 2026-01-01T10:00:00+02:00 h a 1 m - x", NOW)
    assert m.timestamp == ts(2026, 1, 1, 8, 0, 0)


def test_rfc5424_sd_escapes_are_undone() -> None:
    m = decode_syslog(b'<13>1 - h a - - [x@1 a="q\\"b\\]c\\\\d\\e"] m', NOW)
    assert m.structured_data == {"x@1": {"a": 'q"b]c\\d\\e'}}
    assert m.message == "m"


def test_rfc5424_duplicate_sd_id_keeps_first_and_flags() -> None:
    m = decode_syslog(b'<13>1 - h a - - [x@1 a="1"][x@1 a="2"] m', NOW)
    assert m.structured_data == {"x@1": {"a": "1"}}
    assert "sd_duplicate_id" in m.errors


def test_rfc5424_unterminated_sd_keeps_text_as_message() -> None:
    m = decode_syslog(b'<13>1 - h a - - [x@1 a="1 rest of it', NOW)
    assert "sd_unterminated" in m.errors
    assert "rest of it" in m.message


def test_rfc5424_bad_timestamp_is_flagged_not_fatal() -> None:
    for stamp in (b"2024-13-45T00:00:00Z", b"2024-01-01T23:59:60Z"):
        m = decode_syslog(b"<13>1 " + stamp + b" h a - - - hello", NOW)
        assert m.timestamp is None
        assert "timestamp_invalid" in m.errors
        assert m.message == "hello"


def test_rfc5424_overlong_header_fields_are_cut_and_flagged() -> None:
    m = decode_syslog(b"<13>1 - " + b"h" * 256 + b" " + b"a" * 49 + b" - - - x", NOW)
    assert len(m.hostname or "") == 255 and len(m.app_name or "") == 48
    assert {"hostname_too_long", "app_name_too_long"} <= set(m.errors)


def test_rfc5424_many_sd_params_are_bounded() -> None:
    params = b" ".join(b'p%d="v"' % i for i in range(10_000))
    m = decode_syslog(b"<13>1 - h a - - [x@1 " + params + b"] m", NOW)
    assert m.structured_data is not None and len(m.structured_data["x@1"]) == 128
    assert "sd_too_many_params" in m.errors


def test_rfc3164_classic() -> None:
    m = decode_syslog(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick", NOW)
    assert (m.format, m.facility, m.severity) == ("rfc3164", 4, 2)
    assert m.timestamp == ts(2026, 10, 11, 22, 14, 15)
    assert (m.hostname, m.app_name, m.procid) == ("mymachine", "su", None)
    assert m.message == "'su root' failed for lonvick"


def test_rfc3164_pid_and_single_digit_day() -> None:
    m = decode_syslog(b"<38>Aug  7 01:02:03 fw sshd[4242]: Accepted password", NOW)
    assert (m.app_name, m.procid, m.timestamp) == ("sshd", "4242", ts(2026, 8, 7, 1, 2, 3))
    m = decode_syslog(b"<38>Aug 7 01:02:03 fw sshd[4242]: Accepted password", NOW)
    assert m.timestamp == ts(2026, 8, 7, 1, 2, 3)


def test_rfc3164_year_rolls_back_across_new_year() -> None:
    jan1 = ts(2027, 1, 1, 0, 0, 5)
    m = decode_syslog(b"<13>Dec 31 23:59:59 h p: x", jan1)
    assert m.timestamp == ts(2026, 12, 31, 23, 59, 59)


def test_rfc3164_year_rolls_forward_for_a_fast_clock() -> None:
    dec31 = ts(2026, 12, 31, 23, 59, 58)
    m = decode_syslog(b"<13>Jan  1 00:00:01 h p: x", dec31)
    assert m.timestamp == ts(2027, 1, 1, 0, 0, 1)


def test_rfc3164_with_rfc3339_stamp() -> None:
    m = decode_syslog(b"<38>2026-11-29T04:58:39.123+01:00 localhost prg[12]: seq: 1", NOW)
    assert m.timestamp == pytest.approx(ts(2026, 11, 29, 3, 58, 39) + 0.123)
    assert (m.hostname, m.app_name, m.procid, m.message) == ("localhost", "prg", "12", "seq: 1")


def test_rfc3164_without_hostname() -> None:
    m = decode_syslog(b"<13>Nov 29 10:00:00 sshd[1]: hello", NOW)
    assert (m.hostname, m.app_name, m.message) == (None, "sshd", "hello")


def test_rfc3164_without_pri_assumes_user_notice() -> None:
    m = decode_syslog(b"Nov 29 10:00:00 host app: hi", NOW)
    assert (m.facility, m.severity, m.hostname) == (1, 5, "host")
    assert "pri_missing" in m.errors


@pytest.mark.parametrize(
    "line", [b"<>x", b"<999>x", b"<-1>x", b"<2147483648>x", b"<13 x", b"<013>x"]
)
def test_bad_pri_is_flagged_and_the_whole_line_kept(line: bytes) -> None:
    m = decode_syslog(line, NOW)
    assert "pri_invalid" in m.errors
    assert (m.facility, m.severity) == (1, 5)
    assert m.message == line.decode()


def test_pri_only() -> None:
    m = decode_syslog(b"<13>", NOW)
    assert (m.facility, m.severity, m.message) == (1, 5, "")


@pytest.mark.parametrize("size", [0, 1, 480, 2048, 65507])
def test_any_size_decodes(size: int) -> None:
    m = decode_syslog(b"x" * size, NOW)
    assert len(m.message) == size


def test_invalid_utf8_and_controls_are_kept_not_fatal() -> None:
    m = decode_syslog(b"<13>Nov 29 10:00:00 h a: \xff\xfe \x1b[31mred\x00 \xe2\x80\xae", NOW)
    assert "\x1b[31mred" in m.message
    assert "\ufffd" in m.message


def test_trailing_newline_and_nul_are_framing_not_content() -> None:
    assert decode_syslog(b"<13>Nov 29 10:00:00 h a: x\n", NOW).message == "x"
    assert decode_syslog(b"<13>Nov 29 10:00:00 h a: x\x00", NOW).message == "x"


def test_rfc3164_stale_stamp_is_never_put_in_the_next_year() -> None:
    dec4 = ts(2026, 12, 4, 13, 0, 0)
    m = decode_syslog(b"<13>May  1 10:00:00 h p: stale", dec4)
    assert m.timestamp == ts(2026, 5, 1, 10, 0, 0)


def test_rfc3164_stamp_a_day_ahead_stays_in_this_year() -> None:
    dec4 = ts(2026, 12, 4, 13, 0, 0)
    m = decode_syslog(b"<13>Dec  5 10:00:00 h p: fast clock", dec4)
    assert m.timestamp == ts(2026, 12, 5, 10, 0, 0)


def test_rfc3164_new_year_in_the_senders_zone() -> None:
    # 23:59:58 on Dec 31 in Berlin is 22:59:58 UTC: the sender's "Jan 1 00:00:01" is new year.
    berlin = ZoneInfo("Europe/Berlin")
    now = ts(2026, 12, 31, 22, 59, 58)
    m = decode_syslog(b"<13>Jan  1 00:00:01 h p: x", now, berlin)
    assert m.timestamp == datetime(2027, 1, 1, 0, 0, 1, tzinfo=berlin).timestamp()
    m = decode_syslog(b"<13>Dec 31 23:59:59 h p: x", ts(2026, 12, 31, 23, 30, 0), berlin)
    assert m.timestamp == datetime(2026, 12, 31, 23, 59, 59, tzinfo=berlin).timestamp()


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        (b"1764853200", 1764853200.0),
        (b"1764853200.250", 1764853200.25),
        (b"1764853200250", 1764853200.25),
    ],
)
def test_rfc5424_timestamp_as_epoch_seconds_or_milliseconds_is_accepted(
    stamp: bytes, epoch: float
) -> None:
    m = decode_syslog(b"<134>1 " + stamp + b" fw01 app - - - hello", NOW)
    assert (m.timestamp, m.errors, m.hostname, m.message) == (epoch, [], "fw01", "hello")


@pytest.mark.parametrize("stamp", [b"17648532", b"17648532001234", b"1764853200.", b"1e9"])
def test_rfc5424_digits_that_are_no_epoch_are_an_invalid_timestamp(stamp: bytes) -> None:
    m = decode_syslog(b"<134>1 " + stamp + b" fw01 app - - - hello", NOW)
    assert (m.timestamp, m.errors) == (None, ["timestamp_invalid"])


def test_bare_pri_followed_by_spaces_keeps_the_tag_and_message() -> None:
    m = decode_syslog(b"<13>   sshd[77]: Accepted password", NOW)
    assert (m.app_name, m.procid, m.message) == ("sshd", "77", "Accepted password")
    assert m.errors == ["timestamp_missing"]


@pytest.mark.parametrize(
    "line",
    [
        "<13>²: x",  # Cisco sequence number
        "<13>Aug  7 1²:00:00 host app: y",  # clock
        "<13>Aug  7 10:00:00.²3 host app: y",  # fraction
        "<13>Aug  7 10:00:00 ²024 host app: y",  # year after the clock
        "<13>Oct 03 ²018 17:34:08: %ASA-6-302013: x",  # ASA year
        "<13>Aug  7 10:00:00 host 1²: *Mar  1 00:00:00.123: %LINK-3-UPDOWN: x",
        "<13>Aug  7 10:00:00 host app[²]: pid",
        "<13>1 2026-01-05T10:00:00Z h app ² - - pid",
    ],
)
def test_unicode_digits_where_ascii_digits_go_do_not_raise(line: str) -> None:
    """Found by ``scripts/fuzz syslog-header`` once its dictionary had Unicode digits: "²" is
    a digit to ``str.isdigit`` but not to ``int``, so a stamp, Cisco sequence number or PID
    holding one raised ValueError out of ``decode_syslog`` (non-ASCII RFC 3164 lines go to the
    Python reference on both backends) or out of ``syslog_fields``."""
    msg = decode_syslog(line.encode(), NOW)
    assert msg.message
    assert "²" not in str(msg.timestamp) and msg.sequence is None
    fields = syslog_fields(msg, "192.0.2.1")
    assert "process.pid" not in fields
