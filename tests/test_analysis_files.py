"""The analysis files: asset lists, scanner reports, CVE catalogs and IDS rule files (issue 16).

Samples in tests/data/analysis are written by us from the formats' public documentation (see
tests/data/README.md); each test reads one format and states what a site would rely on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.analysis.assets import Asset, AssetFileError, AssetIndex, Service, parse_csv
from appliance.analysis.context import AnalysisFileError, load_context, parse_file, read_file
from appliance.analysis.idsrules import parse_rules

DATA = Path(__file__).parent / "data" / "analysis"


def test_csv_inventory_gives_name_owner_zone_criticality_and_services() -> None:
    assets = {a.network: a for a in read_file(DATA / "assets.csv").assets}
    dns = assets["4.2.2.3/32"]
    assert (dns.name, dns.owner, dns.zone, dns.criticality) == ("dns-edge-1", "netops", "dmz", 4)
    assert dns.services == (Service(53, "udp", "dns"), Service(53, "tcp", "dns"))
    assert assets["2001:db8:10::/48"].zone == "internal"


def test_toml_inventory_reads_asset_tables() -> None:
    web = {a.network: a for a in read_file(DATA / "assets.toml").assets}["172.16.5.0/24"]
    assert web.criticality == 5 and web.has_port(443, "tcp") and not web.has_port(22)


def test_csv_row_with_a_bad_value_is_an_error_naming_its_line() -> None:
    with pytest.raises(AssetFileError, match=r"site.csv:3: criticality '9'"):
        parse_csv("ip,name,criticality\n10.0.0.1,a,2\n10.0.0.2,b,9\n", "site.csv")
    with pytest.raises(AssetFileError, match="not an IP address"):
        parse_csv("ip,name\nnot-an-ip,a\n", "site.csv")
    with pytest.raises(AssetFileError, match="no ip or cidr column"):
        parse_csv("host,name\nx,y\n", "site.csv")


def test_lookup_takes_the_longest_matching_prefix() -> None:
    index = AssetIndex(
        [
            Asset("10.0.0.0/8", name="corp"),
            Asset("10.1.0.0/16", name="site-b"),
            Asset("10.1.2.3/32", name="db"),
            Asset("2001:db8::/32", name="v6"),
        ]
    )
    assert index.lookup("10.1.2.3").name == "db"  # type: ignore[union-attr]
    assert index.lookup("10.1.9.9").name == "site-b"  # type: ignore[union-attr]
    assert index.lookup("10.200.0.1").name == "corp"  # type: ignore[union-attr]
    assert index.lookup("2001:db8:0:1::5").name == "v6"  # type: ignore[union-attr]
    assert index.lookup("192.0.2.1") is None
    assert index.lookup("garbage") is None


def test_nessus_report_gives_scanned_hosts_and_cves_per_port() -> None:
    rep = read_file(DATA / "vulnerable.nessus").report
    assert rep is not None and rep.kind == "nessus"
    (host,) = rep.hosts
    assert host.network == "4.2.2.3/32" and host.scanned and host.name == "dns-edge-1.example.net"
    found = {(f.cve, f.port, f.proto, f.cvss) for f in rep.findings}
    assert found == {
        ("CVE-2020-1350", 53, "udp", 10.0),
        ("CVE-2017-0143", 445, "tcp", 8.1),
        ("CVE-2017-0144", 445, "tcp", 8.1),
    }


def test_openvas_report_reads_cve_refs_the_older_cve_list_and_scanned_hosts() -> None:
    rep = read_file(DATA / "openvas-report.xml").report
    assert rep is not None and rep.kind == "openvas"
    assert {(f.ip, f.cve, f.port) for f in rep.findings} == {
        ("172.16.5.20", "CVE-2021-44228", 443),
        ("172.16.5.21", "CVE-2013-2566", 0),
        ("172.16.5.21", "CVE-2015-2808", 0),
    }
    # A host the report lists without results was scanned and found clean.
    assert {h.network for h in rep.hosts} == {"172.16.5.20/32", "172.16.5.21/32", "172.16.5.22/32"}


def test_nmap_vulners_output_gives_open_services_and_cves() -> None:
    rep = read_file(DATA / "nmap-vulners.xml").report
    assert rep is not None and rep.kind == "nmap"
    (host,) = rep.hosts  # the down host is left out
    assert host.services == (Service(22, "tcp", "ssh"),) and host.os == "Linux 5.0 - 5.14"
    assert host.scanned  # the report ran the vulners script
    assert [(f.cve, f.port, f.cvss) for f in rep.findings] == [("CVE-2023-38408", 22, 9.8)]


def test_kev_catalog_marks_known_exploited_cves() -> None:
    rep = read_file(DATA / "kev.json").report
    assert rep is not None and rep.kind == "kev"
    log4j = rep.cves["CVE-2021-44228"]
    assert log4j.kev and log4j.ransomware and log4j.kev_added == "2021-12-10"


def test_nvd_file_gives_the_primary_cvss_v31_score_and_publication_date() -> None:
    rep = read_file(DATA / "nvd-cves.json").report
    assert rep is not None and rep.kind == "nvd"
    assert rep.cves["CVE-2023-38408"].cvss == 9.8  # Primary, not the Secondary 7.5
    assert rep.cves["CVE-2020-1350"].published.startswith("2020-07-14")


def test_catalogs_and_scans_merge_into_one_view_of_a_cve() -> None:
    ctx = load_context([DATA / "vulnerable.nessus", DATA / "kev.json", DATA / "nvd-cves.json"])
    info = ctx.vulns.info("CVE-2020-1350")
    assert info is not None and info.kev and info.cvss == 10.0
    assert [f.port for f in ctx.vulns.host_findings("4.2.2.3", "CVE-2020-1350")] == [53]


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<NessusClientData_v2><Report><ReportHost name="&lol2;"/></Report></NessusClientData_v2>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<nmaprun><host><address addr="&x;" addrtype="ipv4"/></host></nmaprun>"""


