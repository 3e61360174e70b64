"""Config: typed, validated before start, errors name the key path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import (
    EXAMPLE_CONFIG,
    PRIVATE_AND_LOOPBACK,
    ConfigError,
    load_config,
    parse_config,
)


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.errors


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.sources.syslog[0].listen == "0.0.0.0:5514"
    assert cfg.appliance.data_dir == "var"


def test_unknown_key_is_named_with_its_path() -> None:
    assert errors_of({"sources": {"syslog": [{"listen": "0.0.0.0:1", "colour": "red"}]}}) == [
        "sources.syslog[0].colour: unknown key"
    ]


def test_unknown_section_is_an_error() -> None:
    assert errors_of({"bogus": {}}) == ["bogus: unknown key"]


def test_bad_listen_address_is_named() -> None:
    assert errors_of({"sources": {"syslog": [{"listen": "nope"}]}}) == [
        "sources.syslog[0].listen: not host:port (IPv6 as [::]:port)"
    ]


def test_wrong_type_is_named() -> None:
    errs = errors_of({"pipeline": {"queue_size": "big"}})
    assert errs == ["pipeline.queue_size: expected integer, got str"]


def test_a_queue_bound_in_bytes_must_be_positive() -> None:
    assert errors_of({"pipeline": {"queue_bytes": 0}}) == ["pipeline.queue_bytes: must be > 0"]


def test_every_error_is_reported_not_just_the_first() -> None:
    errs = errors_of({"api": {"listen": "x"}, "appliance": {"loop": "fast", "sensor_id": ""}})
    assert len(errs) == 3


def test_ipv6_listen_is_accepted() -> None:
    cfg = parse_config({"sources": {"syslog": [{"listen": "[::]:5514"}]}})
    assert cfg.sources.syslog[0].listen == "[::]:5514"


def test_allow_list_must_be_networks() -> None:
    assert errors_of({"sources": {"syslog": [{"allowed": ["10.0.0.0/8", "banana"]}]}}) == [
        "sources.syslog[0].allowed: 'banana' is not an IP network (CIDR)"
    ]


def test_defaults_allow_only_private_and_loopback_senders() -> None:
    cfg = parse_config({"sources": {"syslog": [{}]}})
    assert "0.0.0.0/0" not in cfg.sources.syslog[0].allowed
    assert "127.0.0.0/8" in cfg.sources.syslog[0].allowed


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_ok_and_exits_0() -> None:
    proc = run_cli("check-config", str(EXAMPLE_CONFIG))
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok")


def test_check_config_names_unknown_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[appliance]\nsensor_id = "x"\ncolour = "red"\n')
    proc = run_cli("check-config", str(bad))
    assert proc.returncode == 2
    assert "appliance.colour: unknown key" in proc.stdout


def test_check_config_reports_toml_syntax_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[appliance\n")
    proc = run_cli("check-config", str(bad))
    assert proc.returncode == 2
    assert "not valid TOML" in proc.stdout


def test_config_without_any_source_is_an_error_naming_allow_empty() -> None:
    (error,) = errors_of({"api": {"listen": "127.0.0.1:8080"}})
    assert error.startswith("sources: no source configured")
    assert "appliance.allow_empty = true" in error


def test_allow_empty_accepts_a_config_without_sources() -> None:
    cfg = parse_config({"appliance": {"allow_empty": True}})
    assert cfg.source_labels == []


def test_check_config_refuses_an_empty_file_and_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    proc = run_cli("check-config", str(empty))
    assert proc.returncode == 2
    assert proc.stdout.startswith("sources: no source configured")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'[appliance]\nsensor_id = "caf\xe9"\n', "not UTF-8 text (byte 28)"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
    ids=["latin1", "deep-nesting"],
)
def test_unreadable_toml_is_a_config_error_not_a_crash(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """Found by ``scripts/fuzz config``: a file that is not UTF-8 raised UnicodeDecodeError and
    deeply nested arrays RecursionError out of ``load_config`` (``check-config`` crashed with a
    traceback and exit 1 instead of naming the problem with exit 2)."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(bad)
    proc = run_cli("check-config", str(bad))
    assert proc.returncode == 2 and problem in proc.stdout


@pytest.mark.parametrize(
    "url", ["https://ho]ok", "https://[::1/x", "https://[zz]/", "https://h:99999/", "https://h:x/"]
)
def test_upstream_url_that_urlsplit_rejects_is_a_config_error(url: str) -> None:
    """Found by ``scripts/fuzz config``: an unbalanced bracket made ``urlsplit`` raise
    ValueError out of the loader; a bad port passed and would only fail at delivery."""
    with pytest.raises(ConfigError, match=r"upstream\[0\]\.url: must be an https:// URL"):
        parse_config({"upstream": [{"name": "soc", "url": url}]})


def test_relative_file_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[appliance]\nallow_empty = true\n")
    cfg = load_config(f)
    assert cfg.path("server.pem") == tmp_path / "server.pem"


def test_netflow_source_admits_the_datagram_policys_default_senders() -> None:
    cfg = parse_config({"sources": {"netflow": [{"listen": "127.0.0.1:2055"}]}})
    assert cfg.sources.netflow[0].allowed == list(PRIVATE_AND_LOOPBACK)


def test_netflow_source_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="duplicate source name"):
        parse_config({"sources": {"netflow": [{"listen": "127.0.0.1:2055"},
                                              {"listen": "127.0.0.1:2056"}]}})  # fmt: skip
