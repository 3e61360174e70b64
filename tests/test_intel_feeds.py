"""Threat-intel list formats: what each parser takes from real-shaped feed files, and what it
counts as malformed instead of failing the whole list."""

from __future__ import annotations

import json

from appliance.analysis.intel import (
    SourceText,
    build_index,
    detect_format,
    parse_csv,
    parse_misp,
    parse_plain,
    parse_stix,
    parse_time,
)

SPAMHAUS_DROP = """\
; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Mon, 01 Dec 2026 10:32:52 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
2.56.192.0/22 ; SBL459831
"""

FIREHOL = """\
#
# firehol_level1
# Maintainer      : FireHOL
#
0.0.0.0/8
1.10.16.0/20
5.188.10.0/23
223.254.0.0/16
not-an-address!
"""

FEODO_CSV = """\
################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)          #
################################################################
#
"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2026-11-02 17:43:02","162.243.103.246","8080","online","2026-12-01","Emotet"
"2026-11-05 10:01:00","50.16.16.211","443","offline","2026-11-30","QakBot"
"2026-11-05 10:01:00","999.16.16.211","443","offline","2026-11-30","QakBot"
"""

URLHAUS_CSV = """\
################################################################
# abuse.ch URLhaus Database Dump (CSV - recent URLs)           #
################################################################
#
# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
"3301211","2026-12-01 10:00:04","http://198.51.100.23:39211/i","online","2026-12-01 10:00:04","malware_download","elf,Mozi","https://urlhaus.abuse.ch/url/3301211/","lrz_urlhaus"
"""

THREATFOX_CSV = "\n".join(
    [
        '# "first_seen_utc","ioc_id","ioc_value","ioc_type","threat_type","fk_malware",'
        '"malware_alias","malware_printable","last_seen_utc","confidence_level","reference",'
        '"tags","anonymous","reporter"',
        '"2026-12-01 08:05:11", "1290001", "203.0.113.77:4444", "ip:port", "botnet_cc",'
        ' "win.cobalt_strike", "None", "Cobalt Strike", "", "100", "None", "CobaltStrike", "0",'
        ' "abuse_ch"',
        '"2026-12-01 08:06:12", "1290002", "update-check.example.net", "domain", "botnet_cc",'
        ' "win.asyncrat", "None", "AsyncRAT", "", "75", "None", "None", "0", "abuse_ch"',
        '"2026-12-01 08:07:13", "1290003",'
        ' "0a3b0c8d5c1e7a5f9d4a1f1e2c3b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d", "sha256_hash",'
        ' "payload", "win.agent_tesla", "None", "Agent Tesla", "", "50", "None", "None", "0",'
        ' "abuse_ch"',
    ]
)

MISP_EVENT = {
    "Event": {
        "info": "Phishing campaign against finance",
        "Attribute": [
            {"type": "ip-dst", "value": "198.51.100.10", "to_ids": True, "timestamp": "1764547200"},
            {"type": "domain", "value": "login-office.example.org", "to_ids": True},
            {"type": "md5", "value": "D41D8CD98F00B204E9800998ECF8427E", "to_ids": True},
            {"type": "ip-src", "value": "192.0.2.99", "to_ids": False},  # context, not for IDS
            {"type": "text", "value": "analyst note"},
            {"type": "ip-dst", "value": "not-an-ip", "to_ids": True},
        ],
        "Object": [
            {
                "name": "file",
                "Attribute": [
                    {
                        "type": "sha256",
                        "value": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                        "to_ids": True,
                    }
                ],
            }
        ],
    }
}

STIX_BUNDLE = {
    "type": "bundle",
    "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
    "objects": [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "created": "2026-11-01T00:00:00.000Z",
            "modified": "2026-11-20T00:00:00.000Z",
            "name": "C2 server",
            "pattern": "[ipv4-addr:value = '203.0.113.5'] OR [ipv4-addr:value = '203.0.113.0/28']",
            "pattern_type": "stix",
            "valid_from": "2026-11-01T00:00:00Z",
            "valid_until": "2026-12-31T00:00:00Z",
            "confidence": 85,
        },
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--1",
            "pattern": "[file:hashes.'SHA-256' = "
            "'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
            "pattern_type": "stix",
            "valid_from": "2026-11-01T00:00:00Z",
        },
        {
            "type": "indicator",
            "id": "indicator--2",
            "pattern": "[domain-name:value = 'evil.example.com']",
            "pattern_type": "stix",
            "valid_from": "2026-11-01T00:00:00Z",
            "revoked": True,
        },
        {
            "type": "indicator",
            "id": "indicator--3",
            "pattern": "[process:name = 'evil.exe']",
            "pattern_type": "stix",
            "valid_from": "2026-11-01T00:00:00Z",
        },
        {"type": "malware", "id": "malware--1", "name": "Emotet", "is_family": True},
    ],
}


