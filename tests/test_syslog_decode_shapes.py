"""RFC 3164 as network devices really send it: Cisco, ASA, AIX relays, zone-less stamps."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from appliance.protocols.syslog import decode_syslog

pytestmark = pytest.mark.usefixtures("backend")

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_cisco_sequence_number_and_device_stamp() -> None:
    m = decode_syslog(b"<189>4711: Nov 29 11:58:00.250 UTC: %SYS-5-CONFIG_I: Configured", NOW)
    assert (m.sequence, m.hostname, m.app_name) == (4711, None, None)
    assert m.timestamp == ts(2026, 11, 29, 11, 58, 0) + 0.25
    assert m.message == "%SYS-5-CONFIG_I: Configured"


def test_cisco_sequence_after_relay_header_and_unsynced_clock_star() -> None:
    m = decode_syslog(
        b"<189>Nov 29 11:59:00 10.0.0.1 88: *Mar  1 00:01:02.003: "
        b"%LINK-3-UPDOWN: Interface Gi0/1, changed state to up",
        NOW,
    )
    assert (m.hostname, m.sequence, m.app_name) == ("10.0.0.1", 88, None)
    assert m.timestamp == ts(2026, 11, 29, 11, 59, 0)  # the relay's stamp, not the unsynced one
    assert m.message.startswith("%LINK-3-UPDOWN: ")


def test_cisco_mnemonic_is_not_taken_for_a_tag() -> None:
    m = decode_syslog(b"<187>Nov 29 11:59:00 sw1 %LINK-3-UPDOWN: Interface Gi0/2", NOW)
    assert (m.hostname, m.app_name, m.message) == ("sw1", None, "%LINK-3-UPDOWN: Interface Gi0/2")


def test_cisco_uptime_stamp_is_dropped_from_the_text() -> None:
    m = decode_syslog(b"<187>00:00:46: %LINK-3-UPDOWN: Interface Po1, changed state to up", NOW)
    assert m.app_name is None
    assert m.message.startswith("%LINK-3-UPDOWN")


def test_asa_stamp_with_year_and_trailing_colon() -> None:
    m = decode_syslog(b"<166>Oct 03 2018 17:34:08: %ASA-6-302013: Built", NOW)
    assert m.timestamp == ts(2018, 10, 3, 17, 34, 8)
    assert m.message == "%ASA-6-302013: Built"


def test_aix_message_forwarded_from_names_the_origin_host() -> None:
    m = decode_syslog(b"<38>Nov 29 11:59:00 Message forwarded from aix7: sshd[301]: Accepted", NOW)
    assert (m.hostname, m.app_name, m.procid, m.message) == ("aix7", "sshd", "301", "Accepted")


def test_sender_time_zone_applies_to_zone_less_stamps() -> None:
    m = decode_syslog(b"<13>Nov 29 13:00:00 h app: x", NOW, ZoneInfo("Europe/Paris"))
    assert m.timestamp == ts(2026, 11, 29, 12, 0, 0)


def test_iso_stamp_with_a_space_instead_of_t() -> None:
    m = decode_syslog(b"2020-03-23 06:47:42.801612-0700  localhost sshd[3186]: hello", NOW)
    assert m.timestamp == ts(2020, 3, 23, 13, 47, 42) + 0.801612
    assert (m.hostname, m.app_name, m.message) == ("localhost", "sshd", "hello")


def test_unknown_syslog_version_is_flagged_and_kept() -> None:
    m = decode_syslog(b"<13>2 2026-11-29T10:00:00Z h app - - - body", NOW)
    assert "version_unsupported" in m.errors
    assert "body" in m.message


def test_memoised_stamp_still_respects_each_sender_zone() -> None:
    line = b"<13>Nov 29 13:00:00 h app: x"
    utc = decode_syslog(line, NOW, ZoneInfo("UTC"))
    paris = decode_syslog(line, NOW, ZoneInfo("Europe/Paris"))
    assert (utc.timestamp, paris.timestamp) == (ts(2026, 11, 29, 13), ts(2026, 11, 29, 12))


def test_short_digit_run_after_the_clock_is_not_a_year() -> None:
    m = decode_syslog(b"Jul  7 08:06:12 2\r", NOW)
    assert m.timestamp is not None
    assert m.message == "2"
