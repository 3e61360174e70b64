"""The sms_modem channel against a simulated modem on a pseudo-terminal: unlock, checks,
sending, splitting, replies, and every way a modem fails (errors, silence, floods)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.metrics import Registry
from appliance.notify.channels import gsm
from appliance.notify.channels.base import DeliveryError
from appliance.notify.channels.sms_modem import ModemChannel
from tests.notify_peers import make_channel, message
from tests.sim_modem import SimModem


@pytest.fixture
def modem() -> Iterator[SimModem]:
    sim = SimModem()
    yield sim
    sim.close()


def channel(sim: SimModem, registry: Registry | None = None, **kw: Any) -> ModemChannel:
    table = {
        "name": "gsm",
        "type": "sms_modem",
        "device": sim.device,
        "pin": "1234",
        "to": ["+15551234567", "+15557654321"],
        "command_timeout": 2,
        "timeout": 5,
        **kw,
    }
    ch = make_channel(table, registry=registry)
    assert isinstance(ch, ModemChannel)
    return ch


async def test_unlocks_checks_and_sends_to_every_recipient(modem: SimModem) -> None:
    registry = Registry()
    ch = channel(modem, registry)
    await ch.send(message())
    await ch.close()
    assert [(s.number, s.text) for s in modem.sent] == [
        ("+15551234567", "HIGH ssh brute force 203.0.113.7 -> gw-01 (12 failures)"),
        ("+15557654321", "HIGH ssh brute force 203.0.113.7 -> gw-01 (12 failures)"),
    ]
    assert modem.commands[:7] == [
        "ATE0",
        "AT+CMEE=1",
        "AT+CPIN?",
        'AT+CPIN="1234"',
        "AT+CMGF=1",
        "AT+CREG?",
        "AT+CSQ",
    ]
    text = registry.render()
    assert 'appliance_notify_modem_signal_dbm{channel="gsm"} -73' in text
    assert (
        'appliance_notify_channel_sends_total{channel="gsm",type="sms_modem",result="ok"} 1' in text
    )


async def test_a_second_send_reuses_the_initialised_modem(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"])
    await ch.send(message())
    await ch.send(message())
    await ch.close()
    assert len(modem.sent) == 2
    assert modem.commands.count("ATE0") == 1 and modem.pin_attempts == 1


async def test_roaming_counts_as_registered(modem: SimModem) -> None:
    modem.creg = 5
    ch = channel(modem, to=["+15551234567"])
    await ch.send(message())
    await ch.close()
    assert len(modem.sent) == 1


async def test_long_text_goes_as_numbered_parts_within_one_sms_each(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"], max_segments=5)
    words = " ".join(f"word{i}" for i in range(60))  # ~ 400 characters
    await ch.send(message(short=words))
    await ch.close()
    parts = [s.text for s in modem.sent]
    assert len(parts) == 3
    assert [p[:6] for p in parts] == ["(1/3) ", "(2/3) ", "(3/3) "]
    assert all(len(p) <= 160 for p in parts)
    assert " ".join(p[6:] for p in parts) == words
    assert {s.charset for s in modem.sent} == {"IRA"}


async def test_text_beyond_max_segments_is_cut(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"], max_segments=2)
    await ch.send(message(short="x" * 1000))
    await ch.close()
    parts = [s.text for s in modem.sent]
    assert len(parts) == 2 and parts[1].endswith("...")
    assert all(len(p) <= 160 for p in parts)


async def test_text_outside_the_gsm_alphabet_goes_as_ucs2(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"], max_segments=4)
    text = "Einbruch erkannt: Türöffner Süd 🚨 " * 4  # ~ 140 characters, an emoji
    await ch.send(message(short=text))
    await ch.close()
    assert {s.charset for s in modem.sent} == {"UCS2"}
    assert {s.number for s in modem.sent} == {"+15551234567"}
    parts = [s.text for s in modem.sent]
    assert all(gsm.length(p, "ucs2") <= 70 for p in parts)
    assert "".join(p.split(") ", 1)[1] + " " for p in parts).split() == text.split()


async def test_control_characters_never_reach_the_modem(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"])
    await ch.send(message(short="stop\x1aAT+CMGD=1\x1bend"))  # Ctrl-Z would end the text early
    await ch.close()
    assert [s.text for s in modem.sent] == ["stop\\x1aAT+CMGD=1\\x1bend"]


async def test_cms_error_is_retryable_and_the_modem_is_reinitialised(modem: SimModem) -> None:
    modem.cmgs_error = "+CMS ERROR: 500"
    ch = channel(modem, to=["+15551234567"])
    with pytest.raises(DeliveryError, match=r"\+CMS ERROR: 500") as err:
        await ch.send(message())
    assert err.value.retryable
    modem.cmgs_error = None
    await ch.send(message())
    await ch.close()
    assert len(modem.sent) == 1 and modem.commands.count("ATE0") == 2


async def test_a_rejected_number_is_not_retried(modem: SimModem) -> None:
    modem.cmgs_error = "+CMS ERROR: 28"  # unidentified subscriber
    ch = channel(modem, to=["+15551234567"])
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert not err.value.retryable


async def test_a_silent_modem_times_out_instead_of_hanging(modem: SimModem) -> None:
    modem.silent = True
    ch = channel(modem, command_timeout=0.3)
    with pytest.raises(DeliveryError, match="no answer") as err:
        await asyncio.wait_for(ch.send(message()), 10)
    await ch.close()
    assert err.value.retryable


async def test_a_flooding_modem_is_cut_off(modem: SimModem) -> None:
    modem.flood = True
    ch = channel(modem, command_timeout=2)
    with pytest.raises(DeliveryError, match="longer than") as err:
        await asyncio.wait_for(ch.send(message()), 10)
    await ch.close()
    assert err.value.retryable


async def test_unsolicited_result_codes_are_skipped(modem: SimModem) -> None:
    modem.unsolicited = True
    ch = channel(modem, to=["+15551234567"])
    await ch.send(message())
    await ch.close()
    assert len(modem.sent) == 1


async def test_not_registered_is_retryable_and_shown_in_the_gauge(modem: SimModem) -> None:
    modem.creg = 2  # searching
    registry = Registry()
    ch = channel(modem, registry)
    with pytest.raises(DeliveryError, match="searching") as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable and modem.sent == []
    assert 'appliance_notify_modem_registered{channel="gsm"} 0' in registry.render()


async def test_a_wrong_pin_is_tried_only_once(modem: SimModem) -> None:
    ch = channel(modem, pin="9999")
    for _ in range(3):
        with pytest.raises(DeliveryError, match="PIN") as err:
            await ch.send(message())
        assert not err.value.retryable
    await ch.close()
    assert modem.pin_attempts == 1  # three wrong tries would lock the SIM behind its PUK


async def test_a_pin_request_without_a_configured_pin_is_permanent(modem: SimModem) -> None:
    table = {"name": "gsm", "type": "sms_modem", "device": modem.device, "to": ["+15551234567"]}
    ch = make_channel(table)
    with pytest.raises(DeliveryError, match="asks for a PIN") as err:
        await ch.send(message())
    await ch.close()
    assert not err.value.retryable and modem.pin_attempts == 0


async def test_a_missing_device_is_retryable(tmp_path: Any) -> None:
    table = {
        "name": "gsm",
        "type": "sms_modem",
        "device": str(tmp_path / "ttyUSB9"),
        "to": ["+15551234567"],
    }
    ch = make_channel(table)
    with pytest.raises(DeliveryError, match="cannot open") as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable


# ----------------------------------------------------------------------------------- replies


async def test_replies_go_to_the_handler_and_are_deleted(modem: SimModem) -> None:
    modem.inbox = {
        3: ("REC UNREAD", "+15551234567", "ACK 4711"),
        4: ("STO SENT", "+15550000000", "a copy of something we sent"),
    }
    got: list[tuple[str, str]] = []

    async def on_reply(sender: str, text: str) -> None:
        got.append((sender, text))

    ch = channel(modem)
    ch.on_reply = on_reply
    assert await ch.poll_replies() == 1
    await ch.close()
    assert got == [("+15551234567", "ACK 4711")]
    assert "AT+CMGD=3" in modem.commands and list(modem.inbox) == [4]


async def test_a_failing_handler_leaves_the_reply_for_the_next_poll(modem: SimModem) -> None:
    modem.inbox = {1: ("REC UNREAD", "+15551234567", "ACK 1")}

    async def broken(sender: str, text: str) -> None:
        raise RuntimeError("engine busy")

    ch = channel(modem)
    ch.on_reply = broken
    assert await ch.poll_replies() == 0
    await ch.close()
    assert list(modem.inbox) == [1]


async def test_the_background_poller_reads_replies(modem: SimModem) -> None:
    modem.inbox = {2: ("REC UNREAD", "+15557654321", "ack 99")}
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def on_reply(sender: str, text: str) -> None:
        await got.put((sender, text))

    ch = channel(modem, reply_poll_interval=0.1)
    ch.on_reply = on_reply
    await ch.start()
    reply = await asyncio.wait_for(got.get(), 10)
    await ch.close()
    assert reply == ("+15557654321", "ack 99")


async def test_the_ack_code_is_asked_for_and_survives_the_cut(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567"], max_segments=2)
    await ch.send(message(short="y" * 1000, ack_code="4711"))
    await ch.close()
    parts = [s.text for s in modem.sent]
    assert len(parts) == 2 and parts[-1].endswith("...\nReply 4711 to acknowledge")


async def test_a_retry_does_not_resend_parts_that_arrived(modem: SimModem) -> None:
    ch = channel(modem, to=["+15551234567", "+15557654321"])
    sent_before_failure = 1

    original = modem._finish_sms

    def fail_second(number: str, body: str) -> None:
        if len(modem.sent) >= sent_before_failure and modem.cmgs_error is None:
            modem.cmgs_error = "+CMS ERROR: 500"
        original(number, body)

    modem.cmgs_error = None
    modem._finish_sms = fail_second  # type: ignore[method-assign]
    with pytest.raises(DeliveryError):
        await ch.send(message())
    modem._finish_sms = original  # type: ignore[method-assign]
    modem.cmgs_error = None
    await ch.send(message())
    await ch.close()
    assert [s.number for s in modem.sent] == ["+15551234567", "+15557654321"]