def values(result) -> list[tuple[str, str]]:
    return [(i.kind, i.value) for i in result.indicators]


def test_spamhaus_drop_keeps_each_block_and_its_sbl_note() -> None:
    r = parse_plain(SPAMHAUS_DROP)
    assert values(r) == [("ip", "1.10.16.0/20"), ("ip", "1.19.0.0/16"), ("ip", "2.56.192.0/22")]
    assert r.indicators[0].description == "SBL256894"
    assert r.malformed == 0


def test_firehol_netset_counts_a_bad_line_and_keeps_the_rest() -> None:
    r = parse_plain(FIREHOL)
    assert len(r.indicators) == 4
    assert r.malformed == 1 and "not-an-address!" in r.samples[0]


def test_feodo_csv_reads_addresses_dates_and_malware_names() -> None:
    r = parse_csv(FEODO_CSV)
    assert values(r) == [("ip", "162.243.103.246"), ("ip", "50.16.16.211")]
    assert r.indicators[0].description == "Emotet"
    assert r.indicators[0].first_seen == parse_time("2026-11-02T17:43:02Z")
    assert r.malformed == 1  # 999.16.16.211


def test_urlhaus_csv_header_in_a_comment_line_is_used() -> None:
    r = parse_csv(URLHAUS_CSV)
    assert values(r) == [("url", "http://198.51.100.23:39211/i")]
    assert r.indicators[0].description == "malware_download"


def test_threatfox_csv_reads_ip_port_domain_and_hash_with_their_confidence() -> None:
    r = parse_csv(THREATFOX_CSV)
    assert values(r) == [
        ("ip", "203.0.113.77"),
        ("domain", "update-check.example.net"),
        ("hash", "0a3b0c8d5c1e7a5f9d4a1f1e2c3b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d"),
    ]
    assert [i.confidence for i in r.indicators] == [100, 75, 50]
    assert r.indicators[0].description == "Cobalt Strike"


def test_misp_event_takes_ids_attributes_from_the_event_and_its_objects() -> None:
    r = parse_misp(json.dumps(MISP_EVENT))
    assert values(r) == [
        ("ip", "198.51.100.10"),
        ("domain", "login-office.example.org"),
        ("hash", "d41d8cd98f00b204e9800998ecf8427e"),
        ("hash", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ]
    assert r.indicators[0].description == "Phishing campaign against finance"
    assert r.malformed == 1  # ip-dst "not-an-ip"


def test_misp_rest_search_answer_is_a_list_of_events() -> None:
    r = parse_misp(json.dumps({"response": [MISP_EVENT, MISP_EVENT]}))
    assert len(r.indicators) == 8


def test_stix_bundle_reads_patterns_confidence_and_validity() -> None:
    r = parse_stix(json.dumps(STIX_BUNDLE))
    assert values(r) == [
        ("ip", "203.0.113.5"),
        ("ip", "203.0.113.0/28"),
        ("hash", "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f"),
    ]
    first = r.indicators[0]
    assert first.confidence == 85 and first.description == "C2 server"
    assert first.valid_until == parse_time("2026-12-31T00:00:00Z")
    assert r.malformed == 1  # the process:name pattern names nothing we observe


def test_unreadable_json_is_one_malformed_entry_not_an_exception() -> None:
    assert parse_stix("{not json").malformed == 1
    assert parse_misp("[1, 2").malformed == 1


def test_format_is_detected_from_content() -> None:
    assert detect_format("x.json", json.dumps(STIX_BUNDLE)) == "stix"
    assert detect_format("x.json", json.dumps(MISP_EVENT)) == "misp"
    assert detect_format("feodo.txt", FEODO_CSV) == "csv"
    assert detect_format("drop.txt", SPAMHAUS_DROP) == "plain"


def test_every_format_loads_into_one_index_with_its_feed_name() -> None:
    sources = [
        SourceText("drop", "auto", SPAMHAUS_DROP, 90, 0.0, None),
        SourceText("feodo", "auto", FEODO_CSV, 80, 0.0, None),
        SourceText("misp", "auto", json.dumps(MISP_EVENT), 70, 0.0, None),
        SourceText("stix", "auto", json.dumps(STIX_BUNDLE), 60, 0.0, None),
    ]
    index, report = build_index(sources, 1000)
    assert report.loaded == {"drop": 3, "feodo": 2, "misp": 4, "stix": 3}
    assert report.malformed == {"drop": 0, "feodo": 1, "misp": 1, "stix": 1}
    m = index.match(index.lookup_ip("1.10.17.1", 0.0))
    assert (m.feed, m.confidence, m.value) == ("drop", 90, "1.10.16.0/20")
    assert index.match(index.lookup_ip("203.0.113.5", 0.0)).confidence == 85  # its own
