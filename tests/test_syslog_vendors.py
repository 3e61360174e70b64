"""Vendor decoders: each fills the shared ECS contract the correlation rules are written against.

Lines are shaped after each vendor's published log format (addresses from documentation ranges).
"""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from appliance.config import SyslogSender, SyslogSource
from appliance.metrics import Registry
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.sources.syslog_intake import SyslogIntake
from appliance.store.segments import encode_line

pytestmark = pytest.mark.usefixtures("backend")

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def decode(line: bytes, hint: str | None = None) -> dict[str, Any]:
    msg = decode_syslog(line, NOW)
    fields = syslog_fields(msg, "192.0.2.1")
    name = REGISTRY.decode(msg, fields, REGISTRY.by_name[hint] if hint else None)
    fields["decoder"] = name
    return fields


def pick(fields: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: fields.get(k) for k in keys}


AUTH = ("event.category", "event.action", "event.outcome", "user.name", "source.ip", "source.port")
NET = (
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "network.transport",
)


def test_sshd_failed_password_meets_the_contract() -> None:
    f = decode(
        b"<38>Nov 29 11:59:00 web1 sshd[811]: Failed password for invalid user oracle "
        b"from 203.0.113.9 port 40022 ssh2"
    )
    assert f["decoder"] == "linux_auth"
    assert pick(f, *AUTH, "process.name") == {
        "event.category": ["authentication"],
        "event.action": "ssh_login",
        "event.outcome": "failure",
        "user.name": "oracle",
        "source.ip": "203.0.113.9",
        "source.port": 40022,
        "process.name": "sshd",
    }
    assert f["event.type"] == ["start"]


def test_sshd_accepted_publickey_is_a_success() -> None:
    f = decode(
        b"<38>Nov 29 11:59:00 web1 sshd[811]: Accepted publickey for deploy from "
        b"2001:db8::7 port 50111 ssh2: ED25519 SHA256:abc"
    )
    assert pick(f, "event.outcome", "user.name", "source.ip") == {
        "event.outcome": "success",
        "user.name": "deploy",
        "source.ip": "2001:db8::7",
    }


def test_pam_authentication_failure_names_user_and_remote_host() -> None:
    f = decode(
        b"<86>Nov 29 11:59:00 web1 sshd[9]: pam_unix(sshd:auth): authentication failure; "
        b"logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.4  user=root"
    )
    assert pick(f, "event.action", "event.outcome", "user.name", "source.ip") == {
        "event.action": "ssh_login",
        "event.outcome": "failure",
        "user.name": "root",
        "source.ip": "198.51.100.4",
    }


def test_sudo_command_records_who_ran_what_as_whom() -> None:
    f = decode(
        b"<85>Nov 29 11:59:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; "
        b"USER=root ; COMMAND=/usr/bin/id"
    )
    assert pick(
        f, "event.action", "event.outcome", "user.name", "user.target.name", "process.command_line"
    ) == {
        "event.action": "sudo",
        "event.outcome": "success",
        "user.name": "alice",
        "user.target.name": "root",
        "process.command_line": "/usr/bin/id",
    }


def test_sudo_not_in_sudoers_is_a_failure() -> None:
    f = decode(
        b"<85>Nov 29 11:59:00 web1 sudo:    mallory : user NOT in sudoers ; TTY=pts/1 ; "
        b"PWD=/tmp ; USER=root ; COMMAND=/bin/sh"
    )
    assert pick(f, "event.outcome", "user.name") == {
        "event.outcome": "failure",
        "user.name": "mallory",
    }


def test_su_failure() -> None:
    f = decode(b"<34>Nov 29 11:59:00 web1 su[77]: FAILED su for root by bob")
    assert pick(f, "event.action", "event.outcome", "user.name", "user.target.name") == {
        "event.action": "su",
        "event.outcome": "failure",
        "user.name": "bob",
        "user.target.name": "root",
    }


def test_dropbear_bad_password() -> None:
    f = decode(
        b"<38>Nov 29 11:59:00 ap dropbear[14]: Bad password attempt for 'root' from "
        b"192.0.2.50:41000"
    )
    assert pick(f, *AUTH) == {
        "event.category": ["authentication"],
        "event.action": "ssh_login",
        "event.outcome": "failure",
        "user.name": "root",
        "source.ip": "192.0.2.50",
        "source.port": 41000,
    }


def test_cisco_asa_acl_deny() -> None:
    f = decode(
        b"<164>Nov 29 2026 11:59:00: %ASA-4-106023: Deny tcp src outside:198.51.100.7/4455 "
        b'dst inside:10.0.0.5/22 by access-group "outside_in" [0x0, 0x0]'
    )
    assert f["decoder"] == "cisco_asa"
    assert pick(
        f,
        *NET,
        "rule.name",
        "observer.vendor",
        "observer.product",
        "observer.ingress.interface.name",
    ) == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "source.ip": "198.51.100.7",
        "source.port": 4455,
        "destination.ip": "10.0.0.5",
        "destination.port": 22,
        "network.transport": "tcp",
        "rule.name": "outside_in",
        "observer.vendor": "Cisco",
        "observer.product": "asa",
        "observer.ingress.interface.name": "outside",
    }


def test_cisco_ftd_teardown_counts_bytes() -> None:
    f = decode(
        b"%FTD-6-302014: Teardown TCP connection 77 for outside:192.0.2.1/443 to "
        b"inside:10.1.1.1/51000 duration 0:00:10 bytes 4096 TCP FINs"
    )
    assert pick(f, "observer.product", "event.action", "network.bytes", "source.ip") == {
        "observer.product": "ftd",
        "event.action": "end",
        "network.bytes": 4096,
        "source.ip": "192.0.2.1",
    }


def test_cisco_asa_admin_login_denied() -> None:
    f = decode(
        b"%ASA-6-605004: Login denied from 192.0.2.44/5123 to outside:192.0.2.1/ssh for "
        b'user "admin"'
    )
    assert pick(f, *AUTH) == {
        "event.category": ["authentication"],
        "event.action": "login",
        "event.outcome": "failure",
        "user.name": "admin",
        "source.ip": "192.0.2.44",
        "source.port": 5123,
    }


def test_cisco_asa_outbound_connection_is_sourced_at_the_inside_host() -> None:
    """ "Built outbound ... for OUTSIDE to INSIDE": the inside host opened it (elastic/integrations
    cisco_asa test-additional-messages.log). Read for-side first, an SNMP query to 10.10.10.10
    looked like traffic from port 161 and firewall_cleartext_admin_allowed never saw it."""
    f = decode(
        b"May  5 18:40:50 dev01: %ASA-2-302015: Built outbound UDP connection 1743372 for "
        b"intfacename:10.10.10.10/161 (81.2.69.144/161) to net:192.168.2.2/22638 "
        b"(81.2.69.144/22638)"
    )
    assert pick(
        f,
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "observer.ingress.interface.name",
        "observer.egress.interface.name",
    ) == {
        "source.ip": "192.168.2.2",
        "source.port": 22638,
        "destination.ip": "10.10.10.10",
        "destination.port": 161,
        "observer.ingress.interface.name": "net",
        "observer.egress.interface.name": "intfacename",
    }
    inbound = decode(
        b"%ASA-6-302013: Built inbound TCP connection 9 for outside:203.0.113.9/40022 "
        b"(203.0.113.9/40022) to inside:10.1.1.2/23 (10.1.1.2/23)"
    )
    assert pick(inbound, "source.ip", "destination.port") == {
        "source.ip": "203.0.113.9",
        "destination.port": 23,
    }


