"""The native data plane against the Python reference, message for message: every corpus line
and a few thousand generated hostile ones decode to the same ``SyslogMessage``, and every
generated stream, cut at random, frames to the same frames and error counts."""

from __future__ import annotations

import calendar
import copy
import random
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from appliance import dataplane
from appliance.protocols.syslog import decode
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.framing import SyslogFramer
from tests.conftest import CORPUS, syslog_corpus_lines

CORPUS_DIR = CORPUS / "syslog"

NOW = calendar.timegm((2026, 12, 4, 13, 0, 0))
ZONES = [None, UTC, timezone(timedelta(hours=-5)), ZoneInfo("Europe/Berlin")]

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)


def native_decoder() -> decode.Any:
    return decode._native or decode._native_header()


def assert_same(line: bytes, now: float = NOW, tz: object = None) -> None:
    native = native_decoder().decode(line, now, tz)
    reference = decode.decode_syslog_reference(line, now, tz)  # type: ignore[arg-type]
    if native is None:  # left to the reference: only RFC 3164 lines with non-ASCII text
        assert not line.isascii() or line.startswith(b"\xef\xbb\xbf"), line
        return
    assert native == reference, line
    both = native_decoder().decode_with_fields(line, now, tz, "192.0.2.7")
    if both is None:  # a non-ASCII PROCID: Python's Unicode isdigit decides process.pid
        assert reference.procid is not None and not reference.procid.isascii(), line
        return
    msg, fields = both
    assert msg == reference, line
    # The stored line is the fields' JSON: same keys, values and order.
    expected = syslog_fields(reference, "192.0.2.7")
    assert orjson.dumps(fields) == orjson.dumps(expected), line


@pytest.mark.corpus
def test_every_corpus_line_decodes_identically() -> None:
    n = 0
    for line in syslog_corpus_lines():
        assert_same(line)
        n += 1
    assert n > 1000


@pytest.mark.parametrize("tz", ZONES, ids=["local", "utc", "minus5", "berlin"])
def test_bsd_stamps_read_in_the_senders_zone_identically(tz: object) -> None:
    for line in (
        b"<13>Dec 31 23:59:59 host app: new year",
        b"<13>Jan  1 00:00:01 host app: x",
        b"<13>Feb 29 12:00:00 host app: leap",
        b"<13>Mar 31 02:30:00 host app: dst gap in Berlin",
        b"<13>Oct 25 02:30:00 host app: dst fold",
        b"<13>Oct 03 2018 17:34:08 asa : %ASA-6-302013: x",
        b"<13>Aug  7 10:00:00 2024 host x",
        b"<13>Aug  7 10:00:60 host leap second",
        b"<13>Aug 99 10:00:00 host bad day",
        b"<13>Aug  7 10:00:00.123456789 host frac",
        b"<13>Aug  7 10:00:00 0000 host year zero",
    ):
        assert_same(line, NOW, tz)


SEEDS = [
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
    b'<165>1 2003-10-11T22:14:15.003Z host app 12 ID1 [ex@1 a="1" b="x\\"y\\\\z\\]"][o@2 c=""] m',
    b"<13>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
    b"<13>1 - - - - - -",
    b'<13>1 2024-02-29T23:59:60Z h a p m [x@1 k="v"]\xef\xbb\xbfmsg',
    b"<13>Aug  7 10:00:00 host sshd[123]: Failed password for root from 10.0.0.1",
    b"<189>123: *Mar  1 00:00:00.123 UTC: %LINK-3-UPDOWN: Interface Gi0/1",
    b"<189>sw1 45: Mar  1 00:00:46: %SYS-5-CONFIG_I: Configured",
    b"<13>2024-01-05T10:00:00.123+01:00 host app: rfc3339 in 3164",
    b"<13>2020-03-23 06:47:42.801612-0700 host app: space stamp",
    b"<13>Aug  7 10:00:00 aix Message forwarded from relay: sshd: hi",
    b"<166>Oct 03 2018 17:34:08: %ASA-6-302013: Built outbound TCP connection",
    b"Aug  7 10:00:00 nohostpri",
    b"00:00:46: %LINK-3-UPDOWN: uptime stamp",
    b"<13>app[]: x",
    b"<13>%FAC-1-X: y",
    b"<13>2 2024-01-05T10:00:00Z h a p m - v2",
    b"<134>1 1764853200.123 fw01 app - - - epoch seconds",
    b"<134>1 1764853200123 fw01 app - - - epoch milliseconds",
    b"<13>   sshd[77]: bare PRI and spaces",
]
ALPHABET = [
    b" ",
    b"  ",
    b"[",
    b"]",
    b'"',
    b"\\",
    b"=",
    b":",
    b": ",
    b"-",
    b"<",
    b">",
    b"1",
    b"0",
    b"9",
    b"T",
    b"Z",
    b"+",
    b".",
    b"*",
    b"\n",
    b"\x00",
    b"\r",
    b"Jan",
    b"Aug ",
    b"2024",
    b"\xc3\xa9",
    b"\xff",
    b"\xef\xbb\xbf",
    b"a" * 40,
    b"%",
    b"[pid]",
    b"12: ",
]


