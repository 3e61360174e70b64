"""Chat and webhook channels against real HTTP(S) servers on loopback: what arrives, how it
is escaped and cut, and how HTTP answers map to retry or give up."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import standardwebhooks
import trustme
from aiohttp import web

from appliance.config import ConfigError
from appliance.metrics import Registry
from appliance.notify.channels.base import DeliveryError
from tests.notify_peers import HttpPeer, make_channel, message

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOSTILE = "evil <!channel> & <https://phish.example|click> \x1b[31mred\x1b[0m \u202eabc"


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.stop()


# ------------------------------------------------------------------------------------ slack


async def test_slack_posts_text_and_blocks_with_markup_escaped(peer: HttpPeer) -> None:
    ch = make_channel({"name": "s", "type": "slack", "url": peer.url + "/services/T/B/X"})
    await ch.send(message(text=HOSTILE, ack_url="https://sem.example/ack?t=abc"))
    await ch.close()
    (req,) = peer.requests
    assert req.path == "/services/T/B/X"
    doc = req.json()
    assert doc["text"].startswith("SSH brute force")
    header, section, actions = doc["blocks"]
    assert header["text"]["text"] == "SSH brute force from 203.0.113.7"
    body = section["text"]["text"]
    assert "&lt;!channel&gt;" in body and "&amp;" in body and "<" not in body
    assert "\x1b" not in body and "\\x1b[31m" in body and "\u202e" not in body
    assert actions["elements"][0]["url"] == "https://sem.example/ack?t=abc"


async def test_slack_section_is_cut_to_its_limit(peer: HttpPeer) -> None:
    ch = make_channel({"name": "s", "type": "slack", "url": peer.url})
    await ch.send(message(text="x" * 10_000, subject="s" * 400))
    await ch.close()
    doc = peer.requests[0].json()
    assert len(doc["blocks"][0]["text"]["text"]) == 150
    assert len(doc["blocks"][1]["text"]["text"]) <= 3000
    assert doc["blocks"][1]["text"]["text"].endswith("…")


# ------------------------------------------------------------------------------- mattermost


async def test_mattermost_posts_markdown_with_event_markup_escaped(peer: HttpPeer) -> None:
    ch = make_channel({"name": "m", "type": "mattermost", "url": peer.url + "/hooks/abc"})
    await ch.send(message(text="see [here](https://phish.example) **now**", ack_url="https://a/x"))
    await ch.close()
    text = peer.requests[0].json()["text"]
    assert text.startswith("#### SSH brute force")
    assert r"\[here\]\(https\:" in text and r"\*\*now\*\*" in text
    assert text.endswith("[Acknowledge](https://a/x)")


# ------------------------------------------------------------------------------------ teams


async def test_teams_posts_an_adaptive_card_with_an_acknowledge_action(peer: HttpPeer) -> None:
    ch = make_channel({"name": "t", "type": "teams", "url": peer.url + "/workflows/x"})
    await ch.send(message(severity="critical", ack_url="https://sem.example/ack/1"))
    await ch.close()
    doc = peer.requests[0].json()
    assert doc["type"] == "message"
    (att,) = doc["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["color"] == "Attention"
    assert "12 failed logins" in card["body"][1]["text"]
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Acknowledge", "url": "https://sem.example/ack/1"}
    ]


# --------------------------------------------------------------------------------- telegram


async def test_telegram_sends_html_to_each_chat_with_text_escaped(peer: HttpPeer) -> None:
    ch = make_channel(
        {
            "name": "tg",
            "type": "telegram",
            "api_url": peer.url,
            "bot_token": "123:ABC",
            "to": ["-1001", "@ops"],
        }
    )
    await ch.send(message(text="<script>x</script> & co", ack_url="https://a/?x=1&y=2"))
    await ch.close()
    assert [r.path for r in peer.requests] == ["/bot123:ABC/sendMessage"] * 2
    first, second = (r.json() for r in peer.requests)
    assert (first["chat_id"], second["chat_id"]) == ("-1001", "@ops")
    assert first["parse_mode"] == "HTML"
    assert first["text"].startswith("<b>SSH brute force from 203.0.113.7</b>")
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in first["text"]
    assert first["text"].endswith('<a href="https://a/?x=1&amp;y=2">Acknowledge</a>')


async def test_telegram_retry_after_from_the_answer_body(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.json_response(
        {"ok": False, "error_code": 429, "parameters": {"retry_after": 17}}, status=429
    )
    ch = make_channel(
        {"name": "tg", "type": "telegram", "api_url": peer.url, "bot_token": "1:X", "to": ["5"]}
    )
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable and err.value.retry_after == 17


async def test_telegram_bot_token_never_appears_in_an_error(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.Response(status=404, text=f"no such path {r.path}")
    ch = make_channel(
        {
            "name": "tg",
            "type": "telegram",
            "api_url": peer.url,
            "bot_token": "9:SEKRIT",
            "to": ["5"],
        }
    )
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert not err.value.retryable
    assert "SEKRIT" not in str(err.value) and "<redacted>" in str(err.value)
    assert "SEKRIT" not in repr(ch)


# ---------------------------------------------------------------------------------- webhook


async def test_webhook_is_signed_verifiably_and_carries_the_notification(peer: HttpPeer) -> None:
    ch = make_channel(
        {"name": "w", "type": "webhook", "url": peer.url + "/in", "hmac_secret": SECRET}
    )
    await ch.send(message(incident_ids=("a", "b"), ack_url="https://x/ack"))
    await ch.send(message(incident_ids=("a", "b"), ack_url="https://x/ack"))
    await ch.close()
    first, again = peer.requests
    payload = standardwebhooks.Webhook(SECRET).verify(first.body, first.headers)
    assert payload["type"] == "notification"
    assert payload["incident_ids"] == ["a", "b"]
    assert payload["severity"] == "high" and payload["ack_url"] == "https://x/ack"
    # A retry of the same notification keeps its id, so the receiver can drop the repeat.
    assert first.headers["webhook-id"] == again.headers["webhook-id"]


async def test_webhook_with_a_bad_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="hmac_secret"):
        make_channel(
            {"name": "w", "type": "webhook", "url": "https://x.example", "hmac_secret": "whsec_!"}
        )


# ------------------------------------------------------------------------- failure mapping


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (408, True), (400, False), (404, False)]
)
async def test_status_codes_map_to_retry_or_give_up(
    peer: HttpPeer, status: int, retryable: bool
) -> None:
    peer.answer = lambda r: web.Response(status=status, text="nope")
    ch = make_channel({"name": "w", "type": "webhook", "url": peer.url})
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable is retryable
    assert f"HTTP {status}" in str(err.value)


async def test_429_carries_retry_after_to_the_engine(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.Response(status=429, headers={"Retry-After": "120"})
    ch = make_channel({"name": "w", "type": "slack", "url": peer.url})
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    assert err.value.retryable and err.value.retry_after == 120


async def test_a_redirect_is_not_followed(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.Response(status=302, headers={"Location": "http://10.9.9.9/"})
    ch = make_channel({"name": "w", "type": "webhook", "url": peer.url})
    with pytest.raises(DeliveryError, match="HTTP 302"):
        await ch.send(message())
    await ch.close()
    assert len(peer.requests) == 1


async def test_a_server_that_never_answers_times_out() -> None:
    done = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ch = make_channel(
        {"name": "w", "type": "webhook", "url": f"http://127.0.0.1:{port}", "timeout": 0.5}
    )
    with pytest.raises(DeliveryError) as err:
        await asyncio.wait_for(ch.send(message()), 10)
    await ch.close()
    done.set()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)
    assert err.value.retryable and "no answer within 0.5s" in str(err.value)


async def test_a_huge_answer_is_read_only_up_to_the_bound(peer: HttpPeer) -> None:
    peer.answer = lambda r: web.Response(status=500, body=b"E" * (512 * 1024))
    ch = make_channel({"name": "w", "type": "webhook", "url": peer.url})
    with pytest.raises(DeliveryError) as err:
        await ch.send(message())
    await ch.close()
    await asyncio.sleep(0.2)  # let the server see the reset before it is stopped
    assert len(str(err.value)) < 400


async def test_sends_are_counted_by_channel_and_result(peer: HttpPeer) -> None:
    registry = Registry()
    ch = make_channel({"name": "hook", "type": "webhook", "url": peer.url}, registry=registry)
    await ch.send(message())
    peer.answer = lambda r: web.Response(status=503)
    with pytest.raises(DeliveryError):
        await ch.send(message())
    peer.answer = lambda r: web.Response(status=410)
    with pytest.raises(DeliveryError):
        await ch.send(message())
    await ch.close()
    text = registry.render()
    for result in ("ok", "retry", "failed"):
        assert (
            f'appliance_notify_channel_sends_total{{channel="hook",type="webhook",'
            f'result="{result}"}} 1' in text
        )


# -------------------------------------------------------------------------------------- TLS


@pytest.fixture
def pki(tmp_path: Path) -> tuple[trustme.CA, Path, ssl.SSLContext]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    return ca, ca_file, server_ctx


async def test_https_with_the_private_ca_delivers(
    pki: tuple[trustme.CA, Path, ssl.SSLContext], tmp_path: Path
) -> None:
    _, ca_file, server_ctx = pki
    peer = await HttpPeer(ssl_context=server_ctx).start()
    ch = make_channel(
        {"name": "w", "type": "webhook", "url": peer.url, "ca_file": ca_file.name}, tmp_path
    )
    await ch.send(message())
    await ch.close()
    await peer.stop()
    assert peer.requests[0].json()["subject"] == "SSH brute force from 203.0.113.7"


async def test_https_with_an_untrusted_certificate_is_refused(
    pki: tuple[trustme.CA, Path, ssl.SSLContext],
) -> None:
    _, _, server_ctx = pki
    peer = await HttpPeer(ssl_context=server_ctx).start()
    ch = make_channel({"name": "w", "type": "webhook", "url": peer.url})  # system CAs only
    with pytest.raises(DeliveryError, match="certificate") as err:
        await ch.send(message())
    await ch.close()
    await peer.stop()
    assert err.value.retryable and peer.requests == []


async def test_escaping_never_pushes_a_slack_section_past_its_limit(peer: HttpPeer) -> None:
    ch = make_channel({"name": "s", "type": "slack", "url": peer.url})
    await ch.send(message(text="<&>" * 3000))  # every character grows to 4-5 when escaped
    await ch.close()
    body = peer.requests[0].json()["blocks"][1]["text"]["text"]
    assert len(body) <= 3000 and body.endswith("…")
    assert body.replace("&lt;", "").replace("&amp;", "").replace("&gt;", "") == "…"


async def test_an_unexpected_failure_becomes_a_retryable_delivery_error(peer: HttpPeer) -> None:
    ch = make_channel({"name": "w", "type": "webhook", "url": peer.url})
    with pytest.raises(DeliveryError, match="internal error: TypeError") as err:
        await ch.send(message(extra={"not": object()}))  # type: ignore[dict-item]
    await ch.close()
    assert err.value.retryable
