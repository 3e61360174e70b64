"""What may never be blocked, and how many actions a minute: the guard rails of response.

A block of the box's own address, its management network or the console that talks to it
would cut the site off from the people who could undo it, so those are refused whatever the
rules say. The box's addresses are read from its interfaces (IPv4 by ``SIOCGIFADDR``, IPv6
from ``/proc/net/if_inet6``) at start and on reload.
"""

from __future__ import annotations

import collections
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

from netaddr import IPAddress, IPNetwork, IPSet

from appliance.config import AppConfig, parse_hostport

SIOCGIFADDR = 0x8915
IF_INET6 = Path("/proc/net/if_inet6")
ALWAYS = ["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"]


def interface_addresses() -> list[str]:
    """The addresses configured on this host's interfaces (best effort; never raises)."""
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(socket.inet_ntoa(res[20:24]))
    try:
        for line in IF_INET6.read_text().splitlines():
            hexaddr = line.split()[0]
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def _listen_host(listen: str) -> list[str]:
    try:
        host = parse_hostport(listen)[0]
        ipaddress.ip_address(host)
    except ValueError:
        return []
    return [host]


class NeverBlock:
    """The allow-list: each network with why it is there (the audit says which one hit)."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self.entries: list[tuple[IPNetwork, str]] = []
        for net, why in entries:
            self.entries.append((IPNetwork(net), why))
        self.set = IPSet(n for n, _ in self.entries)

    @classmethod
    def from_config(cls, cfg: AppConfig, own: list[str] | None = None) -> NeverBlock:
        r = cfg.respond
        entries = [(n, "loopback/unspecified") for n in ALWAYS]
        if r.discover_own_addresses:
            own = interface_addresses() if own is None else own
            entries += [(a, "own address") for a in own]
        for host in _listen_host(cfg.api.listen):
            if not ipaddress.ip_address(host).is_unspecified:
                entries.append((host, "API listen address"))
        entries += [(n, "management network") for n in r.management_networks]
        entries += [(n, "never_block") for n in r.never_block]
        return cls(entries)

    def reason(self, ip: str) -> str | None:
        """Why ``ip`` may not be blocked, or ``None``."""
        addr = IPAddress(ip)
        if addr.version == 6 and addr.is_ipv4_mapped():
            addr = addr.ipv4()
        if addr not in self.set:
            return None
        for net, why in self.entries:
            if addr in net:
                return f"{why} ({net})"
        return "never_block"


class RateLimit:
    """At most ``per_minute`` actions in any 60 s (a sliding window of their times)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.times: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        while self.times and self.times[0] <= now - 60.0:
            self.times.popleft()
        if len(self.times) >= self.per_minute:
            return False
        self.times.append(now)
        return True