def mutations(rng: random.Random, n: int) -> Iterator[bytes]:
    for _ in range(n):
        line = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            at = rng.randint(0, len(line))
            if op < 0.4:
                line[at:at] = rng.choice(ALPHABET)
            elif op < 0.7 and line:
                del line[at : at + rng.randint(1, 8)]
            elif op < 0.85 and at < len(line):
                line[at] = rng.randint(0, 255)
            else:
                line = line[:at]
        yield bytes(line)


def test_generated_hostile_lines_decode_identically() -> None:
    rng = random.Random(20261204)
    for i, line in enumerate(mutations(rng, 20000)):
        assert_same(line, NOW, ZONES[i % len(ZONES)])


def frames(framer: object, stream: bytes, cuts: list[int]) -> tuple[list[bytes], dict, object]:
    out: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        framer.feed(stream[start:cut])  # type: ignore[attr-defined]
        out.extend(iter(framer.next_frame, None))  # type: ignore[attr-defined]
        start = cut
    tail = framer.close()  # type: ignore[attr-defined]
    return out, dict(framer.errors), tail  # type: ignore[attr-defined]


def test_generated_streams_frame_identically_however_they_are_cut() -> None:
    rng = random.Random(6587)
    pieces = [
        b"<13>lf\n",
        b"5 <13>a",
        b"12 <13>counted\n",
        b"\x00",
        b"\r\n",
        b" ",
        b"0 ",
        b"7",
        b"99999999999999999999 evil",
        b"<13>" + b"x" * 300,
        b"300 ",
        b"2024-01-05T10:00:00 x\n",
        b"\n",
        b"3 <1>",
        b"abc",
        b"00002 ab",
    ]
    for _ in range(3000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(len(stream) + 1), k=min(len(stream), rng.randint(0, 6))))
        max_length, max_digits = rng.choice([(65536, 8), (64, 3), (16, 2)])
        native = frames(dataplane.native.SyslogFramer(max_length, max_digits), stream, cuts)  # type: ignore[union-attr]
        reference = frames(SyslogFramer(max_length, max_digits), stream, cuts)
        assert native == reference, (stream, cuts, max_length, max_digits)


KV_PIECES = [
    "a=1",
    " ",
    'b="x y"',
    "c=",
    "=",
    '"',
    "key.name-x=v",
    "\t",
    'd="open',
    "\x1c",
    "é=1",
    "srcip=203.0.113.7",
    'msg="Login failed"',
    "==",
    "x",
    "e=a=b",
]


def test_key_value_pairs_match_the_reference_in_content_and_order() -> None:
    from appliance.protocols.syslog.vendors.base import kv_pairs_reference

    rng = random.Random(4242)
    texts = [decode.decode_syslog_reference(line, NOW).message for line in SEEDS]
    for _ in range(5000):
        texts.append("".join(rng.choice(KV_PIECES) for _ in range(rng.randint(0, 14))))
    for text in texts:
        for limit in (256, 3):
            native = dataplane.native.kv_pairs(text, limit)  # type: ignore[union-attr]
            reference = kv_pairs_reference(text, limit)
            if native is None:  # non-ASCII: the reference's Unicode \w and \s decide
                assert not text.isascii()
                continue
            assert list(native.items()) == list(reference.items()), (text, limit)