@pytest.mark.parametrize("payload", [BOMB, XXE], ids=["entity-expansion", "external-entity"])
def test_xml_with_a_dtd_is_refused(payload: bytes) -> None:
    with pytest.raises(AnalysisFileError, match="refused"):
        parse_file("evil.xml", payload)


def test_unknown_or_broken_files_are_clear_errors() -> None:
    with pytest.raises(AnalysisFileError, match="unknown XML report <svg>"):
        parse_file("x.xml", b"<svg/>")
    with pytest.raises(AnalysisFileError, match="not well-formed"):
        parse_file("x.nessus", b"<NessusClientData_v2><Report>")
    with pytest.raises(AnalysisFileError, match="vulnerabilities list"):
        parse_file("x.json", b'{"title": "not a catalog"}')
    with pytest.raises(AnalysisFileError, match="not a known format"):
        parse_file("notes.txt", b"hello")


def test_a_bad_file_is_skipped_and_the_others_still_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nessus"
    bad.write_bytes(b"<NessusClientData_v2>")
    ctx = load_context([bad, DATA / "assets.csv", tmp_path / "missing.csv"])
    assert len(ctx.assets) == 5
    assert len(ctx.failed) == 2 and "broken.nessus" in ctx.failed[0]


def test_rule_files_map_sids_to_cves_from_references_metadata_and_msg() -> None:
    sigs, errors = parse_rules((DATA / "local.rules").read_text(), "local.rules")
    by_sid = {s.sid: s for s in sigs}
    assert by_sid[2012811].cves == ("CVE-2020-1350",)  # reference:cve,2020-1350
    assert by_sid[2034647].cves == ("CVE-2021-44228",)  # metadata cve CVE_2021_44228
    assert by_sid[1000100].cves == ("CVE-2023-38408",)  # only in msg (quoted ';' kept)
    assert by_sid[1000100].classtype == "attempted-admin"
    assert not by_sid[1000101].enabled and by_sid[1000101].cves == ("CVE-2017-0144",)
    assert by_sid[477].cves == ()
    assert errors == ["local.rules:8: rule without a numeric sid"]


def test_rule_options_split_on_semicolons_outside_quotes_and_escapes() -> None:
    rule = (
        r'alert tcp any any -> any 80 (msg:"a \"quoted\; part\" here; CVE-2014-6271";'
        r' content:"|3b|"; reference:cve,CVE-2014-6271; sid:42; rev:1;)'
    )
    (sig,), errors = parse_rules(rule)
    assert errors == [] and sig.sid == 42 and sig.cves == ("CVE-2014-6271",)
    assert sig.msg == 'a "quoted; part" here; CVE-2014-6271'


def test_report_with_a_byte_order_mark_or_nothing_in_it(tmp_path: Path) -> None:
    bom = tmp_path / "bom.nessus"
    bom.write_bytes(b"\xef\xbb\xbf" + (DATA / "patched.nessus").read_bytes())
    assert read_file(bom).counts() == {"assets": 1, "findings": 1, "cves": 1}
    with pytest.raises(AnalysisFileError, match="not well-formed"):
        parse_file("empty.xml", b"<")
