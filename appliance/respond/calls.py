"""The calls a response makes: an argv program or an HTTP request, built from an action's
templates and checked values, and carried out with a timeout.

Building (:func:`build_call`) is pure; running (:func:`run_call`) is the I/O edge. A program
runs from an argv list with no shell, an empty environment but ``PATH`` and no stdin; its
exit status decides. An HTTP call succeeds on a 2xx (for OPNsense also ``status`` not
``failed`` in the JSON answer); a 4xx other than 408/429 will not get better by retrying.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from appliance.config import RespondAction
from appliance.logutil import printable
from appliance.respond.values import BadValue, render, render_argv, render_url

SAFE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
OUTPUT_LIMIT = 4096  # bytes of a program's output kept for the error text

# Firewall presets: (method, path under the base URL, JSON body) for block and unblock.
# OPNsense: the alias_util controller adds/removes one address in a host alias at once.
# pfSense: the pfSense-API package's alias entry endpoint (v1), applied at once.
PRESETS: dict[str, dict[bool, tuple[str, str, str]]] = {
    "opnsense": {
        False: ("POST", "/api/firewall/alias_util/add/{alias}", '{"address": "{ip}"}'),
        True: ("POST", "/api/firewall/alias_util/delete/{alias}", '{"address": "{ip}"}'),
    },
    "pfsense": {
        False: (
            "POST",
            "/api/v1/firewall/alias/entry",
            '{"name": "{alias}", "address": ["{ip}"], "apply": true}',
        ),
        True: (
            "DELETE",
            "/api/v1/firewall/alias/entry",
            '{"name": "{alias}", "address": "{ip}", "apply": true}',
        ),
    },
}


class CallFailed(Exception):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Call:
    kind: Literal["exec", "http"]
    argv: list[str] = field(default_factory=list)
    method: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    preset: str = "generic"

    def describe(self) -> str:
        """What the audit shows: the argv, or method and URL (never credentials)."""
        if self.kind == "exec":
            return json.dumps(self.argv)
        return f"{self.method} {self.url}" + (f" {self.body}" if self.body else "")


def _body_escape(body: str) -> str:
    return "json" if body.lstrip()[:1] in ("{", "[") else "path"


def build_call(action: RespondAction, values: dict[str, str], *, undo: bool) -> Call | None:
    """The call for ``action`` (or its undo) with ``values`` in place; ``None`` when the
    action has no undo. A placeholder without a value is a :class:`BadValue`."""
    try:
        if action.type == "exec":
            argv = action.undo_argv if undo else action.argv
            return Call("exec", argv=render_argv(argv, values)) if argv else None
        if action.preset != "generic":
            method, path, body = PRESETS[action.preset][undo]
            url = action.url.rstrip("/") + path
        elif undo:
            if not action.undo_url:
                return None
            method, url, body = action.undo_method, action.undo_url, action.undo_body
        else:
            method, url, body = action.method, action.url, action.body
        headers = {k: render(v, values) for k, v in action.headers.items()}
        if body and not any(k.lower() == "content-type" for k in headers):
            if _body_escape(body) == "json":
                headers["Content-Type"] = "application/json"
            else:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        return Call(
            "http",
            method=method,
            url=render_url(url, values),
            headers=headers,
            body=render(body, values, _body_escape(body)) if body else "",
            preset=action.preset,
        )
    except KeyError as exc:
        raise BadValue(f"no value for placeholder {exc.args[0]!r}") from None


async def run_exec(argv: list[str], timeout: float) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=SAFE_ENV,
            start_new_session=True,
        )
    except OSError as exc:
        raise CallFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CallFailed(f"{argv[0]} timed out after {timeout:g} s") from None
    text = printable(out[-OUTPUT_LIMIT:].decode(errors="replace"), 300)
    if proc.returncode != 0:
        raise CallFailed(f"{argv[0]} exited {proc.returncode}: {text}")
    return text


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` value for HTTP basic auth (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


async def run_http(
    call: Call,
    *,
    timeout: float,
    auth: str | None,
    ssl_ctx: ssl.SSLContext | None,
) -> str:
    t = aiohttp.ClientTimeout(total=timeout)
    headers = dict(call.headers)
    if auth:
        headers["Authorization"] = auth
    try:
        async with (
            aiohttp.ClientSession(timeout=t) as session,
            session.request(
                call.method,
                call.url,
                headers=headers,
                data=call.body.encode() if call.body else None,
                ssl=ssl_ctx if ssl_ctx is not None else True,
                allow_redirects=False,
            ) as resp,
        ):
            text = (await resp.content.read(OUTPUT_LIMIT)).decode(errors="replace")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CallFailed(f"{call.method} {call.url}: {type(exc).__name__}: {exc}") from None
    short = printable(text, 300)
    if not 200 <= status < 300:
        retryable = status >= 500 or status in (408, 429)
        raise CallFailed(f"HTTP {status}: {short}", retryable=retryable)
    if call.preset == "opnsense":
        answer: Any = None
        with contextlib.suppress(ValueError):
            answer = json.loads(text)
        if isinstance(answer, dict) and answer.get("status") == "failed":
            raise CallFailed(f"OPNsense answered failed: {short}", retryable=False)
    return short


async def run_call(
    call: Call,
    *,
    timeout: float,
    auth: str | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
) -> str:
    if call.kind == "exec":
        return await run_exec(call.argv, timeout)
    return await run_http(call, timeout=timeout, auth=auth, ssl_ctx=ssl_ctx)
