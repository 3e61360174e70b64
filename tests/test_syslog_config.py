"""Syslog listener and sender config: the keys tcp/tls/senders add are checked before start."""

from __future__ import annotations

import re
import tomllib

import pytest

from appliance.config import EXAMPLE_CONFIG, ConfigError, parse_config


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.errors


def test_tcp_and_tls_listeners_are_accepted() -> None:
    cfg = parse_config(
        {
            "sources": {
                "syslog": [
                    {
                        "protocol": "tcp",
                        "listen": "[::]:5514",
                        "max_connections": 10,
                        "max_connections_per_ip": 2,
                    },
                    {
                        "protocol": "tls",
                        "listen": "0.0.0.0:6514",
                        "tls_cert": "s.pem",
                        "tls_key": "s.key",
                        "tls_client_ca": "ca.pem",
                        "tls_client_allowed": ["fw1.example"],
                    },
                ]
            }
        },
        base_dir="/etc/appliance",
    )
    assert [s.label for s in cfg.sources.syslog] == ["syslog-tcp", "syslog-tls"]
    assert str(cfg.path(cfg.sources.syslog[1].tls_cert)) == "/etc/appliance/s.pem"


def test_tls_needs_certificate_and_key() -> None:
    assert errors_of({"sources": {"syslog": [{"protocol": "tls"}]}}) == [
        'sources.syslog[0].tls_cert: required with protocol = "tls" (and tls_key)'
    ]


def test_client_allow_list_needs_a_client_ca() -> None:
    errs = errors_of(
        {
            "sources": {
                "syslog": [
                    {
                        "protocol": "tls",
                        "tls_cert": "a",
                        "tls_key": "b",
                        "tls_client_allowed": ["x"],
                    }
                ]
            }
        }
    )
    assert errs == [
        "sources.syslog[0].tls_client_allowed: needs tls_client_ca (client certificates)"
    ]


def test_per_ip_limit_cannot_exceed_total() -> None:
    errs = errors_of({"sources": {"syslog": [{"protocol": "tcp", "max_connections": 5}]}})
    assert errs == ["sources.syslog[0].max_connections_per_ip: larger than max_connections"]


def test_sender_checks_vendor_zone_and_networks() -> None:
    errs = errors_of(
        {
            "sources": {
                "syslog_senders": [
                    {"networks": ["10.0.0.1/32"], "vendor": "nokia", "timezone": "Mars/Olympus"},
                    {"site": "x"},
                ]
            }
        }
    )
    assert errs[0].startswith("sources.syslog_senders[0].timezone: not an IANA time zone")
    assert errs[1].startswith("sources.syslog_senders[0].vendor: 'nokia' is not a decoder")
    assert errs[2] == (
        "sources.syslog_senders[1].networks: required (the sender's addresses, CIDR)"
    )


def test_example_config_commented_syslog_blocks_are_valid_when_uncommented() -> None:
    text = EXAMPLE_CONFIG.read_text()
    start = text.index("# [[sources.syslog]]        # syslog over TCP")
    end = text.index("[[sources.", text.index("# tags = ", start))  # the next real table
    block = "\n".join(
        re.sub(r"^# ?", "", line)
        for line in text[start:end].splitlines()
        if line.startswith("# ") and re.match(r"# ?(\[\[|\w+ = )", line)
    )
    block = block.replace('"3f:a2:...:9c"', '"' + "ab" * 32 + '"')
    data = tomllib.loads(block)
    for src in data["sources"]["syslog"]:  # ports would clash: only validation matters
        src["listen"] = "127.0.0.1:0"
    cfg = parse_config(data)
    assert [s.protocol for s in cfg.sources.syslog] == ["tcp", "tls"]
    assert cfg.sources.syslog_senders[0].vendor == "fortigate"
