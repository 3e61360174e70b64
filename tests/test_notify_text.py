"""What every channel does to text before people see it, and SMS sizing (pure functions)."""

from __future__ import annotations

from appliance.notify.channels import gsm
from appliance.notify.channels.at_modem import parse_cmgl, parse_creg, parse_csq
from appliance.notify.channels.text import clean_body, clean_line, cut


def test_body_keeps_newlines_and_escapes_other_controls() -> None:
    assert clean_body("a\r\nb\tc\x1b[31md\x00") == "a\nb c\\x1b[31md\\x00"


def test_bidi_overrides_are_escaped() -> None:
    assert clean_body("file\u202etxt.exe") == "file\\u202etxt.exe"


def test_line_folds_breaks_into_spaces() -> None:
    assert clean_line("a\r\nBcc: x\n\n b\u2028c") == "a Bcc: x b c"


def test_cut_marks_the_cut_and_respects_the_limit() -> None:
    assert cut("abcdef", 4) == "abc…"
    assert cut("abcdef", 4, "...") == "a..."
    assert cut("abc", 4) == "abc"
    assert len(clean_body("x" * 500, 100)) == 100


def test_gsm7_detection_and_costs() -> None:
    assert gsm.encoding_of("Hello @ £ € {x}") == "gsm7"
    assert gsm.encoding_of("Grüße ✓") == "ucs2"
    assert gsm.length("{}€") == 6  # extension characters take two septets
    assert gsm.length("🚨", "ucs2") == 2  # outside the BMP: a surrogate pair


def test_segments_follow_the_single_and_concatenated_limits() -> None:
    assert gsm.segments("a" * 160) == 1
    assert gsm.segments("a" * 161) == 2
    assert gsm.segments("a" * 306) == 2 and gsm.segments("a" * 307) == 3
    assert gsm.segments("ü✓" * 35) == 1 and gsm.segments("ü✓" * 36) == 2


def test_cut_segments_fits_the_budget() -> None:
    text = gsm.cut_segments("a" * 1000, 3)
    assert len(text) == 3 * 153 and text.endswith("...")
    assert gsm.cut_segments("a" * 160, 1) == "a" * 160
    assert gsm.segments(gsm.cut_segments("€" * 400, 2)) <= 2


def test_numbered_parts_never_split_an_extension_character_or_a_surrogate_pair() -> None:
    parts = gsm.numbered_parts("{" * 200, 5)
    assert all(gsm.length(p, "gsm7") <= 160 for p in parts)
    parts = gsm.numbered_parts("🚨" * 80, 5)
    assert all(gsm.length(p, "ucs2") <= 70 for p in parts)
    assert "".join(p.split(") ", 1)[1] for p in parts) == "🚨" * 80


def test_modem_answers_parse() -> None:
    assert parse_creg(["+CREG: 0,5"]) == 5
    assert parse_creg(["+CREG: 1"]) == 1
    assert parse_csq(["+CSQ: 31,0"]) == -51.0
    assert parse_csq(["+CSQ: 99,99"]) is None
    stored = parse_cmgl(
        [
            '+CMGL: 1,"REC UNREAD","+4917012345",,"26/12/04,10:00:00+04"',
            "ACK 12",
            "second line",
            '+CMGL: 2,"REC READ","+4917099999",,"26/12/04,10:01:00+04"',
            "hi, there",
        ]
    )
    assert [(s.index, s.status, s.sender, s.text) for s in stored] == [
        (1, "REC UNREAD", "+4917012345", "ACK 12\nsecond line"),
        (2, "REC READ", "+4917099999", "hi, there"),
    ]
