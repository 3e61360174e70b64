"""Decoders as data: the shipped files pass their own samples, a site adds or replaces a decoder
with a file (live after a reload), and a bad file is refused with its file and key named while
the others load."""

from __future__ import annotations

import calendar
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from appliance.cli import main
from appliance.config import ConfigError, parse_config
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import device_time
from appliance.protocols.syslog.vendors import BUILTIN_FILES, build_registry
from appliance.protocols.syslog.vendors.cli import sample_failures
from appliance.protocols.syslog.vendors.declarative import DecoderFileError, load_file
from tests.conftest import make_config
from tests.test_syslog_udp import send_udp

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))

# A site decoder, as a site would write one (see the file for its provenance).
SONICWALL = (Path(__file__).parent / "decoders" / "sonicwall.toml").read_text()


def fields_of(line: bytes, registry: Any, hint: str | None = None) -> dict[str, Any]:
    msg = decode_syslog(line, NOW)
    fields = syslog_fields(msg, "192.0.2.1")
    fields["decoder"] = registry.decode(msg, fields, registry.by_name.get(hint or ""))
    return fields


@pytest.mark.parametrize("f", BUILTIN_FILES, ids=lambda f: f.decoder.name)
def test_every_shipped_decoder_file_passes_its_own_samples(f: Any) -> None:
    assert f.tests, "a shipped file carries samples"
    assert sample_failures(f, NOW) == []


def test_a_site_file_adds_a_decoder_for_an_unknown_vendor(tmp_path: Path) -> None:
    (tmp_path / "sonicwall.toml").write_text(SONICWALL)
    decoders = build_registry([tmp_path])
    assert decoders.errors == []
    f = fields_of(b'<134>id=firewall sn=1 m=82 src=203.0.113.7:51234:X1 dst=198.51.100.2:445:X1 '
                  b'proto=tcp fw_action="drop"', decoders.registry)  # fmt: skip
    assert f["decoder"] == "sonicwall"
    assert (f["source.ip"], f["source.port"], f["destination.port"]) == ("203.0.113.7", 51234, 445)
    assert (f["event.outcome"], f["network.transport"]) == ("failure", "tcp")


def test_a_site_file_samples_pass(tmp_path: Path) -> None:
    path = tmp_path / "sonicwall.toml"
    path.write_text(SONICWALL)
    assert sample_failures(load_file(path), NOW) == []


def test_a_field_typed_ip_never_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "sonicwall.toml").write_text(SONICWALL)
    registry = build_registry([tmp_path]).registry
    f = fields_of(
        b"<134>id=firewall src=not-an-ip:80:X1 dst=999.1.1.1:445 fw_action=drop", registry
    )
    assert f["decoder"] == "sonicwall"
    assert "source.ip" not in f and "destination.ip" not in f


def test_a_site_file_named_like_a_built_in_replaces_it(tmp_path: Path) -> None:
    netfilter = next(f for f in BUILTIN_FILES if f.decoder.name == "netfilter")
    text = netfilter.path.read_text().replace('product = "netfilter"', 'product = "netfilter-site"')
    (tmp_path / "netfilter.toml").write_text(text)
    registry = build_registry([tmp_path]).registry
    f = fields_of(b"<4>Nov 29 11:59:00 fw kernel: DROP IN=eth0 OUT= SRC=203.0.113.9 "
                  b"DST=192.0.2.1 PROTO=TCP SPT=1 DPT=22", registry)  # fmt: skip
    assert (f["decoder"], f["observer.product"]) == ("netfilter", "netfilter-site")


