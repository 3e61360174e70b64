"""Typed values, placeholder rendering and the never-block list: what incident data may become
in a command or a request, checked without running anything."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, parse_config
from appliance.respond.calls import build_call
from appliance.respond.safety import NeverBlock, RateLimit
from appliance.respond.values import BadValue, parse_ip, parse_user, render_argv, typed


def action(**kw: object) -> object:
    cfg = parse_config({"appliance": {"allow_empty": True}, "respond": {"actions": [kw]}})
    return cfg.respond.actions[0]


def config_errors(**kw: object) -> list[str]:
    try:
        parse_config({"appliance": {"allow_empty": True}, "respond": {"actions": [kw]}})
    except ConfigError as exc:
        return exc.errors
    return []


@pytest.mark.parametrize(
    "value",
    [
        "203.0.113.9; reboot",
        "$(reboot)",
        "203.0.113.9 -j ACCEPT",
        "-1",
        "203.0.113.0/24",
        "fe80::1%eth0",
        " 203.0.113.9",
        "",
        "2001:db8::1\n",
        "a" * 100,
    ],
)
def test_an_ip_placeholder_refuses_anything_but_one_address(value: str) -> None:
    with pytest.raises(BadValue):
        parse_ip(value)


def test_an_ip_is_rendered_in_canonical_form() -> None:
    assert parse_ip("2001:DB8:0::1") == "2001:db8::1"
    assert typed("ip", "203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize("value", ["-rf", "root;id", "a b", "bob'", "x" * 65, "", "ä"])
def test_a_user_placeholder_refuses_option_like_and_shell_text(value: str) -> None:
    with pytest.raises(BadValue):
        parse_user(value)


def test_a_user_name_of_the_usual_shapes_passes() -> None:
    assert parse_user("svc.backup-01@corp") == "svc.backup-01@corp"


def test_a_value_stays_inside_its_argv_element_and_set_braces_are_kept() -> None:
    argv = ["/usr/sbin/nft", "add", "element", "inet", "f", "b", "{ {ip} }"]
    assert render_argv(argv, {"ip": "203.0.113.9"}) == [*argv[:-1], "{ 203.0.113.9 }"]


def test_http_values_are_escaped_for_the_url_path_and_the_json_body() -> None:
    a = action(
        name="rest",
        type="http",
        url="http://127.0.0.1:1/block/{user}",
        body='{"who": "{user}", "incident": "{incident_id}"}',
        target_type="user",
        ttl=0,
    )
    call = build_call(a, {"user": "a@b", "incident_id": "x1"}, undo=False)  # type: ignore[arg-type]
    assert call is not None
    assert call.url == "http://127.0.0.1:1/block/a%40b"
    assert call.body == '{"who": "a@b", "incident": "x1"}'
    assert call.headers["Content-Type"] == "application/json"


def test_config_refuses_unknown_placeholders_and_the_wrong_type() -> None:
    errors = config_errors(name="x", argv=["/bin/echo", "{hostname}", "{user}"], ttl=0)
    assert any("argv[1]: unknown placeholder {hostname}" in e for e in errors)
    assert any("argv[2]: {user} but target_type is 'ip'" in e for e in errors)


def test_config_refuses_a_program_that_is_not_an_absolute_path() -> None:
    assert any("absolute path" in e for e in config_errors(name="x", argv=["nft"], ttl=0))
    assert any("absolute path" in e for e in config_errors(name="x", argv=["{ip}"], ttl=0))


def test_config_needs_an_undo_when_the_block_expires() -> None:
    assert any("undo_argv: required" in e for e in config_errors(name="x", argv=["/bin/true"]))


def test_config_refuses_plain_http_beyond_loopback_and_host_placeholders() -> None:
    errors = config_errors(name="x", type="http", preset="opnsense", url="http://192.0.2.1")
    assert any("plain http beyond loopback" in e for e in errors)
    errors = config_errors(name="x", type="http", url="https://{ip}/x", ttl=0)
    assert any("placeholders may not choose the host" in e for e in errors)


def test_the_password_stays_out_of_repr() -> None:
    a = action(name="x", type="http", preset="opnsense", url="https://fw", password="s3cr3t")
    assert "s3cr3t" not in repr(a)


def test_never_block_covers_loopback_own_addresses_api_and_configured_networks() -> None:
    cfg = parse_config(
        {
            "appliance": {"allow_empty": True},
            "api": {"listen": "192.0.2.50:8080", "tls": True},
            "respond": {"never_block": ["198.51.100.0/24"], "management_networks": ["10.9.0.0/16"]},
        }
    )
    nb = NeverBlock.from_config(cfg, own=["192.0.2.10", "fd00::2"])
    assert nb.reason("127.0.0.5") is not None
    assert nb.reason("::ffff:127.0.0.1") is not None  # an IPv4-mapped loopback too
    assert "own address" in str(nb.reason("192.0.2.10"))
    assert "own address" in str(nb.reason("fd00::2"))
    assert "API listen address" in str(nb.reason("192.0.2.50"))
    assert "never_block" in str(nb.reason("198.51.100.99"))
    assert "management network" in str(nb.reason("10.9.3.4"))
    assert nb.reason("203.0.113.9") is None


def test_own_addresses_are_discovered_from_the_interfaces() -> None:
    cfg = parse_config({"appliance": {"allow_empty": True}})
    assert NeverBlock.from_config(cfg).reason("127.0.0.1") is not None
    from appliance.respond.safety import interface_addresses

    assert "127.0.0.1" in interface_addresses()


def test_rate_limit_is_a_sliding_minute() -> None:
    rl = RateLimit(2)
    assert rl.allow(0.0) and rl.allow(1.0)
    assert not rl.allow(59.0)
    assert rl.allow(60.5)