@pytest.mark.corpus
def test_every_corpus_message_splits_into_the_same_pairs() -> None:
    from appliance.protocols.syslog.vendors.base import kv_pairs_reference

    for line in syslog_corpus_lines():
        text = decode.decode_syslog_reference(line, NOW).message
        native = dataplane.native.kv_pairs(text, 256)  # type: ignore[union-attr]
        if native is not None:
            assert list(native.items()) == list(kv_pairs_reference(text, 256).items()), line


def decoder_files() -> list[object]:
    from appliance.protocols.syslog.vendors import BUILTIN_FILES
    from appliance.protocols.syslog.vendors.declarative import load_file

    site = [load_file(p) for p in sorted((Path(__file__).parent / "decoders").glob("*.toml"))]
    return [*BUILTIN_FILES, *site]


def decoder_inputs(f: object, rng: random.Random) -> list[bytes]:
    lines = [t["line"].encode() for t in f.tests]  # type: ignore[attr-defined]
    lines += list(SEEDS)
    with_corpus = CORPUS_DIR.is_dir()
    if with_corpus:
        lines += list(syslog_corpus_lines())
    out = list(lines)
    pieces = [b",", b" ", b"=", b"[", b"]", b"IN=", b"DROP", b"tcp", b"6", b"4", b":", b'"',
              b"src=", b"\xc3\xa9", b"id=firewall"]  # fmt: skip
    per_line = max(8, 800 // len(lines))  # enough mutated lines without the shared corpus
    for line in lines[:400]:
        for _ in range(per_line):
            b = bytearray(line)
            for _ in range(rng.randint(1, 3)):
                at = rng.randint(0, len(b))
                if rng.random() < 0.5:
                    b[at:at] = rng.choice(pieces)
                else:
                    del b[at : at + rng.randint(1, 6)]
            out.append(bytes(b))
    return out


FILES = decoder_files() if dataplane.native is not None else []


@pytest.mark.parametrize("f", [f for f in FILES if f.native is not None],  # type: ignore[attr-defined]
                         ids=lambda f: f.decoder.name)  # fmt: skip
def test_decoder_files_give_the_same_fields_on_both_interpreters(f: object) -> None:
    native = f.native  # type: ignore[attr-defined]
    rng = random.Random(f.decoder.name)  # type: ignore[attr-defined]
    checked = claimed = 0
    for line in decoder_inputs(f, rng):
        msg = decode.decode_syslog_reference(line, NOW)
        base = syslog_fields(msg, "192.0.2.7")
        a, b = dict(base), dict(base)
        msg_a, msg_b = copy.copy(msg), copy.copy(msg)
        got = native.decode(msg_a, a)
        if got is None:  # left to Python: non-ASCII text, escaped CEF, quoted CSV fields
            assert not msg.message.isascii() or "\\" in msg.message or '"' in msg.message
            continue
        want = f.python_decode(msg_b, b)  # type: ignore[attr-defined]
        assert got == want, line
        assert orjson.dumps(a) == orjson.dumps(b), line
        assert msg_a.payload_time == msg_b.payload_time, line  # the device time ([[time]])
        checked += 1
        claimed += got
    assert checked > 500 and claimed > 0


def test_every_shipped_file_runs_natively_unless_it_needs_what_the_interpreter_lacks() -> None:
    """The native interpreter does not take (yet) the json step, the malware contract or the
    list conversion; a file that uses none of them must run natively."""
    import tomllib

    for f in FILES:
        data = tomllib.loads(f.path.read_text())  # type: ignore[attr-defined]
        lacks = (
            any("json" in step for step in data.get("parse", []))
            or data.get("contract", {}).get("kind") == "malware"
            or "'list'" in repr(data.get("fields"))
            or '"list"' in f.path.read_text()  # type: ignore[attr-defined]
        )
        assert (f.native is not None) or lacks, f.path  # type: ignore[attr-defined]
