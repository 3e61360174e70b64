"""Typed values and placeholder rendering: how incident data may reach a command or a URL.

Pure functions, no I/O. An incident's value (an address, a user name) comes from hostile
traffic, so it is checked against its type before anything is rendered, and it is rendered
only into one string at a time: an argv element (there is no shell to split it), a URL path
segment (percent-encoded), a JSON string (escaped) or a header value. A value that does not
parse as its type never reaches any of them (:class:`BadValue`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from urllib.parse import quote

from appliance.config import RESPOND_PLACEHOLDER_PATTERN

PLACEHOLDER = re.compile(RESPOND_PLACEHOLDER_PATTERN)
# A user name as systems write them: letters, digits, '.', '_', '@', '-'; never a leading
# '-' (it would read as an option) and never anything a shell, URL or JSON would interpret.
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class BadValue(ValueError):
    """A value that is not what its placeholder's type allows."""


def parse_ip(value: str) -> str:
    """The address in its canonical form; refuses scope ids, networks, padding, anything else."""
    if not isinstance(value, str) or not value or len(value) > 45 or value.strip() != value:
        raise BadValue(f"not an IP address: {value!r:.80}")
    if "%" in value or "/" in value:
        raise BadValue(f"not a plain IP address: {value!r:.80}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise BadValue(f"not an IP address: {value!r:.80}") from None


def parse_user(value: str) -> str:
    if not isinstance(value, str) or not USER.fullmatch(value):
        raise BadValue(f"not a user name (letters, digits, . _ @ -): {value!r:.80}")
    return value


def parse_ident(value: str) -> str:
    if not isinstance(value, str) or not IDENT.fullmatch(value):
        raise BadValue(f"not an identifier: {value!r:.80}")
    return value


def typed(kind: str, value: object) -> str:
    """``value`` checked as ``kind`` (``ip`` or ``user``)."""
    text = value if isinstance(value, str) else repr(value)
    return parse_ip(text) if kind == "ip" else parse_user(text)


def render(template: str, values: Mapping[str, str], escape: str = "none") -> str:
    """``template`` with each ``{name}`` replaced by its (already checked) value.

    ``escape``: ``none`` (argv elements, headers), ``path`` (percent-encoded URL segment),
    ``json`` (inside a JSON string). Text that is not ``{identifier}`` (``{ {ip} }``, the
    nft set syntax) is kept as written. An unknown name is a :class:`KeyError`: the config
    check refuses those before anything runs.
    """

    def sub(m: re.Match[str]) -> str:
        value = values[m.group(1)]
        if escape == "path":
            return quote(value, safe="")
        if escape == "json":
            return json.dumps(value)[1:-1]
        return value

    return PLACEHOLDER.sub(sub, template)


def render_argv(argv: list[str], values: Mapping[str, str]) -> list[str]:
    """One rendered element per template element: a value can never add or split one."""
    return [render(a, values) for a in argv]


def render_url(template: str, values: Mapping[str, str]) -> str:
    return render(template, values, "path")
