"""The config loader: any file is a valid :class:`AppConfig` or :class:`ConfigError` (what
``appliance check-config`` turns into exit code 2, and what a SIGHUP reload logs while keeping
the old config); any other exception is a crash of the command or the reload.

Input: one mode byte, then either the file's bytes (even mode, read through ``load_config``)
or, for odd modes, edits to the example config's parsed tables: each edit picks a key path
and puts a value of another type or shape there (what TOML text mutation rarely reaches).
"""

from __future__ import annotations

import math
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import EXAMPLE_CONFIG, AppConfig, ConfigError, load_config, parse_config
from tests.fuzz.harness import committed_seeds

if TYPE_CHECKING:
    import atheris

MAX_LEN = 8192
_DIR = Path(tempfile.mkdtemp(prefix="appliance-fuzz-config-"))
_FILE = _DIR / "config.toml"
_EXAMPLE: dict[str, Any] = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))

HAND_MADE = [
    b"",
    b'[appliance]\nsensor_id = "edge-01"\n[api]\nlisten = "[::1]:8080"\n',
    b'[[sources.syslog]]\nprotocol = "tls"\nlisten = "0.0.0.0:6514"\ntls_cert = "c.pem"\n'
    b'tls_key = "k.pem"\ntls_client_ca = "ca.pem"\ntls_client_allowed = ["CN=fw1"]\n',
    b'[[sources.snmp]]\nlisten = "0.0.0.0:1162"\ncommunities = ["public"]\n[[sources.snmp.users]]'
    b'\nname = "u"\nengine_id = "0x8000000001020304"\nauth_protocol = "sha"\nauth_key = "x"\n',
    b'[[sources.syslog_senders]]\nnetworks = ["10.0.0.0/8"]\ntimezone = "Europe/Berlin"\n',
    b'[[upstream]]\nname = "soc"\nurl = "https://soc.example/hook"\nformat = "webhook"\n',
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _value(fdp: atheris.FuzzedDataProvider) -> Any:
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.PickValueInList([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324])
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    if kind == 3:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 6:
        return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp)
                for _ in range(fdp.ConsumeIntInRange(0, 3))}  # fmt: skip
    if kind == 7:
        return fdp.PickValueInList(["", "0.0.0.0:0", "[::]:65536", "::1", "x" * 5000, "\x00",
                                    "../../../etc/passwd", "0x", "UTC", "a" * 300])  # fmt: skip
    if kind == 8:
        return [fdp.ConsumeUnicodeNoSurrogates(20) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 9:
        return str(fdp.ConsumeInt(4))
    if kind == 10:
        return fdp.ConsumeIntInRange(-(2**70), 2**70)
    return None  # a key deleted


def _edited(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    doc: dict[str, Any] = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        paths = [p for p in _paths(doc) if p]
        path = fdp.PickValueInList(paths)
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        value = _value(fdp)
        if value is None:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        if not doc:
            break
    return doc


def seeds() -> Iterator[bytes]:
    yield b"\0" + EXAMPLE_CONFIG.read_bytes()
    for text in HAND_MADE:
        yield b"\0" + text
    for i in range(16):
        yield bytes([2 * i + 1]) + bytes(range(i * 7, i * 7 + 64))
    yield from committed_seeds("config")


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] % 2 == 0:
            _FILE.write_bytes(data[1:])
            config = load_config(_FILE)
        else:
            import atheris  # only the structured mode needs its data provider

            config = parse_config(_edited(atheris.FuzzedDataProvider(data[1:])), _DIR)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors), exc.errors
        return
    assert isinstance(config, AppConfig)
