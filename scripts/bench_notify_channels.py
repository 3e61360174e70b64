#!/usr/bin/env python3
"""Notification channels: messages/s and send latency through each transport to a peer on
loopback (HTTPS webhook with a private CA and Standard Webhooks signing, Twilio-layout SMS
over HTTP, e-mail over SMTP with STARTTLS, SMS through the simulated modem on a pty).

Sequential sends, one recipient each, as the engine's per-channel delivery does. Prints ONE
JSON line. Needs the test extras (trustme, aiosmtpd); figures depend on the machine's load.

    .venv/bin/python scripts/bench_notify_channels.py --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import trustme
    from aiosmtpd.controller import Controller
except ImportError:
    print(
        json.dumps(
            {"bench": "notify-channels", "error": "needs trustme, aiosmtpd: run scripts/test"}
        )
    )
    raise SystemExit(2) from None

from aiohttp import web

from appliance.notify.channels.core import ChannelBase
from tests.conftest import free_port
from tests.notify_peers import HttpPeer, make_channel, message
from tests.sim_modem import SimModem

SECRET = "whsec_" + base64.b64encode(b"bench-secret-0123456789abcdef").decode()


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


async def timed(ch: ChannelBase, n: int) -> dict[str, float]:
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await ch.send(message(incident_ids=(f"inc-{i}",), short=f"bench {i} " + "x" * 100))
        lat.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - start
    await ch.close()
    lat.sort()
    return {
        "messages": n,
        "per_second": round(n / wall, 1),
        "latency_ms_p50": round(statistics.median(lat), 2),
        "latency_ms_p99": round(lat[min(n - 1, int(n * 0.99))], 2),
    }


async def run(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "notify-channels", "n": n}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(d / "ca.pem"))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

        https = await HttpPeer(ssl_context=server_ctx).start()
        hook = {"name": "hook", "type": "webhook", "url": https.url, "hmac_secret": SECRET}
        out["webhook_https"] = await timed(make_channel({**hook, "ca_file": "ca.pem"}, d), n)
        await https.stop()

        plain = HttpPeer(answer=lambda r: web.json_response({"sid": "SM"}, status=201))
        await plain.start()
        sms = {
            "name": "sms",
            "type": "sms_twilio",
            "url": plain.url,
            "account_sid": "AC1",
            "auth_token": "t",
            "from": "+15550000000",
            "to": ["+15551234567"],
        }
        out["sms_twilio_http"] = await timed(make_channel(sms), n)
        await plain.stop()

        sink = Sink()
        port = free_port()
        ctl = Controller(sink, hostname="127.0.0.1", port=port, tls_context=server_ctx)
        ctl.start()
        mail = {
            "name": "mail",
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "tls": "starttls",
            "ca_file": "ca.pem",
            "from": "sem@site.example",
            "to": ["noc@site.example"],
        }
        out["email_starttls"] = await timed(make_channel(mail, d), n)
        ctl.stop()

        modem = SimModem(pin_locked=False)
        gsm = {"name": "gsm", "type": "sms_modem", "device": modem.device, "to": ["+15551234567"]}
        out["sms_modem_pty"] = await timed(make_channel(gsm), n)
        modem.close()
        out["delivered_ok"] = sink.count == n and len(modem.sent) == n and len(https.requests) == n
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="messages per channel")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.n))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