@pytest.mark.parametrize(
    ("line", "user", "ip"),
    [
        (
            b"Apr 27 02:03:03 dev01: %ASA-4-722051: Group <VPN5Policy> User <john> "
            b"IP <192.168.50.3> IPv4 Address <192.168.50.5> IPv6 address <::> assigned to session",
            "john",
            "192.168.50.3",
        ),
        # Cisco's 716001 text ("Group g User u IP a WebVPN session started.") without brackets
        (
            b"%ASA-6-716001: Group another-policy User testuser IP 81.2.69.144 WebVPN session "
            b"started.",
            "testuser",
            "81.2.69.144",
        ),
    ],
)
def test_cisco_asa_vpn_session_names_user_and_client_address(line: bytes, user: str, ip: str
                                                             ) -> None:  # fmt: skip
    """vpn_login_from_ids_flagged_source groups by source.ip: without it an ASA VPN login
    could never meet the IDS alert about the same address."""
    f = decode(line)
    assert pick(f, "event.action", "event.outcome", "user.name", "source.ip") == {
        "event.action": "vpn_login",
        "event.outcome": "success",
        "user.name": user,
        "source.ip": ip,
    }


def test_cisco_asa_labelled_uname_wins_over_the_word_after_user() -> None:
    for line in (
        b"%ASA-5-611103: User logged out: Uname: impssnagios",
        b"%ASA-5-502103: User priv level changed: Uname: impssnagios From: 1 To: 15",
    ):
        assert decode(line)["user.name"] == "impssnagios"


def test_cisco_ios_interface_down_with_sequence_number() -> None:
    f = decode(
        b"<187>4711: Nov 29 11:59:00.123: %LINK-3-UPDOWN: Interface GigabitEthernet0/1, "
        b"changed state to down"
    )
    assert f["decoder"] == "cisco_ios"
    assert pick(
        f, "event.action", "observer.ingress.interface.name", "event.sequence", "event.code"
    ) == {
        "event.action": "interface_down",
        "observer.ingress.interface.name": "GigabitEthernet0/1",
        "event.sequence": 4711,
        "event.code": "LINK-3-UPDOWN",
    }


def test_cisco_ios_config_change_by_user() -> None:
    f = decode(
        b"<189>Nov 29 11:59:00 r1 88: *Nov 29 11:59:00.001 UTC: %SYS-5-CONFIG_I: "
        b"Configured from console by admin on vty0 (192.0.2.8)"
    )
    assert pick(f, "event.category", "event.action", "user.name", "source.ip") == {
        "event.category": ["configuration"],
        "event.action": "config_change",
        "user.name": "admin",
        "source.ip": "192.0.2.8",
    }


def test_fortigate_traffic_deny() -> None:
    f = decode(
        b'<189>date=2026-11-29 time=11:59:00 devname="fw1" devid="FG100E0000000001" '
        b'logid="0000000013" type="traffic" subtype="forward" level="notice" '
        b'srcip=10.1.1.5 srcport=50000 srcintf="port1" dstip=198.51.100.80 dstport=443 '
        b'dstintf="wan1" proto=6 action="deny" policyid=12 sentbyte=0 rcvdbyte=0'
    )
    assert f["decoder"] == "fortigate"
    assert pick(f, *NET, "rule.id", "observer.ingress.interface.name") == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "source.ip": "10.1.1.5",
        "source.port": 50000,
        "destination.ip": "198.51.100.80",
        "destination.port": 443,
        "network.transport": "tcp",
        "rule.id": "12",
        "observer.ingress.interface.name": "port1",
    }


def test_fortigate_admin_login_failed() -> None:
    f = decode(
        b'date=2026-11-29 time=11:59:00 devname="fw1" devid="FG1" logid="0100032002" '
        b'type="event" subtype="system" level="alert" user="admin" '
        b'ui="ssh(203.0.113.77)" action="login" status="failed" reason="passwd_invalid"'
    )
    assert pick(f, "event.category", "event.action", "event.outcome", "user.name", "source.ip") == {
        "event.category": ["authentication"],
        "event.action": "login",
        "event.outcome": "failure",
        "user.name": "admin",
        "source.ip": "203.0.113.77",
    }


PAN_TRAFFIC = (
    b"<14>Nov 29 11:59:00 pa1 1,2026/11/29 11:59:00,001801000001,TRAFFIC,end,2561,"
    b"2026/11/29 11:59:00,10.0.0.10,198.51.100.20,203.0.113.1,198.51.100.20,allow-web,,,ssl,"
    b"vsys1,trust,untrust,ethernet1/2,ethernet1/1,fwd,2026/11/29 11:59:00,33,1,51515,443,"
    b"40000,443,0x400000,tcp,allow,5000,2000,3000,12,2026/11/29 11:58:50,10,any,0,1,0x0,"
    b"10.0.0.0-10.255.255.255,United States,0,6,6"
)


def test_paloalto_traffic() -> None:
    f = decode(PAN_TRAFFIC)
    assert f["decoder"] == "paloalto"
    assert pick(f, *NET, "rule.name", "network.bytes", "network.packets") == {
        "event.category": ["network"],
        "event.type": ["connection", "allowed", "end"],
        "event.action": "allow",
        "event.outcome": "success",
        "source.ip": "10.0.0.10",
        "source.port": 51515,
        "destination.ip": "198.51.100.20",
        "destination.port": 443,
        "network.transport": "tcp",
        "rule.name": "allow-web",
        "network.bytes": 5000,
        "network.packets": 12,
    }


def test_paloalto_threat_names_the_signature() -> None:
    line = PAN_TRAFFIC.replace(b"TRAFFIC,end", b"THREAT,vulnerability").replace(
        b",allow,5000,2000,3000,12,", b',reset-both,"/login.php",Bad Exploit(90255),any,high,'
    )
    f = decode(line)
    assert pick(
        f, "event.kind", "event.category", "rule.name", "rule.id", "event.action", "event.severity"
    ) == {
        "event.kind": "alert",
        "event.category": ["intrusion_detection"],
        "rule.name": "Bad Exploit",
        "rule.id": "90255",
        "event.action": "reject",
        "event.severity": 2,
    }


def test_paloalto_system_event() -> None:
    f = decode(
        b"1,2026/11/29 11:59:00,0011,SYSTEM,auth,0,2026/11/29 11:59:00,,auth-fail,admin,"
        b"0,0,general,medium,\"failed authentication for user 'admin'\",1,0x0"
    )
    assert pick(f, "event.code", "event.category", "event.outcome") == {
        "event.code": "auth-fail",
        "event.category": ["authentication"],
        "event.outcome": "failure",
    }


