"""``appliance notify test CHANNEL``: a real send through the named channel, and exit codes."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from appliance.cli import main
from tests.conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


def write_config(tmp_path: Path, smtp_port: int, extra: str = "") -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        f"""
[appliance]
allow_empty = true
sensor_id = "edge-07"
data_dir = "{tmp_path / "data"}"

[[notify.channels]]
name = "ops-mail"
type = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
timeout = 5
from = "sem@site.example"
to = ["noc@site.example"]
{extra}
"""
    )
    return path


def test_a_working_channel_delivers_the_test_message_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        rc = main(["notify", "test", "ops-mail", "--config", str(write_config(tmp_path, port))])
    finally:
        controller.stop()
    assert rc == 0
    assert "ops-mail (email): delivered" in capsys.readouterr().out
    (msg,) = inbox.messages
    assert msg["Subject"] == "Test notification from edge-07"


def test_a_failing_channel_prints_why_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["notify", "test", "ops-mail", "-c", str(write_config(tmp_path, free_port()))])
    assert rc == 1
    err = capsys.readouterr().err
    assert "ops-mail (email): failed (transient, would be retried)" in err
    assert "ConnectionRefused" in err


def test_an_unknown_channel_exits_2_and_lists_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["notify", "test", "ops-pager", "-c", str(write_config(tmp_path, 25))])
    assert rc == 2
    assert "no channel 'ops-pager' in [[notify.channels]] (ops-mail)" in capsys.readouterr().err


def test_an_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, 25, '[[notify.channels]]\nname = "x"\ntype = "telegram"\n')
    assert main(["notify", "test", "ops-mail", "-c", str(path)]) == 2
    assert "bot_token: required for type 'telegram'" in capsys.readouterr().err


def test_a_secret_that_cannot_be_read_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = '[[notify.channels]]\nname = "chat"\ntype = "slack"\nurl_file = "no-such-file"\n'
    assert main(["notify", "test", "chat", "-c", str(write_config(tmp_path, 25, extra))]) == 2
    assert "notify channel chat: cannot read url file" in capsys.readouterr().err
