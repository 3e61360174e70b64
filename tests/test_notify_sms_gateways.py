"""SMS through HTTP gateways (Twilio's API layout and a templated generic gateway) against
real HTTP servers on loopback."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from appliance.notify.channels.base import DeliveryError
from tests.notify_peers import HttpPeer, Request, make_channel, message


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.stop()


def twilio(peer: HttpPeer, **kw: object) -> dict[str, object]:
    return {
        "name": "ops-sms",
        "type": "sms_twilio",
        "url": peer.url,
        "account_sid": "AC123",
        "auth_token": "secret",
        "from": "+15550000000",
        "to": ["+15551234567", "+15557654321"],
        **kw,
    }


# ----------------------------------------------------------------------------------- twilio


async def test_twilio_posts_one_form_per_recipient_with_basic_auth(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.json_response({"sid": "SM1", "status": "queued"}, status=201)
    ch = make_channel(twilio(peer))
    await ch.send(message())
    await ch.close()
    assert [r.path for r in peer.requests] == ["/2010-04-01/Accounts/AC123/Messages.json"] * 2
    forms = [parse_qs(r.text()) for r in peer.requests]
    assert [f["To"] for f in forms] == [["+15551234567"], ["+15557654321"]]
    assert forms[0]["From"] == ["+15550000000"]
    assert forms[0]["Body"] == ["HIGH ssh brute force 203.0.113.7 -> gw-01 (12 failures)"]
    auth = peer.requests[0].headers["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"AC123:secret").decode()


async def test_twilio_sends_only_to_the_recipients_the_message_names_within_to(
    peer: HttpPeer,
) -> None:
    peer.answer = lambda r: web.json_response({"sid": "SM1", "status": "queued"}, status=201)
    ch = make_channel(twilio(peer))
    await ch.send(replace(message(), recipients=("+15557654321", "+15550009999")))
    await ch.close()
    # The second number of the channel only: a number outside ``to`` is never added.
    assert [parse_qs(r.text())["To"] for r in peer.requests] == [["+15557654321"]]


async def test_twilio_body_is_cut_to_max_segments(peer: HttpPeer) -> None:
    ch = make_channel(twilio(peer, max_segments=2, to=["+15551234567"]))
    await ch.send(message(short="word " * 200))
    await ch.send(message(short="ünïcødé ✓ " * 50))
    await ch.close()
    gsm_body, ucs_body = (parse_qs(r.text())["Body"][0] for r in peer.requests)
    assert len(gsm_body) <= 2 * 153 and gsm_body.endswith("...")
    assert len(ucs_body) <= 2 * 67 and ucs_body.endswith("...")


async def test_twilio_400_is_not_retried_and_429_is(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.json_response(
        {"code": 21211, "message": "The 'To' number is not a valid phone number."}, status=400
    )
    ch = make_channel(twilio(peer))
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    assert not err.value.retryable and "21211" in str(err.value)
    peer.answer = lambda r: web.Response(status=429, headers={"Retry-After": "30"})
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable and err.value.retry_after == 30


async def test_twilio_auth_token_from_a_file_stays_out_of_repr(peer: HttpPeer, tmp_path) -> None:
    (tmp_path / "token").write_text("file-secret\n")
    table = twilio(peer, auth_token_file="token")
    del table["auth_token"]
    ch = make_channel(table, tmp_path)
    await ch.send(message())
    await ch.close()
    assert (
        peer.requests[0]
        .headers["Authorization"]
        .endswith(base64.b64encode(b"AC123:file-secret").decode())
    )
    assert "file-secret" not in repr(ch) and "file-secret" not in repr(ch.cfg)


# ------------------------------------------------------------------------------ generic HTTP


def gateway(peer: HttpPeer, **kw: object) -> dict[str, object]:
    return {
        "name": "gw",
        "type": "sms_http",
        "url": peer.url + "/send",
        "to": ["+15551234567"],
        "from": "SEM",
        **kw,
    }


async def test_json_template_escapes_values_as_json_strings(peer: HttpPeer) -> None:
    body = '{"to": "{to}", "msg": "{text}", "sev": "{severity}", "meta": {"src": "sem"}}'
    ch = make_channel(
        gateway(
            peer,
            content_type="json",
            body=body,
            headers={"Authorization": "Bearer {token}", "X-Subject": "{subject}"},
            token="t0k",
        )
    )
    await ch.send(message(short='quote " backslash \\ newline\nend', subject="a\r\nX-Evil: 1"))
    await ch.close()
    (req,) = peer.requests
    doc = json.loads(req.body)
    assert doc == {
        "to": "+15551234567",
        "msg": 'quote " backslash \\ newline\nend',
        "sev": "high",
        "meta": {"src": "sem"},
    }
    assert req.headers["Authorization"] == "Bearer t0k"
    assert req.headers["X-Subject"] == "a X-Evil: 1" and "X-Evil" not in {
        k for k in req.headers if k != "X-Subject"
    }
    assert req.headers["Content-Type"] == "application/json"


async def test_form_template_percent_encodes_values(peer: HttpPeer) -> None:
    ch = make_channel(gateway(peer, body="to={to}&text={text}&from={from}"))
    await ch.send(message(short="a&b=c +d"))
    await ch.close()
    form = parse_qs(peer.requests[0].text())
    assert form == {"to": ["+15551234567"], "text": ["a&b=c +d"], "from": ["SEM"]}


async def test_get_gateway_takes_placeholders_in_the_url(peer: HttpPeer) -> None:
    ch = make_channel(gateway(peer, method="GET", url=peer.url + "/api?user=x&to={to}&msg={text}"))
    await ch.send(message(short="hi & bye/?#"))
    await ch.close()
    (req,) = peer.requests
    assert req.method == "GET"
    assert req.query == {"user": "x", "to": "+15551234567", "msg": "hi & bye/?#"}


async def test_success_test_on_a_json_field(peer: HttpPeer) -> None:
    ch = make_channel(
        gateway(
            peer,
            body="to={to}&text={text}",
            success_status=[200],
            success_field="result.status",
            success_value="sent",
        )
    )
    peer.answer = lambda r: web.json_response({"result": {"status": "sent"}})
    await ch.send(message())
    peer.answer = lambda r: web.json_response({"result": {"status": "no credit"}})
    with pytest.raises(DeliveryError, match=r"result\.status is 'no credit'") as err:
        await ch.send(message())
    assert err.value.retryable
    peer.answer = lambda r: web.json_response({"result": {"status": "sent"}}, status=202)
    with pytest.raises(DeliveryError, match="HTTP 202"):
        await ch.send(message())
    await ch.close()


async def test_success_test_on_a_substring(peer: HttpPeer) -> None:
    ch = make_channel(gateway(peer, body="{text}", content_type="text", success_contains="OK:"))
    peer.answer = lambda r: web.Response(text="OK: 1 message queued")
    await ch.send(message())
    peer.answer = lambda r: web.Response(text="ERR: bad number")
    with pytest.raises(DeliveryError, match="lacks 'OK:'"):
        await ch.send(message())
    await ch.close()
    assert peer.requests[0].text() == "HIGH ssh brute force 203.0.113.7 -> gw-01 (12 failures)"


async def test_a_retry_after_a_partial_failure_skips_recipients_who_have_it(
    peer: HttpPeer,
) -> None:
    def answer(r: Request) -> web.StreamResponse:
        if "7654321" in r.text() and len(peer.requests) < 3:
            return web.Response(status=503)
        return web.json_response({"sid": "SM1"}, status=201)

    peer.answer = answer
    ch = make_channel(twilio(peer))
    with pytest.raises(DeliveryError):
        await ch.send(message())
    await ch.send(message())  # the engine's retry
    await ch.close()
    tos = [parse_qs(r.text())["To"][0] for r in peer.requests]
    assert tos == ["+15551234567", "+15557654321", "+15557654321"]