def test_pfsense_filterlog_block() -> None:
    f = decode(
        b"<134>Nov 29 11:59:00 filterlog[123]: 5,,,1000000103,igb0,match,block,in,4,0x0,,"
        b"64,0,0,DF,6,tcp,60,198.51.100.9,10.0.0.1,51000,22,0,S,1,,64240,,mss"
    )
    assert f["decoder"] == "pfsense_filterlog"
    assert pick(f, *NET, "observer.ingress.interface.name") == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "source.ip": "198.51.100.9",
        "source.port": 51000,
        "destination.ip": "10.0.0.1",
        "destination.port": 22,
        "network.transport": "tcp",
        "observer.ingress.interface.name": "igb0",
    }


def test_netfilter_drop_from_kernel() -> None:
    f = decode(
        b"<4>Nov 29 11:59:00 gw kernel: [12.5] INPUT-DROP: IN=eth0 OUT= MAC=00:11 "
        b"SRC=203.0.113.5 DST=10.0.0.2 LEN=60 TOS=0x00 TTL=50 ID=1 DF PROTO=UDP SPT=53 "
        b"DPT=33000 LEN=40"
    )
    assert f["decoder"] == "netfilter"
    assert pick(f, *NET, "rule.name") == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "drop",
        "event.outcome": "failure",
        "source.ip": "203.0.113.5",
        "source.port": 53,
        "destination.ip": "10.0.0.2",
        "destination.port": 33000,
        "network.transport": "udp",
        "rule.name": "INPUT-DROP",
    }


def test_kernel_line_without_netfilter_fields_stays_generic() -> None:
    assert decode(b"<6>Nov 29 11:59:00 gw kernel: usb 1-1: new device")["decoder"] == ""


def test_juniper_srx_native_rfc5424_session_deny() -> None:
    f = decode(
        b"<14>1 2026-11-29T11:59:00.000Z srx1 RT_FLOW - RT_FLOW_SESSION_DENY "
        b'[junos@2636.1.1.1.2.40 source-address="198.51.100.3" source-port="5353" '
        b'destination-address="10.0.0.9" destination-port="445" protocol-id="6" '
        b'policy-name="deny-all" source-zone-name="untrust"] session denied'
    )
    assert f["decoder"] == "juniper_srx"
    assert pick(f, *NET, "rule.name") == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "source.ip": "198.51.100.3",
        "source.port": 5353,
        "destination.ip": "10.0.0.9",
        "destination.port": 445,
        "network.transport": "tcp",
        "rule.name": "deny-all",
    }


def test_f5_bigip_code_and_level() -> None:
    f = decode(
        b"<133>Nov 29 11:59:00 lb1 notice tmm1[1234]: 01010028:3: No members available "
        b"for pool /Common/web"
    )
    assert pick(f, "decoder", "event.code", "observer.vendor", "process.name") == {
        "decoder": "f5_bigip",
        "event.code": "01010028",
        "observer.vendor": "F5",
        "process.name": "tmm1",
    }


def test_snort_fast_alert() -> None:
    f = decode(
        b"<33>Nov 29 11:59:00 ids snort[2]: [1:2003:8] MS-SQL Worm propagation attempt "
        b"[Classification: Misc Attack] [Priority: 2] {UDP} 198.51.100.66:1034 -> "
        b"10.0.0.4:1434"
    )
    assert pick(
        f,
        "decoder",
        "event.kind",
        "event.category",
        "rule.id",
        "rule.name",
        "event.severity",
        "source.ip",
        "destination.port",
    ) == {
        "decoder": "snort",
        "event.kind": "alert",
        "event.category": ["intrusion_detection"],
        "rule.id": "2003",
        "rule.name": "MS-SQL Worm propagation attempt",
        "event.severity": 2,
        "source.ip": "198.51.100.66",
        "destination.port": 1434,
    }


def test_suricata_eve_alert() -> None:
    f = decode(
        b'<14>Nov 29 11:59:00 ids suricata[5]: {"timestamp":"2026-11-29T11:59:00.1+0000",'
        b'"event_type":"alert","src_ip":"198.51.100.2","src_port":4444,"dest_ip":'
        b'"10.0.0.3","dest_port":80,"proto":"TCP","alert":{"action":"blocked",'
        b'"signature_id":2100498,"signature":"GPL ATTACK_RESPONSE id check returned root",'
        b'"category":"Potentially Bad Traffic","severity":2}}'
    )
    assert pick(
        f,
        "decoder",
        "event.kind",
        "rule.id",
        "rule.name",
        "event.severity",
        "event.action",
        "source.ip",
        "destination.port",
        "network.transport",
    ) == {
        "decoder": "suricata_eve",
        "event.kind": "alert",
        "rule.id": "2100498",
        "rule.name": "GPL ATTACK_RESPONSE id check returned root",
        "event.severity": 2,
        "event.action": "drop",
        "source.ip": "198.51.100.2",
        "destination.port": 80,
        "network.transport": "tcp",
    }


@pytest.mark.parametrize("value", ['{"a":1}', "[1]", "7", "true", "null"])
def test_suricata_eve_members_of_the_wrong_json_type_are_left_out(value: str) -> None:
    doc = f'{{"event_type":"alert","src_ip":{value},"dest_ip":{value},"dest_port":80,'
    doc += f'"alert":{{"action":{value},"signature":"x"}}}}'
    f = decode(b"<14>Nov 29 11:59:00 ids suricata[5]: " + doc.encode())
    assert pick(f, "decoder", "source.ip", "destination.ip", "event.action", "rule.name") == {
        "decoder": "suricata_eve",
        "source.ip": None,
        "destination.ip": None,
        "event.action": None,
        "rule.name": "x",
    }


def test_windows_snare_failed_logon() -> None:
    body = (
        "An account failed to log on.    Subject:   Security ID:  S-1-0-0   Account Name:  -"
        "    Account For Which Logon Failed:   Security ID:  S-1-0-0   Account Name:  "
        "jdoe   Account Domain:  CORP    Network Information:   Workstation Name:  WS1   "
        "Source Network Address: 192.0.2.77   Source Port:  50123"
    )
    line = (
        "<13>Nov 29 11:59:00 DC1 MSWinEventLog\t1\tSecurity\t123\tSun Nov 29 11:59:00 2026\t"
        "4625\tMicrosoft-Windows-Security-Auditing\tN/A\tN/A\tFailure Audit\tDC1\tLogon\t\t"
        f"{body}\t99"
    ).encode()
    f = decode(line)
    assert pick(f, "decoder", "event.code", *AUTH) == {
        "decoder": "windows",
        "event.code": "4625",
        "event.category": ["authentication"],
        "event.action": "login",
        "event.outcome": "failure",
        "user.name": "jdoe",
        "source.ip": "192.0.2.77",
        "source.port": 50123,
    }


def test_windows_eventchannel_json() -> None:
    f = decode(
        b'{"win":{"system":{"eventID":"4720","channel":"Security","computer":"DC1",'
        b'"keywords":"0x8020000000000000"},"eventdata":{"targetUserName":"newbie",'
        b'"subjectUserName":"admin"}}}'
    )
    assert pick(f, "decoder", "event.code", "event.action", "user.name", "host.name") == {
        "decoder": "windows",
        "event.code": "4720",
        "event.action": "user_created",
        "user.name": "newbie",
        "host.name": "DC1",
    }