F = 'name = "x"\n[select]\nprograms = ["a"]\n[fields]\n'  # a file up to its [fields]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a.b" = { from = "k", bogus = 1 }',
         "fields.a.b.bogus: unknown key"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\nregex = \'(?P<a>x)\\1\'',
         "parse[0].regex: not an RE2 expression"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a" = { from = "k", as = "float" }',
         "fields.a.as: must be one of"),
        ('name = "X Y"\n[select]\nprograms = ["a"]', "name: must be lower-case"),
        ('name = "x"', "select: needs programs, prefixes or fallback"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a" = { from = "k", map = "m" }',
         "fields.a.map: no map named 'm'"),
        ('name = "x"\n[select\n', "line 2, column 8"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\njson = { max_depth = 0 }',
         "parse[0].json.max_depth: must be an integer from 1 to 8"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\njson = { depth = 2 }',
         "parse[0].json.depth: unknown key"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[contract]\nkind = "malware"',
         "contract.action: the malware contract needs an action"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\ntable = { key = "id", cases = '
         '[{ regex = "(?P<a>x)" }] }', "parse[0].table.cases[0]: needs ids and/or prefixes"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\ntable = { key = "id", cases = '
         '[{ ids = ["1"], fields = { "a" = { from = "k", as = "float" } } }] }',
         "parse[0].table.cases[0].fields.a.as: must be one of"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[time]]\nfrom = "t"',
         "time[0]: needs as (epoch or iso) or format"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[time]]\nas = "iso"',
         "time[0]: needs from (the first non-empty capture) or join"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[time]]\nfrom = "t"\nformat = "%Y %Q"',
         "time[0].format: %Q is not a directive files may use"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[time]]\nfrom = "t"\nas = "epoch"\nzone = "z"',
         "time[0].zone: a capture name, with format"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[time]]\nfrom = "t"\nas = "rfc"',
         "time[0].as: must be epoch or iso"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a" = { sum = ["x"] }',
         "fields.a.sum: adds 2 to 8 captures"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a" = { sum = ["x", "y"], as = "ip" }',
         "fields.a.as: does not go with sum"),
        (F + '"a" = { from = "x", requires_field = ["b"] }',
         "fields.a.requires_field: 'b' is not a field this file sets before"),
        (F + '"a" = { from = "x", skip = ["-"], keep_empty = true }',
         "fields.a.skip: does not go with keep_empty"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[fields]\n"a" = []',
         "fields.a: a list of value specs must hold capture names or tables"),
        (F + '"a" = [{ value = "y" }, { from = "k", as = "float" }]',
         "fields.a[1].as: must be one of"),
        (F + '"a" = { value = "y", is = { k = [1] } }',
         "fields.a.is.k: must be a list of non-empty strings"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\npick = {}',
         "parse[0].pick: must be a table: new capture = [captures]"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\nrequire = { some = ["a"] }',
         "parse[0].require.some: unknown key"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\nkv = { within = 40 }',
         "parse[0].kv.within: a positive number of characters, with start"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\ntable = { key = "id", cases = '
         '[{ ids = ["1"], regex = "(?P<a>x)", from = "" }] }',
         "parse[0].table.cases[0].from: must be a capture name"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[parse]]\ntable = { key = "id", cases = '
         '[{ ids = ["1"], also = [{ kv = { style = "csv" } }] }] }',
         "parse[0].table.cases[0].also[0].kv.style: must be 'quoted' or 'split'"),
        (F + '"a" = { from = "x", numbers = [1] }',
         "fields.a.numbers: must be a list of non-empty strings"),
        ('name = "x"\n[select]\nprograms = ["a"]\n[[tests]]\nline = "x"\ntime = "soon"',
         "tests[0].time: must be an ISO 8601 time"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DecoderFileError) as exc:
        load_file(path)
    assert str(exc.value).startswith(str(path)) and error in str(exc.value)


def test_a_bad_file_never_stops_the_others(tmp_path: Path) -> None:
    (tmp_path / "a_bad.toml").write_text('name = "bad"\n[select]\n')
    (tmp_path / "sonicwall.toml").write_text(SONICWALL)
    decoders = build_registry([tmp_path])
    assert "sonicwall" in decoders.registry.by_name and "bad" not in decoders.registry.by_name
    assert len(decoders.errors) == 1 and "a_bad.toml: select" in decoders.errors[0]


def test_a_sender_vendor_may_name_a_site_decoder(tmp_path: Path) -> None:
    (tmp_path / "decoders").mkdir()
    (tmp_path / "decoders" / "sonicwall.toml").write_text(SONICWALL)
    data = make_config(tmp_path, decoders={"paths": ["decoders"]},
                       sources={"syslog": [{"protocol": "udp", "listen": "127.0.0.1:0"}],
                                "syslog_senders": [{"networks": ["10.0.0.0/8"],
                                                    "vendor": "sonicwall"}]})  # fmt: skip
    assert parse_config(data, base_dir=tmp_path).sources.syslog_senders[0].vendor == "sonicwall"
    data["decoders"] = {"paths": []}
    with pytest.raises(ConfigError, match=r"syslog_senders\[0\]\.vendor: 'sonicwall' is not"):
        parse_config(data, base_dir=tmp_path)


async def test_a_site_decoder_added_to_the_folder_is_live_after_a_reload(
    start_appliance: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "decoders"
    folder.mkdir()
    run = await start_appliance(decoders={"paths": ["decoders"]})
    line = b"<134>id=firewall m=82 src=203.0.113.7:51234:X1 dst=198.51.100.2:445:X1 fw_action=drop"
    send_udp(run.source().address, line)
    await run.wait_stored(1)
    (folder / "sonicwall.toml").write_text(SONICWALL)
    await run.app.reload(parse_config(make_config(tmp_path, decoders={"paths": ["decoders"]}),
                                      base_dir=tmp_path))  # fmt: skip
    send_udp(run.source().address, line)
    await run.wait_stored(2)
    body = await run.get_json("/api/v1/events")
    datasets = [e["event"]["dataset"] for e in body["events"]]
    assert datasets == ["sonicwall", "kv"]  # newest first; before: the generic key=value layer
    loaded = len(BUILTIN_FILES) + 1  # the built-ins and the site file
    assert f'appliance_decoder_files{{state="loaded"}} {loaded}' in await run.metrics()


def test_cli_decoders_test_passes_the_shipped_files_and_fails_a_broken_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decoders", "test"]) == 0
    broken = tmp_path / "sonicwall.toml"
    broken.write_text(SONICWALL.replace('"source.port" = 51234', '"source.port" = 1'))
    assert main(["decoders", "test", str(broken)]) == 1
    assert "source.port is 51234, expected 1" in capsys.readouterr().out


def test_cli_decoders_try_shows_the_decoder_and_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = ("<4>Nov 29 11:59:00 fw kernel: DROP IN=eth0 OUT= SRC=203.0.113.9 DST=192.0.2.1 "
            "PROTO=TCP SPT=1 DPT=22")  # fmt: skip
    assert main(["decoders", "try", line]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoder"] == "netfilter" and out["fields"]["destination.port"] == 22
    assert out["fields"]["event.dataset"] == "netfilter"


def test_a_constant_list_field_is_a_fresh_list_per_event(tmp_path: Path) -> None:
    path = tmp_path / "lists.toml"
    path.write_text('name = "lists"\n[select]\nprograms = ["lists"]\n'
                    '[fields]\n"event.type" = { value = ["change"] }\n')  # fmt: skip
    decoder = load_file(path).decoder
    first, second = {}, {}  # type: ignore[var-annotated]
    for fields in (first, second):
        assert decoder.decode(decode_syslog(b"<13>Nov 29 11:59:00 h lists: x", NOW), fields)
    first["event.type"].append("end")
    assert second["event.type"] == ["change"]


def test_a_constant_honours_when_and_requires(tmp_path: Path) -> None:
    """A constant with `when` or `requires` was set on every line the file claimed (both
    interpreters ignored the conditions): every AOS-CX event became a network change."""
    path = tmp_path / "cond.toml"
    path.write_text(
        'name = "cond"\n[select]\nprograms = ["cond"]\n'
        "[[parse]]\nregex = 'is (?P<state>up|down)'\noptional = true\n"
        "[[parse]]\nregex = 'port (?P<port>\\S+)'\noptional = true\n"
        '[fields]\n"event.category" = { value = ["network"], when = { state = '
        '["up", "down"] } }\n"labels.port" = { value = "yes", requires = ["port"] }\n'
    )
    f = load_file(path)
    interpreters = [("python", f.python_decode)]  # type: ignore[attr-defined]
    if f.native is not None:  # type: ignore[attr-defined]
        interpreters.append(("native", f.native.decode))  # type: ignore[attr-defined]
    for name, decode in interpreters:
        for line, want in (
            (b"link is up on port 1/1/3", {"event.category": ["network"], "labels.port": "yes"}),
            (b"fan tray inserted", {}),
        ):
            fields: dict[str, Any] = {}
            assert decode(decode_syslog(b"<13>Nov 29 11:59:00 h cond: " + line, NOW), fields)
            got = {k: fields[k] for k in ("event.category", "labels.port") if k in fields}
            assert got == want, (name, line)


# A JSON product and the antivirus contract, as a site would write them.
AV_JSON = """
name = "site_av"
[select]
programs = ["siteav"]
[[parse]]
json = { max_depth = 2 }
[contract]
kind = "malware"
action = { from = "result", map = "r", else = "detected" }
outcome = { from = "ok", map = "ok" }
[fields]
"rule.name" = "sig"
"file.path" = "file.path"
"labels.deep" = "a.b.c"
"labels.n" = "n"
[maps.r]
values = { removed = "deleted", kept = "left_alone" }
[maps.ok]
values = { "false" = "failure" }
"""


def test_a_json_step_and_the_malware_contract(tmp_path: Path) -> None:
    (tmp_path / "site_av.toml").write_text(AV_JSON)
    decoders = build_registry([tmp_path])
    assert decoders.errors == []
    reg = decoders.registry
    line = (
        '<14>Nov 29 10:00:00 h siteav: \ufeff{"sig": "Eicar", "result": "removed", "n": 3, '
        '"file": {"path": "/tmp/e"}, "a": {"b": {"c": "too deep"}}, "l": [1]}'
    )
    f = fields_of(line.encode(), reg)
    assert f["decoder"] == "site_av"
    assert (f["event.category"], f["event.kind"], f["event.type"]) == (
        ["malware"],
        "alert",
        ["deletion"],
    )
    assert (f["event.action"], f["event.outcome"]) == ("deleted", "success")
    assert (f["rule.name"], f["file.path"], f["labels.n"]) == ("Eicar", "/tmp/e", "3")
    assert "labels.deep" not in f  # deeper than max_depth
    f = fields_of(b'<14>Nov 29 10:00:00 h siteav: {"sig": "X", "result": "kept", "ok": false}', reg)
    assert (f["event.action"], f["event.outcome"]) == ("left_alone", "failure")
    f = fields_of(b'<14>Nov 29 10:00:00 h siteav: {"sig": "X", "result": "odd"}', reg)
    assert (f["event.action"], f["event.kind"]) == ("detected", "alert")
    assert "event.outcome" not in f
    for text in (b"not json", b"[1, 2]", b'{"unterminated": '):
        assert fields_of(b"<14>Nov 29 10:00:00 h siteav: " + text, reg)["decoder"] == ""


# A message-id table as Cisco-style families need it: the id picks the pattern and the fields.
MSGID = """
name = "msgid_site"
[select]
prefixes = ["%GW-"]
[[parse]]
regex = '^%GW-(?P<id>\\d{3}): (?P<body>.*)'
[[parse]]
from = "body"
[parse.table]
key = "id"
[[parse.table.cases]]
ids = ["100"]
regex = '^Login (?P<result>ok|failed) for (?P<user>\\S+)'
optional = true
[parse.table.cases.contract]
kind = "authentication"
action = { value = "login" }
outcome = { from = ["result", "id"], map = "ok", else = "failure" }
user = "user"
[[parse.table.cases]]
prefixes = ["2"]
regex = '^Denied (?P<src>\\S+) -> (?P<dst>\\S+)'
contract = { kind = "firewall", action = { value = "deny" } }
[parse.table.cases.fields]
"source.ip" = { from = "src", as = "ip" }
"destination.ip" = { from = "dst", as = "ip" }
[[parse.table.cases]]
prefixes = ["2"]
regex = '^Allowed (?P<src>\\S+)'
contract = { kind = "firewall", action = { value = "allow" } }
[parse.table.cases.fields]
"source.ip" = { from = "src", as = "ip" }
[fields]
"event.code" = "id"
[maps.ok]
values = { ok = "success" }
"""


@pytest.fixture
def msgid_registry(tmp_path: Path) -> Any:
    (tmp_path / "msgid.toml").write_text(MSGID)
    decoders = build_registry([tmp_path])
    assert decoders.errors == []
    return decoders.registry


def test_a_message_id_table_picks_the_pattern_and_fields_of_the_id(msgid_registry: Any) -> None:
    f = fields_of(b"<134>%GW-201: Denied 203.0.113.9 -> 192.0.2.10", msgid_registry)
    assert (f["decoder"], f["event.code"], f["event.action"]) == ("msgid_site", "201", "deny")
    assert (f["source.ip"], f["destination.ip"]) == ("203.0.113.9", "192.0.2.10")


def test_a_table_case_whose_pattern_fails_leaves_the_id_to_the_next_case(
    msgid_registry: Any,
) -> None:
    f = fields_of(b"<134>%GW-202: Allowed 203.0.113.9", msgid_registry)
    assert (f["event.action"], f["source.ip"]) == ("allow", "203.0.113.9")
    assert "destination.ip" not in f


def test_an_optional_table_case_sets_its_contract_without_its_captures(
    msgid_registry: Any,
) -> None:
    f = fields_of(b"<134>%GW-100: Login ok for alice", msgid_registry)
    assert (f["event.outcome"], f["user.name"]) == ("success", "alice")
    f = fields_of(b"<134>%GW-100: session audit record", msgid_registry)
    assert (f["event.action"], f["event.outcome"]) == ("login", "failure")
    assert "user.name" not in f


def test_an_id_no_table_case_takes_is_still_claimed_with_the_file_fields(
    msgid_registry: Any,
) -> None:
    f = fields_of(b"<134>%GW-999: Something else", msgid_registry)
    assert (f["decoder"], f["event.code"]) == ("msgid_site", "999")
    assert "event.action" not in f and "event.category" not in f


ACME_CEF = Path(__file__).parent / "decoders" / "acme_cef.toml"


def test_a_cef_step_gives_the_header_and_every_extension_key(tmp_path: Path) -> None:
    registry = build_registry([ACME_CEF]).registry
    f = fields_of(b"<134>CEF:0|Acme|Edge|4.2|1001|Blocked inbound|7|src=203.0.113.9 "
                  b"dpt=445 act=dropped msg=two words here", registry)  # fmt: skip
    assert f["decoder"] == "acme_cef"
    assert (f["event.code"], f["rule.name"], f["event.severity"]) == ("1001", "Blocked inbound", 7)
    assert (f["source.ip"], f["destination.port"], f["event.action"]) == (
        "203.0.113.9",
        445,
        "drop",
    )
    assert f["message"] == "two words here"


def test_a_cef_step_unescapes_the_header_and_values() -> None:
    registry = build_registry([ACME_CEF]).registry
    f = fields_of(b"<134>CEF:0|Acme|Edge|4.2|1002|a\\|b|3|act=allowed msg=k\\=v\\nnext",
                  registry)  # fmt: skip
    assert (f["rule.name"], f["message"]) == ("a|b", "k=v\nnext")


def test_a_cef_step_leaves_a_line_without_seven_header_fields() -> None:
    registry = build_registry([ACME_CEF]).registry
    f = fields_of(b"<134>CEF:0|Acme|Edge|4.2|1002 src=203.0.113.9", registry)
    assert f["decoder"] != "acme_cef"


def test_the_site_decoders_in_the_tests_pass_their_samples() -> None:
    for path in sorted((Path(__file__).parent / "decoders").glob("*.toml")):
        assert sample_failures(load_file(path), NOW) == [], path


# The smaller options the message-id tables brought, one behaviour each.
OPTIONS = """
name = "options_site"
[select]
prefixes = ["%OPT-"]
[[parse]]
regex = '(?s)^%OPT-(?P<id>\\d+): (?P<body>.*)'
[[parse]]
from = "body"
regex = 'proto (?P<proto_name>[a-z]+)'
within = 20
optional = true
[[parse]]
from = "body"
regex = 'protocol (?P<proto_num>\\d+)'
contains = "protocol "
optional = true
[[parse]]
from = "body"
[parse.table]
key = "id"
[[parse.table.cases]]
ids = ["1"]
also = [{ from = "body", regex = 'bytes (?P<bytes>\\d+)', contains = "bytes " }]
[[parse.table.cases]]
default = true
[parse.table.cases.fields]
"labels.other" = { value = "yes" }
[fields]
"network.transport" = { from = ["proto_name", "proto_num"], as = "transport" }
"network.iana_number" = { from = "proto_num", unless = ["proto_name"] }
"network.bytes" = { from = "bytes", as = "int" }
"labels.head" = { from = "body", first = 5 }
"""


@pytest.fixture
def options_registry(tmp_path: Path) -> Any:
    (tmp_path / "options.toml").write_text(OPTIONS)
    decoders = build_registry([tmp_path])
    assert decoders.errors == []
    return decoders.registry


def test_unless_sets_a_field_only_without_the_other_capture(options_registry: Any) -> None:
    f = fields_of(b"<134>%OPT-2: protocol 47 seen", options_registry)
    assert (f["network.transport"], f["network.iana_number"]) == ("gre", "47")
    f = fields_of(b"<134>%OPT-2: proto tcp, protocol 6", options_registry)
    assert f["network.transport"] == "tcp" and "network.iana_number" not in f


def test_within_searches_only_the_first_characters(options_registry: Any) -> None:
    f = fields_of(b"<134>%OPT-2: a long preamble here then proto udp", options_registry)
    assert "network.transport" not in f


def test_contains_skips_the_regex_when_the_literal_is_absent(options_registry: Any) -> None:
    f = fields_of(b"<134>%OPT-2: protocolX 6", options_registry)
    assert "network.iana_number" not in f


def test_a_case_also_search_runs_only_for_its_ids(options_registry: Any) -> None:
    assert fields_of(b"<134>%OPT-1: bytes 1200", options_registry)["network.bytes"] == 1200
    assert "network.bytes" not in fields_of(b"<134>%OPT-2: bytes 1200", options_registry)


def test_a_default_case_takes_every_other_id(options_registry: Any) -> None:
    assert fields_of(b"<134>%OPT-77: x", options_registry)["labels.other"] == "yes"
    assert "labels.other" not in fields_of(b"<134>%OPT-1: x", options_registry)


def test_first_keeps_the_first_characters_of_a_capture(options_registry: Any) -> None:
    assert fields_of(b"<134>%OPT-3: abcdefgh", options_registry)["labels.head"] == "abcde"


ACME_LEEF = Path(__file__).parent / "decoders" / "acme_leef.toml"


def test_a_leef_step_reads_tab_separated_leef_1_attributes() -> None:
    registry = build_registry([ACME_LEEF]).registry
    f = fields_of(b"<134>LEEF:1.0|Acme|Gate|3.1|webBlock|src=192.0.2.10\tdstPort=443\t"
                  b"action=BLOCK\tusrName=", registry)  # fmt: skip
    assert (f["decoder"], f["event.code"], f["event.action"]) == ("acme_leef", "webBlock", "deny")
    assert (f["source.ip"], f["destination.port"]) == ("192.0.2.10", 443)
    assert "user.name" not in f  # an attribute without a value is skipped


def test_a_leef_2_step_splits_on_the_delimiter_its_header_names() -> None:
    registry = build_registry([ACME_LEEF]).registry
    for delim in (b"^", b"x5E", b"0x5e"):
        f = fields_of(b"<134>LEEF:2.0|Acme|Gate|3.1|webAllow|" + delim +
                      b"|src=192.0.2.11^action=allow", registry)  # fmt: skip
        assert (f["source.ip"], f["event.action"]) == ("192.0.2.11", "allow"), delim


# The device time, sums and conditions (tests/decoders/acme_gateway.toml), one behaviour each.
ACME = Path(__file__).parent / "decoders" / "acme_gateway.toml"


@pytest.fixture
def acme() -> Any:
    decoders = build_registry([ACME])
    assert decoders.errors == []
    return decoders.registry


def decode_acme(text: str, registry: Any) -> tuple[Any, dict[str, Any]]:
    msg = decode_syslog(b"<134>" + text.encode(), NOW)
    fields = syslog_fields(msg, "192.0.2.1")
    fields["decoder"] = registry.decode(msg, fields)
    return msg, fields


def test_a_device_time_with_its_zone_field_is_that_instant(acme: Any) -> None:
    msg, _ = decode_acme("acme stamp=2026-11-29 clock=11:59:00 tz=-0500 gw=g kind=x", acme)
    assert msg.payload_time == calendar.timegm((2026, 11, 29, 16, 59, 0))


def test_a_device_time_without_a_zone_is_read_in_the_senders_zone(acme: Any) -> None:
    msg, _ = decode_acme("acme stamp=2026-11-29 clock=11:59:00 gw=g kind=x", acme)
    assert msg.payload_time == datetime(2026, 11, 29, 11, 59, 0)
    berlin = device_time(msg, ZoneInfo("Europe/Berlin"))
    assert berlin == calendar.timegm((2026, 11, 29, 10, 59, 0))


def test_an_epoch_device_time_in_milliseconds_comes_first(acme: Any) -> None:
    line = "acme stamp=2026-01-01 clock=00:00:00 epoch=1795953540500 gw=g kind=x"
    msg, _ = decode_acme(line, acme)
    assert msg.payload_time == 1795953540.5


def test_an_unreadable_device_time_falls_to_the_next_alternative(acme: Any) -> None:
    line = "acme stamp=2026-13-45 clock=99:00:00 iso=2026-11-29T11:59:00+01:00 gw=g kind=x"
    msg, _ = decode_acme(line, acme)
    assert msg.payload_time == calendar.timegm((2026, 11, 29, 10, 59, 0))
    msg, _ = decode_acme("acme stamp=nope gw=g kind=x", acme)
    assert msg.payload_time is None


def test_a_sum_adds_the_numbers_and_needs_every_one(acme: Any) -> None:
    _, f = decode_acme("acme stamp=x gw=g kind=x sent=7 rcvd=5 spkt=1 rpkt=2 xpkt=3", acme)
    assert (f["network.bytes"], f["source.bytes"], f["network.packets"]) == (12, 7, 6)
    _, f = decode_acme("acme stamp=x gw=g kind=x sent=7 rcvd=-5 spkt=1 rpkt=2", acme)
    assert not {"network.bytes", "source.bytes", "destination.bytes", "network.packets"} & set(f)


def test_a_placeholder_value_counts_as_none(acme: Any) -> None:
    _, f = decode_acme("acme stamp=x gw=N/A kind=x srcip=- src=203.0.113.9", acme)
    assert "observer.name" not in f and f["source.ip"] == "203.0.113.9"


def test_the_first_value_spec_that_gives_a_value_wins(acme: Any) -> None:
    _, f = decode_acme("acme stamp=x gw=g kind=traffic", acme)
    assert f["event.action"] == "allow" and "acme.action" not in f
    _, f = decode_acme("acme stamp=x gw=g kind=traffic action=ACCEPT", acme)
    assert f["event.action"] == "allow" and "acme.action" not in f


def test_require_leaves_a_line_without_its_marker_keys(acme: Any) -> None:
    _, f = decode_acme("acme stamp=x kind=traffic action=deny", acme)
    assert f["decoder"] != "acme_gateway"


def test_a_table_case_needs_its_conditions_and_reads_its_own_input(acme: Any) -> None:
    _, f = decode_acme('acme stamp=x gw=g kind=event desc="Configuration saved"', acme)
    assert f["event.action"] == "config_change"
    _, f = decode_acme("acme stamp=x gw=g kind=event path=/system", acme)
    assert f["event.action"] == "config_change"
    _, f = decode_acme("acme stamp=x gw=g kind=event desc=other", acme)
    assert "event.action" not in f


def test_pick_takes_the_first_non_empty_capture(acme: Any) -> None:
    _, f = decode_acme("acme stamp=x gw=g kind=event action= status=login", acme)
    assert (f["event.action"], f["event.outcome"]) == ("login", "success")
