"""[[notify.channels]]: keys per type, the TOML key ``from``, secrets and their sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config, parse_config
from appliance.notify.channels import build_channel


def errors(*channels: dict[str, object]) -> list[str]:
    try:
        parse_config({"appliance": {"allow_empty": True}, "notify": {"channels": list(channels)}})
    except ConfigError as exc:
        return exc.errors
    return []


def test_the_issue_contract_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[appliance]
allow_empty = true

[[notify.channels]]
name = "ops-mail"
type = "email"
host = "127.0.0.1"
port = 25
tls = "none"
from = "sem@site.example"
to = ["noc@site.example"]

[[notify.channels]]
name = "ops-sms"
type = "sms_twilio"
url = "http://127.0.0.1:8099"
account_sid = "AC123"
auth_token = "tw-token-9"
from = "+15550000000"
to = ["+15551234567"]
"""
    )
    mail, sms = load_config(path).notify.channels
    assert (mail.type, mail.host, mail.port, mail.tls, mail.from_) == (
        "email",
        "127.0.0.1",
        25,
        "none",
        "sem@site.example",
    )
    assert (sms.account_sid, sms.from_, sms.to) == ("AC123", "+15550000000", ["+15551234567"])
    assert "tw-token-9" not in repr(sms)


def test_each_type_names_the_keys_it_lacks() -> None:
    assert errors({"name": "m", "type": "email"}) == [
        "notify.channels[0].host: required for type 'email'",
        "notify.channels[0].from: required for type 'email'",
        "notify.channels[0].to: required for type 'email'",
    ]
    assert "notify.channels[0].auth_token: required for type 'sms_twilio'" in errors(
        {"name": "s", "type": "sms_twilio", "account_sid": "AC1", "from": "+15550000000"}
    )
    assert errors({"name": "t", "type": "telegram", "to": ["1"]}) == [
        "notify.channels[0].bot_token: required for type 'telegram'"
    ]
    assert errors({"name": "x", "type": "slack"}) == [
        "notify.channels[0].url: required for type 'slack'"
    ]


def test_a_secret_from_a_file_satisfies_the_requirement() -> None:
    assert errors({"name": "x", "type": "slack", "url_env": "SLACK_HOOK"}) == []


def test_two_sources_for_one_secret_contradict() -> None:
    assert "notify.channels[0].password: give one of password, password_file, password_env" in (
        errors(
            {
                "name": "m",
                "type": "email",
                "host": "h",
                "from": "a@b.example",
                "to": ["c@d.example"],
                "username": "u",
                "password": "p",
                "password_file": "f",
            }
        )
    )


def test_smtp_auth_without_tls_is_refused() -> None:
    assert "notify.channels[0].password: SMTP AUTH needs tls = 'starttls' or 'implicit'" in (
        errors(
            {
                "name": "m",
                "type": "email",
                "host": "h",
                "tls": "none",
                "from": "a@b.example",
                "to": ["c@d.example"],
                "username": "u",
                "password": "p",
            }
        )
    )


def test_plain_http_is_only_for_loopback_unless_allowed() -> None:
    hook = {"name": "w", "type": "webhook", "url": "http://192.0.2.1/hook"}
    assert errors(hook) == [
        "notify.channels[0].url: plain http:// only to loopback; use https:// or allow_http = true"
    ]
    assert errors({**hook, "allow_http": True}) == []
    assert errors({**hook, "url": "http://[::1]:8080/hook"}) == []


def test_addresses_and_numbers_are_checked() -> None:
    assert "notify.channels[0].to: 'noc@x.example, evil@y.example' is not a plain e-mail" in (
        " ".join(
            errors(
                {
                    "name": "m",
                    "type": "email",
                    "host": "h",
                    "from": "a@b.example",
                    "to": ["noc@x.example, evil@y.example"],
                }
            )
        )
    )
    assert "notify.channels[0].to: '5551234' is not an E.164 number (+ and 8-15 digits)" in (
        errors({"name": "g", "type": "sms_modem", "device": "/dev/ttyUSB2", "to": ["5551234"]})
    )