# Microsoft Defender Antivirus: the rendered 1116 text as learn.microsoft.com documents it
# ("Microsoft Defender Antivirus event IDs and error codes"), names and addresses made up.
DEFENDER_1116_TEXT = (
    "Microsoft Defender Antivirus has detected malware or other potentially unwanted software.  "
    "For more information please see the following:  https://go.microsoft.com/fwlink/?linkid="
    "37020&name=Virus:DOS/EICAR_Test_File&threatid=2147519003&enterprise=0   "
    "Name: Virus:DOS/EICAR_Test_File   ID: 2147519003   Severity: Severe   Category: Virus   "
    "Path: file:_C:\\Users\\alice\\Downloads\\eicar.com   Detection Origin: Local machine   "
    "Detection Type: Concrete   Detection Source: Real-Time Protection   User: EXAMPLE\\alice   "
    "Process Name: C:\\Windows\\explorer.exe   Security intelligence Version: AV: 1.381.3595.0, "
    "AS: 1.381.3595.0, NIS: 1.381.3595.0   Engine Version: AM: 1.1.22900.7, NIS: 1.1.22900.7"
)
AV = (
    "event.category",
    "event.kind",
    "event.type",
    "event.action",
    "event.outcome",
    "rule.name",
    "file.path",
    "file.name",
    "user.name",
    "host.name",
    "observer.type",
)


def snare(event_id: str, provider: str, text: str, level: str = "Warning") -> bytes:
    return (
        "<13>Nov 29 11:59:00 WS-031 MSWinEventLog\t1\tMicrosoft-Windows-Windows Defender/"
        f"Operational\t4512\tSun Nov 29 11:59:00 2026\t{event_id}\t{provider}\tN/A\tN/A\t"
        f"{level}\tWS-031\tNone\t\t{text}\t77"
    ).encode()


def test_defender_detection_via_snare() -> None:
    f = decode(snare("1116", "Microsoft-Windows-Windows Defender", DEFENDER_1116_TEXT))
    assert f["decoder"] == "windows"
    assert pick(f, *AV, "rule.id", "rule.category", "process.executable") == {
        "event.category": ["malware"],
        "event.kind": "alert",
        "event.type": ["info"],
        "event.action": "detected",
        "event.outcome": None,
        "rule.name": "Virus:DOS/EICAR_Test_File",
        "file.path": "C:\\Users\\alice\\Downloads\\eicar.com",
        "file.name": "eicar.com",
        "user.name": "EXAMPLE\\alice",
        "host.name": "WS-031",
        "observer.type": "antivirus",
        "rule.id": "2147519003",
        "rule.category": "Virus",
        "process.executable": "C:\\Windows\\explorer.exe",
    }
    assert f["observer.product"] == "Microsoft Defender Antivirus"
    assert f["windows_defender.signature_version"].startswith("AV: 1.381.3595.0")


def test_defender_ids_mean_nothing_from_another_provider() -> None:
    f = decode(snare("1116", "Some-Other-Provider", DEFENDER_1116_TEXT))
    assert f["decoder"] == "windows" and "event.category" not in f
    assert f["observer.product"] == "Windows"


def test_defender_action_taken_and_failed_via_snare() -> None:
    quarantined = DEFENDER_1116_TEXT.replace("Detection Type", "Action: Quarantine   X")
    f = decode(snare("1117", "Microsoft-Windows-Windows Defender", quarantined, "Information"))
    assert pick(f, "event.action", "event.outcome", "event.type") == {
        "event.action": "quarantined",
        "event.outcome": "success",
        "event.type": ["change"],
    }
    failed = DEFENDER_1116_TEXT + "   Error Code: 0x80508023   Error description: The program "
    f = decode(snare("1118", "Microsoft-Windows-Windows Defender", failed + "could not find"))
    assert pick(f, "event.action", "event.outcome", "event.kind", "error.code") == {
        "event.action": "clean_failed",
        "event.outcome": "failure",
        "event.kind": "alert",
        "error.code": "0x80508023",
    }


def test_defender_eventchannel_json_and_protection_disabled() -> None:
    f = decode(
        b'{"win":{"system":{"providerName":"Microsoft-Windows-Windows Defender",'
        b'"eventID":"1116","channel":"Microsoft-Windows-Windows Defender/Operational",'
        b'"computer":"WS-031"},"eventdata":{"threat Name":"Virus:DOS/EICAR_Test_File",'
        b'"path":"file:_C:\\\\t\\\\eicar.com","detection User":"EXAMPLE\\\\alice",'
        b'"severity Name":"Severe"}}}'
    )
    assert pick(f, "decoder", "event.action", "rule.name", "file.path", "user.name") == {
        "decoder": "windows",
        "event.action": "detected",
        "rule.name": "Virus:DOS/EICAR_Test_File",
        "file.path": "C:\\t\\eicar.com",
        "user.name": "EXAMPLE\\alice",
    }
    f = decode(
        b'{"win":{"system":{"providerName":"Microsoft-Windows-Windows Defender",'
        b'"eventID":"5001","computer":"WS-031"},"eventdata":{}}}'
    )
    assert pick(f, "event.action", "event.kind") == {
        "event.action": "protection_disabled",
        "event.kind": "alert",
    }


def test_defender_nxlog_and_winlogbeat_json() -> None:
    nxlog = (
        b'{"EventTime":"2026-11-29 11:59:00","Hostname":"WS-032","EventID":2001,'
        b'"SourceName":"Microsoft-Windows-Windows Defender","Channel":"Microsoft-Windows-'
        b'Windows Defender/Operational","Category":"None","Severity":"ERROR",'
        b'"Current security intelligence Version":"1.381.3595.0","Error Code":"0x8024402c",'
        b'"Error description":"The update could not be downloaded.",'
        b'"Message":"Microsoft Defender Antivirus has encountered an error trying to update '
        b'security intelligence."}'
    )
    f = decode(b"<14>Nov 29 11:59:00 WS-032 " + nxlog)
    assert pick(
        f,
        "decoder",
        "event.action",
        "event.outcome",
        "host.name",
        "rule.category",
        "windows_defender.signature_version",
        "error.message",
    ) == {
        "decoder": "windows",
        "event.action": "signature_update_failed",
        "event.outcome": "failure",
        "host.name": "WS-032",
        "rule.category": None,
        "windows_defender.signature_version": "1.381.3595.0",
        "error.message": "The update could not be downloaded.",
    }
    beat = (
        b'{"@timestamp":"2026-11-29T11:59:00Z","message":"Microsoft Defender Antivirus took '
        b'action","winlog":{"event_id":1117,"provider_name":"Microsoft-Windows-Windows '
        b'Defender","computer_name":"WS-033","channel":"Microsoft-Windows-Windows Defender/'
        b'Operational","event_data":{"Threat Name":"Trojan:Win32/Wacatac.B!ml",'
        b'"Action Name":"Remove","Path":"file:_C:\\\\x\\\\a.exe->(UPX)"}}}'
    )
    f = decode(b"<14>Nov 29 11:59:00 WS-033 " + beat)
    assert pick(
        f, "decoder", "event.action", "event.type", "rule.name", "file.path", "host.name"
    ) == {
        "decoder": "windows",
        "event.action": "deleted",
        "event.type": ["deletion"],
        "rule.name": "Trojan:Win32/Wacatac.B!ml",
        "file.path": "C:\\x\\a.exe",
        "host.name": "WS-033",
    }


def test_nxlog_security_event_reads_pascal_case_event_data() -> None:
    f = decode(
        b'{"Hostname":"DC1","EventID":4625,"SourceName":"Microsoft-Windows-Security-'
        b'Auditing","Channel":"Security","Keywords":"0x8010000000000000",'
        b'"TargetUserName":"jdoe","IpAddress":"192.0.2.77","IpPort":"50123"}'
    )
    assert pick(f, "decoder", *AUTH) == {
        "decoder": "windows",
        "event.category": ["authentication"],
        "event.action": "login",
        "event.outcome": "failure",
        "user.name": "jdoe",
        "source.ip": "192.0.2.77",
        "source.port": 50123,
    }


# Trend Micro Deep Security's Anti-Malware CEF and LEEF examples from its "Syslog message
# formats" help page (the "<DSA version>" placeholder filled in), behind a syslog header.
TREND_DS_CEF = (
    b"<134>Nov 29 10:00:00 dsm01 CEF:0|Trend Micro|Deep Security Agent|20.0.0.877|4000000|"
    b"Eicar_test_file|6|cn1=1 cn1Label=Host ID dvchost=hostname cn2=205 cn2Label=Quarantine File "
    b"Size cs6=ContainerImageName | ContainerName | ContainerID cs6Label=Container "
    b"filePath=C:\\\\Users\\\\trend\\\\Desktop\\\\eicar.exe act=Delete result=Delete msg=Realtime "
    b"TrendMicroDsMalwareTarget=N/A TrendMicroDsMalwareTargetType=N/A "
    b"TrendMicroDsFileMD5=44D88612FEA8A8F36DE82E1278ABB02F "
    b"TrendMicroDsFileSHA1=3395856CE81F2B7382DEE72602F798B642F14140 "
    b"TrendMicroDsFileSHA256=275A021BBFB6489E54D471899F7DB9D1663FC695EC2FE2A2C4538AABF651FD0F "
    b"TrendMicroDsDetectionConfidence=95 "
    b"TrendMicroDsRelevantDetectionNames=Ransom_CERBER.BZC;Ransom_CERBER.C;Ransom_CRYPNISCA.SM"
)
TREND_DS_LEEF = (
    b"<134>Nov 29 10:00:00 dsm01 LEEF:2.0|Trend Micro|Deep Security Agent|20.0.0.877|4000030|"
    b"cat=Anti-Malware\tname=HEU_AEGIS_CRYPT\tdesc=HEU_AEGIS_CRYPT\tsev=6\tcn1=241\t"
    b"cn1Label=Host ID\tdvc=192.0.2.60\tTrendMicroDsTags=FS\tTrendMicroDsTenant=Primary\t"
    b"TrendMicroDsTenantId=0\tfilePath=C:\\Windows\\System32\\virus.exe\tact=Terminate\t"
    b"msg=Realtime\tTrendMicroDsMalwareTarget=Multiple\tTrendMicroDsMalwareTargetType=File System"
)
# Kaspersky Security Center CEF: the task-state line is a real one (syslog-ng's parse_cef tests
# and splunk-connect-for-syslog's Kaspersky test); the detection is shaped after KSC's CEF
# header and Kaspersky Endpoint Security's event text ("Result\Name:", "Object:", "SHA256:"),
# with documentation addresses.
KSC_TASK = (
    b"<14>Nov 29 10:00:00 ksc01 CEF:0|KasperskyLab|SecurityCenter|13.2.0.1511|KLPRCI_TaskState|"
    b"Completed successfully|1|rt=1647626887000 cs9=site location Bldg cs9Label=GroupName "
    b"dhost=WS6465 dst=10.55.203.12 cs2=KES cs2Label=ProductName cs3=11.0.0.0 "
    b"cs3Label=ProductVersion cs10=Uninstall EDR cs10Label=TaskName cs4=885 cs4Label=TaskId "
    b"cn2=4 cn2Label=TaskNewState cn1=0 cn1Label=TaskOldState"
)


def ksc(event: str, title: str, result: str) -> bytes:
    return (
        "<12>Nov 29 10:00:00 ksc01 CEF:0|KasperskyLab|SecurityCenter|14.2.0.26967|"
        f"{event}|{title}|4|msg=User: EXAMPLE\\\\alice (Initiator)\\nComponent: File Threat "
        f"Protection\\nResult\\\\Description: {result}\\nResult\\\\Type: Virus\\nResult\\\\Name: "
        "EICAR-Test-File\\nObject: C:\\\\Users\\\\alice\\\\Downloads\\\\eicar.com\\n"
        "Object\\\\Name: eicar.com\\n"
        "SHA256: 275A021BBFB6489E54D471899F7DB9D1663FC695EC2FE2A2C4538AABF651FD0F\\n "
        "rt=1796032800000 dhost=WS-051 dst=192.0.2.51 cs2=KES cs2Label=ProductName "
        "cs3=12.5.0.0 cs3Label=ProductVersion"
    ).encode()


def test_trend_micro_deep_security_anti_malware_cef() -> None:
    f = decode(TREND_DS_CEF)
    assert f["decoder"] == "cef"
    assert pick(f, *AV, "file.hash.sha256", "file.hash.md5", "observer.product") == {
        "event.category": ["malware"],
        "event.kind": "alert",
        "event.type": ["deletion"],
        "event.action": "deleted",
        "event.outcome": "success",
        "rule.name": "Eicar_test_file",
        "file.path": "C:\\Users\\trend\\Desktop\\eicar.exe",
        "file.name": "eicar.exe",
        "user.name": None,
        "host.name": "hostname",
        "observer.type": "antivirus",
        "file.hash.sha256": "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
        "file.hash.md5": "44d88612fea8a8f36de82e1278abb02f",
        "observer.product": "Deep Security",
    }
    assert "trendmicro.malware_target" not in f  # "N/A"


def test_trend_micro_deep_security_other_events_stay_plain_cef() -> None:
    f = decode(
        b"<134>Nov 29 10:00:00 dsm01 CEF:0|Trend Micro|Deep Security Agent|20.0|21|Deny "
        b"Inbound Management|5|cn1=101 cn1Label=Host ID dvchost=app-01 act=Deny "
        b"src=192.0.2.77 dst=192.0.2.15 proto=TCP spt=45856 dpt=445"
    )
    assert f["decoder"] == "cef" and "event.category" not in f
    assert f["event.action"] == "Deny"


def test_trend_micro_deep_security_anti_malware_leef() -> None:
    f = decode(TREND_DS_LEEF)
    assert pick(
        f,
        "decoder",
        "event.action",
        "event.kind",
        "rule.name",
        "file.path",
        "file.name",
        "rule.category",
    ) == {
        "decoder": "leef",
        "event.action": "blocked",
        "event.kind": "alert",
        "rule.name": "HEU_AEGIS_CRYPT",
        "file.path": "C:\\Windows\\System32\\virus.exe",
        "file.name": "virus.exe",
        "rule.category": "Anti-Malware",
    }