def test_sms_http_placeholders_are_checked() -> None:
    gw = {"name": "g", "type": "sms_http", "url": "https://gw.example/send", "to": ["+15551234567"]}
    assert errors({**gw, "body": "to={to}&msg={message}"}) == [
        "notify.channels[0].body: unknown placeholder(s) ['message']; use to, text, subject,"
        " severity, from, token"
    ]
    assert errors({**gw, "body": '{"to": "{to}", "text": "{text}"}', "content_type": "json"}) == []
    assert errors({**gw}) == ["notify.channels[0].body: required for method 'POST'"]


def test_from_is_the_toml_key_not_the_field_name() -> None:
    assert errors({"name": "x", "type": "slack", "url": "https://h.example", "from_": "a"}) == [
        "notify.channels[0].from_: unknown key"
    ]


def test_an_unreadable_secret_file_is_a_config_error_at_build(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "appliance": {"allow_empty": True},
            "notify": {
                "channels": [
                    {"name": "x", "type": "slack", "url_file": "missing-hook"},
                ]
            },
        },
        tmp_path,
    )
    with pytest.raises(ConfigError, match="notify channel x: cannot read url file"):
        build_channel(cfg.notify.channels[0], tmp_path)


def test_an_unset_secret_env_is_a_config_error_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEM_TEST_TG_TOKEN", raising=False)
    cfg = parse_config(
        {
            "appliance": {"allow_empty": True},
            "notify": {
                "channels": [
                    {
                        "name": "tg",
                        "type": "telegram",
                        "bot_token_env": "SEM_TEST_TG_TOKEN",
                        "to": ["42"],
                    }
                ]
            },
        }
    )
    with pytest.raises(ConfigError, match="SEM_TEST_TG_TOKEN is not set"):
        build_channel(cfg.notify.channels[0], ".")


def test_the_commented_channel_examples_in_the_example_config_load(tmp_path: Path) -> None:
    from appliance.config import EXAMPLE_CONFIG

    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    block = text[text.index("# [[notify.channels]]") :].splitlines()
    # The channel examples end at the first other table ([notify], routes) or live line.
    ends = (
        i
        for i, ln in enumerate(block)
        if not ln.startswith("#") or (ln.startswith("# [") and ln != "# [[notify.channels]]")
    )
    block = block[: next(ends, len(block))]
    lines = [ln[2:] for ln in block if ln.startswith("# ") and not ln.startswith("# #")]
    path = tmp_path / "c.toml"
    path.write_text("[appliance]\nallow_empty = true\n" + "\n".join(lines))
    types = {c.type for c in load_config(path).notify.channels}
    assert types == {"email", "sms_twilio", "sms_http", "sms_modem", "slack", "telegram", "webhook"}


def test_a_url_from_a_file_is_checked_like_an_inline_one(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("http://192.0.2.9/hook\n")
    cfg = parse_config(
        {
            "appliance": {"allow_empty": True},
            "notify": {"channels": [{"name": "x", "type": "slack", "url_file": "hook"}]},
        },
        tmp_path,
    )
    with pytest.raises(ConfigError, match="url: plain http:// only to loopback"):
        build_channel(cfg.notify.channels[0], tmp_path)


def test_every_channel_key_is_documented_in_the_example_config() -> None:
    import dataclasses
    import re

    from appliance.config import EXAMPLE_CONFIG, NOTIFY_SECRETS, NotifyChannel

    text = EXAMPLE_CONFIG.read_text()
    section = text[text.index("notification channels") :]
    assert "<key>_file" in section and "<key>_env" in section  # how every secret's sources are
    for f in dataclasses.fields(NotifyChannel):
        key = f.metadata.get("key", f.name)
        if key.endswith(("_file", "_env")) and key.rsplit("_", 1)[0] in NOTIFY_SECRETS:
            continue
        assert re.search(rf"(?<![\w.]){key}(?![\w.])", section), key