def test_kaspersky_security_center_cef() -> None:
    f = decode(ksc("GNRL_EV_VIRUS_FOUND", "Malicious object detected", "Detected"))
    assert pick(f, *AV, "rule.category", "file.hash.sha256") == {
        "event.category": ["malware"],
        "event.kind": "alert",
        "event.type": ["info"],
        "event.action": "detected",
        "event.outcome": None,
        "rule.name": "EICAR-Test-File",
        "file.path": "C:\\Users\\alice\\Downloads\\eicar.com",
        "file.name": "eicar.com",
        "user.name": "EXAMPLE\\alice",
        "host.name": "WS-051",
        "observer.type": "antivirus",
        "rule.category": "Virus",
        "file.hash.sha256": "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
    }
    f = decode(ksc("GNRL_EV_OBJECT_NOTCURED", "Object not disinfected", "Not disinfected"))
    assert pick(f, "event.action", "event.outcome") == {
        "event.action": "clean_failed",
        "event.outcome": "failure",
    }
    f = decode(ksc("GNRL_EV_OBJECT_QUARANTINED", "Object moved to quarantine", "Quarantined"))
    assert f["event.action"] == "quarantined"
    f = decode(KSC_TASK)
    assert f["decoder"] == "cef" and f["observer.type"] == "antivirus"
    assert "event.category" not in f


@pytest.mark.parametrize(
    ("line", "decoder"),
    [
        (b"<36>Nov 29 10:00:00 mail1 clamd[2321]: /tmp/e.com: Eicar-Signature FOUND", "clamav"),
        (b"<30>Nov 29 10:00:00 mail1 freshclam[1207]: ClamAV update process started", "clamav"),
        (b"<51>Nov 29 10:00:00 sepm01 SymantecServer: Virus found,IP Address: 192.0.2.3,"
         b"Computer name: WS1,Source: Real Time Scan,Risk name: EICAR Test String,Occurrences: 1,"
         b"File path: C:\\e.com,Actual action: Deleted", "symantec_endpoint"),
        (b"<51>Nov 29 10:00:00 sepm01 Virus found,IP Address: 192.0.2.3,Computer name: WS1,"
         b"Source: Real Time Scan,Risk name: EICAR Test String,Occurrences: 1,File path: "
         b"C:\\e.com,Actual action: Deleted", "symantec_endpoint"),
        (b'<14>Nov 29 10:00:00 era01 ERAServer[5032]: {"event_type":"Threat_Event",'
         b'"source_uuid":"u1","threat_name":"Eicar"}', "eset_protect"),
        (b'{"event_type":"Threat_Event","source_uuid":"u1","threat_name":"Eicar"}',
         "eset_protect"),
        (b'{"event_type":"alert","src_ip":"192.0.2.9","alert":{"signature":"ET POLICY"}}',
         "suricata_eve"),
        (b'{"hostname":"ws1","threat_name":"Eicar"}', "json"),  # no event_type: not ESET's
        (b'{"win":{"system":{"eventID":"1116","providerName":"Microsoft-Windows-Windows '
         b'Defender"}}}', "windows"),
    ],
)  # fmt: skip
def test_antivirus_lines_reach_their_decoder(line: bytes, decoder: str) -> None:
    assert decode(line)["decoder"] == decoder


def test_cef_header_and_extensions() -> None:
    f = decode(
        b"<134>Nov 29 11:59:00 host CEF:0|Acme|Guard|2.1|1001|Port scan\\|sweep|8|"
        b"src=198.51.100.1 spt=1234 dst=10.0.0.1 dpt=22 proto=TCP duser=alice "
        b"msg=Detected a sweep with spaces act=blocked cs1Label=zone cs1=dmz"
    )
    assert pick(
        f,
        "decoder",
        "observer.vendor",
        "observer.product",
        "rule.id",
        "rule.name",
        "event.severity",
        "source.ip",
        "destination.port",
        "user.name",
        "message",
        "event.action",
        "cef.extensions.zone",
    ) == {
        "decoder": "cef",
        "observer.vendor": "Acme",
        "observer.product": "Guard",
        "rule.id": "1001",
        "rule.name": "Port scan|sweep",
        "event.severity": 8,
        "source.ip": "198.51.100.1",
        "destination.port": 22,
        "user.name": "alice",
        "message": "Detected a sweep with spaces",
        "event.action": "blocked",
        "cef.extensions.zone": "dmz",
    }


def test_leef_tab_separated_attributes() -> None:
    f = decode(
        b"LEEF:1.0|Acme|Sensor|1.0|LoginFail|src=192.0.2.3\tdst=10.0.0.2\t"
        b"srcPort=5555\tusrName=carol\tsev=7"
    )
    assert pick(
        f, "decoder", "event.code", "source.ip", "source.port", "user.name", "event.severity"
    ) == {
        "decoder": "leef",
        "event.code": "LoginFail",
        "source.ip": "192.0.2.3",
        "source.port": 5555,
        "user.name": "carol",
        "event.severity": 7,
    }


def test_generic_key_value_payload() -> None:
    f = decode(b"<14>Nov 29 11:59:00 box app: user=dave src=192.0.2.8 action=export rows=10")
    assert pick(f, "decoder", "user.name", "source.ip", "event.action", "kv.rows") == {
        "decoder": "kv",
        "user.name": "dave",
        "source.ip": "192.0.2.8",
        "event.action": "export",
        "kv.rows": "10",
    }


def test_generic_json_payload() -> None:
    f = decode(
        b'<14>Nov 29 11:59:00 box app: {"src_ip":"192.0.2.9","user":"erin","detail":{"step":3}}'
    )
    assert pick(f, "decoder", "source.ip", "user.name", "json.detail.step") == {
        "decoder": "json",
        "source.ip": "192.0.2.9",
        "user.name": "erin",
        "json.detail.step": 3,
    }


@pytest.mark.parametrize(
    "line",
    [
        b"<14>Nov 29 11:59:00 box app: nothing to see here",
        b"<14>Nov 29 11:59:00 box app: a = b but not key value",
        b"<14>Nov 29 11:59:00 box app: {not json",
        b"<14>Nov 29 11:59:00 box app: %not-cisco",
        b"\xff\xfe garbage",
    ],
)
def test_unknown_lines_stay_generic_with_their_text(line: bytes) -> None:
    f = decode(line)
    assert f["decoder"] == ""
    assert f["message"]


def test_sender_vendor_hint_selects_the_decoder() -> None:
    # A CEF line with no "CEF:" prefix would be generic; the hint still cannot invent fields,
    # but a configured vendor is tried first and falls back to auto-detection when it fails.
    f = decode(
        b"<38>Nov 29 11:59:00 web1 sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
        hint="cef",
    )
    assert f["decoder"] == "linux_auth"
    f = decode(
        b"Nov 29 11:59:00 host x: date=2026-11-29 devid=FG1 type=traffic action=deny "
        b"srcip=192.0.2.1",
        hint="fortigate",
    )
    assert f["decoder"] == "fortigate"


def test_registry_dispatch_never_tries_every_decoder() -> None:
    prefixed = {p[0] for prefixes in REGISTRY.by_first.values() for p, _ in prefixes}
    fallbacks = [d.name for d in REGISTRY.fallbacks]
    assert len(fallbacks) <= 5, fallbacks  # content checks for unclaimed lines stay few
    assert "%" in prefixed and "{" in prefixed and "C" in prefixed


def test_intake_applies_sender_time_zone_tags_and_skew() -> None:
    cfg = SyslogSource()
    sender = SyslogSender(
        networks=["192.0.2.0/24"],
        site="branch-7",
        device_name="fw-b7",
        vendor="cisco_asa",
        timezone="Asia/Tokyo",
        tags=["dmz"],
    )
    metrics = Registry()
    intake = SyslogIntake(cfg, [sender], metrics, "udp")
    prof = intake.profile("192.0.2.10")
    ev = intake.event(
        b"<14>Nov 29 20:59:00 fw %ASA-6-302013: Built outbound TCP connection 1 "
        b"for outside:198.51.100.1/443 (198.51.100.1/443) to inside:10.0.0.1/5000 "
        b"(10.0.0.1/5000)",
        "192.0.2.10",
        prof,
        NOW,
    )
    assert ev.timestamp == NOW - 60  # 20:59 in Tokyo is 11:59 UTC
    assert ev.fields["observer.name"] == "fw-b7"
    assert ev.fields["labels.site"] == "branch-7"
    assert "dmz" in ev.fields["tags"]
    assert ev.fields["event.dataset"] == "cisco_asa"
    assert metrics.get("syslog_clock_skew_seconds").value("192.0.2.10") == -60.0
    other = intake.event(
        b"<14>Nov 29 11:59:00 h app: x", "198.51.100.1", intake.profile("198.51.100.1"), NOW
    )
    assert "observer.name" not in other.fields


def test_deeply_nested_json_stays_a_generic_event() -> None:
    f = decode(b"<14>Nov 29 11:59:00 box app: " + b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert f["decoder"] == ""
    assert f["message"].startswith('{"a":')


def test_paloalto_line_the_csv_reader_refuses_is_still_read() -> None:
    f = decode(PAN_TRAFFIC.replace(b"allow-web", b'"allow\rweb"').replace(b",vsys1,", b",vs\r1,"))
    assert f["decoder"] == "paloalto"
    assert f["source.ip"] == "10.0.0.10"


# Device time from the message body, used when the syslog header carries none.


def event_time(line: bytes, timezone: str = "") -> float:
    senders = [SyslogSender(networks=["192.0.2.0/24"], timezone=timezone)] if timezone else []
    intake = SyslogIntake(SyslogSource(listen="127.0.0.1:0"), senders, Registry(), "udp")
    return intake.event(line, "192.0.2.10", intake.profile("192.0.2.10"), NOW).timestamp


FG = (
    b'<189>date=2026-11-29 time=10:00:00 devname="fg1" devid="FG100E" logid="0000000013" '
    b'type="traffic" subtype="forward" srcip=10.1.100.11 dstip=172.16.200.55 action="deny"'
)


def test_fortigate_eventtime_in_nanoseconds_is_the_event_time() -> None:
    line = FG + b" eventtime=%d" % ((NOW - 3600) * 10**9 + 123)
    assert event_time(line) == pytest.approx(NOW - 3600)


def test_fortigate_date_and_time_with_its_tz_field_is_the_event_time() -> None:
    assert event_time(FG + b' tz="-0100"') == NOW - 3600  # 10:00 at -01:00 is 11:00 UTC


def test_fortigate_local_date_and_time_are_read_in_the_senders_zone() -> None:
    assert event_time(FG, timezone="Asia/Tokyo") == NOW - 11 * 3600  # 10:00 JST = 01:00 UTC


def test_suricata_eve_timestamp_is_the_event_time_when_the_header_has_none() -> None:
    line = (
        b'<14>{"timestamp":"2026-11-29T11:30:00.250000+0000","event_type":"alert",'
        b'"src_ip":"198.51.100.7","dest_ip":"10.0.0.5","proto":"TCP"}'
    )
    assert event_time(line) == NOW - 1800 + 0.25


def test_paloalto_generated_time_is_read_in_the_senders_zone() -> None:
    line = (
        b"<14>1,2026/11/29 10:00:05,001801000001,TRAFFIC,end,2049,2026/11/29 10:00:00,"
        b"10.0.0.5,198.51.100.7,0.0.0.0,0.0.0.0,allow-web,,,web-browsing,vsys1,trust,"
        b"untrust,ethernet1/1,ethernet1/2,fwd,2026/11/29 10:00:00,1,1,5000,443"
    )
    assert event_time(line, timezone="UTC") == NOW - 2 * 3600


def test_cef_rt_in_milliseconds_is_the_event_time() -> None:
    line = b"<14>CEF:0|Vendor|Product|1.0|100|Blocked|5|src=10.0.0.1 rt=%d" % ((NOW - 120) * 1000)
    assert event_time(line) == NOW - 120


def test_a_header_time_stamp_wins_over_the_body() -> None:
    line = (
        b'<189>Nov 29 11:59:00 fg1 date=2026-11-29 time=10:00:00 devname="fg1" '
        b'devid="FG100E" logid="0000000013" type="traffic" tz="+0000"'
    )
    assert event_time(line, timezone="UTC") == NOW - 60


def test_an_unreadable_body_time_falls_back_to_the_receive_time() -> None:
    assert event_time(FG.replace(b"time=10:00:00", b"time=25:99:00")) == NOW


# ScreenOS lines as Juniper's ScreenOS Message Log Reference documents them.
NETSCREEN_TRAFFIC = (
    b"<134>Nov 29 11:59:00 ssg5: NetScreen device_id=0123456789012345  [Root]system-notification"
    b'-00257(traffic): start_time="2026-11-29 11:58:50" duration=10 policy_id=320001 service=ssh'
    b" proto=6 src zone=Untrust dst zone=Trust action=Deny sent=60 rcvd=0 src=203.0.113.7"
    b" dst=198.51.100.20 src_port=51234 dst_port=22 session_id=0"
)


def test_netscreen_traffic_log_meets_the_firewall_contract() -> None:
    f = decode(NETSCREEN_TRAFFIC)
    assert f["decoder"] == "netscreen"
    assert pick(
        f,
        *NET,
        "rule.id",
        "network.bytes",
        "observer.vendor",
        "observer.product",
        "observer.serial_number",
        "event.code",
    ) == {
        "event.category": ["network"],
        "event.type": ["connection", "denied"],
        "event.action": "deny",
        "event.outcome": "failure",
        "source.ip": "203.0.113.7",
        "source.port": 51234,
        "destination.ip": "198.51.100.20",
        "destination.port": 22,
        "network.transport": "tcp",
        "rule.id": "320001",
        "network.bytes": 60,
        "observer.vendor": "Juniper",
        "observer.product": "NetScreen",
        "observer.serial_number": "0123456789012345",
        "event.code": "00257",
    }


def test_netscreen_screen_alarm_is_an_ids_alert_with_its_endpoints() -> None:
    f = decode(
        b"<129>Nov 29 11:59:00 ssg5: NetScreen device_id=fw-edge  [Root]system-alert-"
        b"00016: Port scan! From 203.0.113.7:40000 to 198.51.100.20:443, proto TCP (zone "
        b"Untrust, int ethernet0/0). Occurred 3 times. (2026-11-29 11:58:59)"
    )
    assert pick(f, "event.kind", "event.severity", "rule.id") == {
        "event.kind": "alert",
        "event.severity": 1,
        "rule.id": "00016",
    }
    assert pick(
        f,
        "event.kind",
        "event.category",
        "rule.name",
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "network.transport",
        "observer.name",
        "juniper.netscreen.occurrences",
    ) == {
        "event.kind": "alert",
        "event.category": ["intrusion_detection"],
        "rule.name": "Port scan",
        "source.ip": "203.0.113.7",
        "source.port": 40000,
        "destination.ip": "198.51.100.20",
        "destination.port": 443,
        "network.transport": "tcp",
        "observer.name": "fw-edge",
        "juniper.netscreen.occurrences": 3,
    }


def test_netscreen_failed_admin_login_names_user_and_source() -> None:
    f = decode(
        b"<132>Nov 29 11:59:00 ssg5: NetScreen device_id=ssg5  [Root]system-warning-00518"
        b': Admin user "root" login attempt for Web(http) management (port 80) from '
        b"203.0.113.9:3322 failed. (2026-11-29 11:58:58)"
    )
    assert pick(f, *AUTH) == {
        "event.category": ["authentication"],
        "event.action": "login",
        "event.outcome": "failure",
        "user.name": "root",
        "source.ip": "203.0.113.9",
        "source.port": 3322,
    }


def test_netscreen_configuration_change_names_who_and_from_where() -> None:
    f = decode(
        b"<133>Nov 29 11:59:00 ssg5: NetScreen device_id=ssg5  [Root]system-notification-"
        b"00018: Policy (5, Trust->Untrust, 10.10.10.0/24->any, ANY, Permit) was modified by"
        b" admin via web from host 192.0.2.50 to 192.0.2.1:443. (2026-11-29 11:58:57)"
    )
    assert pick(f, "event.category", "event.action", "user.name", "source.ip") == {
        "event.category": ["configuration"],
        "event.action": "config_change",
        "user.name": "admin",
        "source.ip": "192.0.2.50",
    }


def test_netscreen_trailing_stamp_is_the_device_time() -> None:
    msg = decode_syslog(
        b"<133>ssg5: NetScreen device_id=ssg5  [Root]system-information-00767:"
        b" System configuration saved by admin via console. (2026-11-29 11:58:57)",
        NOW,
    )
    fields = syslog_fields(msg, "192.0.2.1")
    assert REGISTRY.decode(msg, fields) == "netscreen"
    assert fields["message"] == "System configuration saved by admin via console."
    assert msg.payload_time is not None and msg.payload_time.minute == 58


HUGE = b"9" * 40  # past 64 bits: the stored line could not be encoded
SUPER = "²".encode()  # a digit to str.isdigit() and regex \d-free checks, not to int()


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b"<14>CEF:0|Vendor|Product|1.0|100|Blocked|" + HUGE + b"|src=10.0.0.1", "event.severity"),
        (b"<14>CEF:0|Vendor|Product|1.0|100|Blocked|" + SUPER + b"|src=10.0.0.1", "event.severity"),
        (
            b"%FTD-6-302014: Teardown TCP connection 77 for outside:192.0.2.1/443 to "
            b"inside:10.1.1.1/51000 duration 0:00:10 bytes " + HUGE + b" TCP FINs",
            "network.bytes",
        ),
        (
            b'<189>date=2026-11-29 time=11:59:00 devname="fw1" devid="FG100E0000000001" '
            b'logid="0000000013" type="traffic" subtype="forward" srcip=10.1.1.5 action="deny" '
            b"sentbyte=" + HUGE + b" rcvdbyte=1 sentpkt=" + SUPER + b" rcvdpkt=1",
            "network.bytes",
        ),
        (NETSCREEN_TRAFFIC.replace(b"sent=60", b"sent=" + HUGE), "network.bytes"),
        (
            b"<14>1 2026-11-29T11:59:00.000Z srx1 RT_FLOW - RT_FLOW_SESSION_CLOSE [junos@2636.1.1"
            b'.1.2.40 source-address="198.51.100.3" bytes-from-client="' + HUGE + b'" bytes-from-'
            b'server="1" packets-from-client="' + SUPER + b'" packets-from-server="1"] closed',
            "network.bytes",
        ),
        (
            b"<129>Nov 29 11:59:00 ssg5: NetScreen device_id=fw-edge  [Root]system-alert-00016: "
            b"Port scan! From 203.0.113.7:40000 to 198.51.100.20:443, proto TCP (zone Untrust, int "
            b"ethernet0/0). Occurred " + HUGE + b" times. (2026-11-29 11:58:59)",
            "juniper.netscreen.occurrences",
        ),
        (
            b"<33>Nov 29 11:59:00 ids snort[2]: ["
            + HUGE
            + b":2003:8] MS-SQL Worm [Priority: "
            + HUGE
            + b"] {UDP} 198.51.100.66:1034 -> 10.0.0.4:1434",
            "snort.gid",
        ),
        (
            b"<133>Nov 29 11:59:00 lb1 notice tmm1[" + HUGE + b"]: 01010028:3: No members "
            b"available for pool /Common/web",
            "process.pid",
        ),
    ],
    ids=[
        "cef-huge",
        "cef-superscript",
        "asa-bytes",
        "fortigate",
        "netscreen-bytes",
        "srx",
        "netscreen-occurrences",
        "snort",
        "f5-pid",
    ],
)
def test_numbers_past_64_bits_or_not_ascii_are_left_out(line: bytes, key: str) -> None:
    """Found by ``scripts/fuzz syslog-vendors``: a CEF severity of 100 digits became an int
    the event's stored line could not encode (``Integer exceeds 64-bit range``), and "²"
    passed ``str.isdigit()`` and made ``int()`` raise inside the decoder. The line is still
    decoded; only the number that is not one is left out."""
    f = decode(line)
    assert f["decoder"], line
    assert key not in f
    encode_line(0.0, 0.0, "syslog", f, line)  # the stored line encodes


@pytest.mark.parametrize(
    ("line", "decoder"),
    [
        (
            b'<14>Nov 29 11:59:00 ids suricata[5]: {"timestamp":"2026-11-29T11:59:00.1+0000",'
            b'"flow_id":' + HUGE + b',"event_type":"alert","src_ip":"198.51.100.2","alert":'
            b'{"signature_id":' + HUGE + b',"severity":' + HUGE + b"}}",
            "suricata_eve",
        ),
        (
            b'<14>Nov 29 11:59:00 app x: {"user":"bob","bytes":'
            + HUGE
            + b',"n":{"m":-'
            + HUGE
            + b"}}",
            "json",
        ),
    ],
    ids=["suricata", "generic-json"],
)
def test_json_integers_past_64_bits_are_kept_as_text(line: bytes, decoder: str) -> None:
    """Found by ``scripts/fuzz syslog-vendors``: a Suricata ``flow_id`` of 100 digits came
    out of ``json.loads`` as an int the stored line could not encode."""
    f = decode(line)
    assert f["decoder"] == decoder
    assert "9" * 40 in encode_line(0.0, 0.0, "syslog", f, b"").decode()
