"""Threat-intelligence indicators: feed parsers and the index the enrichment stage looks up.

Parsers are pure (text in, indicators out, malformed entries counted); the index answers "is
this address / domain / URL / hash an indicator, from which feed, how sure, still valid?" in
O(log n) for addresses and O(1) for the rest, so a million indicators cost the hot path a
bisect, not a scan.

Addresses and networks are integer intervals sorted by start. CIDR blocks either nest or are
disjoint, so each interval keeps a pointer to the innermost interval containing it: a lookup
bisects to the last interval starting at or before the address, then walks up that chain
(at most one step per prefix length) past intervals that end too early or have expired.
The innermost live indicator wins, and of equal blocks the most confident. Domains match
themselves and their subdomains (as DNS response-policy zones do); hashes and URLs match
exactly.

Aging: every indicator has an expiry, the earliest of its own ``valid_until`` and its last
sighting plus the feed's TTL; an expired indicator stops matching without a reload.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import math
import re
import socket
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FOREVER = math.inf
NONE = -1  # a lookup found nothing listed
EXPIRED = -2  # a lookup found only indicators past their expiry
_pton = socket.inet_pton
_ntop = socket.inet_ntop
_AF4, _AF6 = socket.AF_INET, socket.AF_INET6
HASH_TYPES = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
MAX_LINE = 4096  # longer lines are malformed (a feed is lists of short values)
_HEX = frozenset("0123456789abcdef")
# Labels of letters, digits, hyphens (and "_", which malware domains use); the top-level label
# starts with a letter, so "999.1.2.3" is a bad address, not a domain.
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$"
)


@dataclass(slots=True)
class Indicator:
    """One parsed indicator, before it goes into an :class:`IntelIndex`.

    ``kind`` is ``ip`` (value: a network in CIDR form, a host as /32 or /128), ``domain``,
    ``url`` or ``hash`` (value lower-case hex). Times are epoch seconds, ``None`` unknown.
    """

    kind: str
    value: str
    confidence: int | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    valid_until: float | None = None
    description: str | None = None
    net: tuple[int, int, bool] | None = None  # an ip's parsed (first, prefix length, v6)


@dataclass(slots=True)
class ParseResult:
    indicators: list[Indicator] = field(default_factory=list)
    malformed: int = 0
    samples: list[str] = field(default_factory=list)  # the first few malformed entries

    def bad(self, what: str) -> None:
        self.malformed += 1
        if len(self.samples) < 5:
            self.samples.append(what[:120])


# ----------------------------------------------------------------------------- values


def parse_time(value: Any) -> float | None:
    """An epoch or ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` (UTC unless zoned) time, else ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def ip_interval(text: str) -> tuple[int, int, bool] | None:
    """``(first, prefix length, is IPv6)`` of an address or CIDR block, ``None`` if it is not
    one. Host bits set in a block (``10.0.0.1/8``) are cleared, as firewalls read them."""
    addr, _, plen_text = text.partition("/")
    v6 = ":" in addr
    try:
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr)
    except (OSError, ValueError):
        return None
    bits = 128 if v6 else 32
    if plen_text:
        if not plen_text.isdigit() or len(plen_text) > 3:
            return None
        plen = int(plen_text)
        if plen > bits:
            return None
    else:
        plen = bits
    value = int.from_bytes(packed, "big")
    host = bits - plen
    return (value >> host) << host, plen, v6


def classify(value: str) -> Indicator | None:
    """An indicator of the kind the value's shape says (plain lists mix them), or ``None``."""
    v = value.strip()
    if not v:
        return None
    if "://" in v:
        return Indicator("url", v)
    low = v.lower()
    if len(low) in HASH_TYPES and _HEX.issuperset(low):
        return Indicator("hash", low)
    net = ip_interval(v)
    if net is not None:
        return Indicator("ip", v, net=net)
    if v.count("-") == 1:  # a range "a.b.c.d-e.f.g.h" (FireHOL)
        first, last = v.split("-")
        if ip_interval(first.strip()) is not None and ip_interval(last.strip()) is not None:
            return Indicator("range", v)
    low = low.rstrip(".")
    if _DOMAIN.match(low):
        return Indicator("domain", low)
    return None


# ----------------------------------------------------------------------------- parsers


def parse_plain(text: str) -> ParseResult:
    """One value per line: addresses, CIDR blocks, ``a-b`` ranges, domains, URLs or hashes;
    ``#`` and ``;`` start comments (FireHOL netsets, Spamhaus DROP ``1.2.3.0/24 ; SBL123``)."""
    out = ParseResult()
    out.indicators = list(iter_plain(text, out))
    return out


def iter_plain(text: str, out: ParseResult) -> Iterator[Indicator]:
    """:func:`parse_plain` one indicator at a time (a million-line list is never a million
    objects at once); malformed lines are counted in ``out`` as they pass."""
    for line in text.splitlines():
        if len(line) > MAX_LINE:
            out.bad(line)
            continue
        note = None
        if "#" in line or ";" in line or " " in line or "\t" in line:
            body = line.split("#", 1)[0].split(";", 1)[0].strip()
            if not body:
                continue
            if ";" in line:
                note = line.split(";", 1)[1].strip() or None
            token = body.split()[0]
        elif line:
            token = line
        else:
            continue
        ind = classify(token)
        if ind is None:
            out.bad(line)
            continue
        if note is not None:
            ind.description = note
        yield ind


# abuse.ch CSV columns (Feodo Tracker, URLhaus, ThreatFox, SSLBL) and similar lists.
CSV_VALUE: tuple[str, ...] = (
    "ioc_value",
    "ioc",
    "dst_ip",
    "ip_address",
    "ip",
    "ipaddress",
    "url",
    "domain",
)
CSV_VALUE += ("sha256_hash", "sha256", "md5_hash", "md5", "sha1_hash", "sha1", "indicator")
CSV_FIRST = ("first_seen_utc", "first_seen", "dateadded", "date_added", "firstseen")
CSV_LAST = ("last_seen_utc", "last_seen", "last_online", "lastseen")
CSV_CONFIDENCE = ("confidence_level", "confidence")
CSV_DESCRIPTION = ("malware_printable", "malware", "threat", "threat_type", "signature")


def _pick(row: dict[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        v = row.get(n)
        if v is not None and v.strip() not in ("", "None", "null"):
            return v.strip()
    return None


def parse_csv(text: str) -> ParseResult:
    """abuse.ch-style CSV: the header is the first row, or the last ``#`` comment line before
    the data (URLhaus and ThreatFox comment it out); rows name the value (``ioc_value`` with
    ``ioc_type``, ``dst_ip``, ``url``, ``sha256_hash``...), dates and confidence."""
    out = ParseResult()
    lines = text.splitlines()
    header: list[str] | None = None
    data_start = 0
    last_comment = None
    for i, line in enumerate(lines):
        if line.startswith("#"):
            last_comment = line.lstrip("#").strip()
            continue
        if not line.strip():
            continue
        first = next(csv.reader([line]), [])
        names = [c.strip().lower() for c in first]
        if any(n in CSV_VALUE for n in names):
            header, data_start = names, i + 1
        else:
            if last_comment is not None:
                header = [c.strip().lower() for c in next(csv.reader([last_comment]), [])]
            data_start = i
        break
    if header is None or not any(n in CSV_VALUE for n in header):
        # No header: one value in the first column (some lists are just quoted values).
        header = ["indicator"]
    reader = csv.reader(io.StringIO("\n".join(lines[data_start:])), skipinitialspace=True)
    try:
        for cells in reader:
            if not cells or cells[0].startswith("#"):
                continue
            row = {header[i]: c for i, c in enumerate(cells[: len(header)])}
            _csv_row(row, ",".join(cells), out)
    except csv.Error as exc:
        out.bad(f"csv: {exc}")
    return out


def _csv_row(row: dict[str, str], raw: str, out: ParseResult) -> None:
    value = _pick(row, CSV_VALUE)
    if value is None or len(value) > MAX_LINE:
        out.bad(raw)
        return
    ioc_type = (row.get("ioc_type") or "").strip().lower()
    if ioc_type == "ip:port" or (":" in value and value.count(":") == 1 and "//" not in value):
        value = value.rsplit(":", 1)[0]
    ind = classify(value)
    if ind is None:
        out.bad(raw)
        return
    conf = _pick(row, CSV_CONFIDENCE)
    if conf is not None:
        try:
            ind.confidence = max(0, min(100, int(float(conf))))
        except ValueError:
            out.bad(raw)
            return
    ind.first_seen = parse_time(_pick(row, CSV_FIRST))
    ind.last_seen = parse_time(_pick(row, CSV_LAST))
    ind.description = _pick(row, CSV_DESCRIPTION)
    out.indicators.append(ind)


# MISP attribute types (https://www.misp-project.org/datamodels/) -> the part that is ours.
MISP_TYPES = {
    "ip-src": "ip",
    "ip-dst": "ip",
    "ip-src|port": "ip",
    "ip-dst|port": "ip",
    "domain": "domain",
    "hostname": "domain",
    "domain|ip": "domain",
    "url": "url",
    "md5": "hash",
    "sha1": "hash",
    "sha256": "hash",
    "sha512": "hash",
    "filename|md5": "hash",
    "filename|sha1": "hash",
    "filename|sha256": "hash",
}


def parse_misp(text: str) -> ParseResult:
    """MISP JSON: one event (``{"Event": ...}``), a list of them, or a REST search answer
    (``{"response": [...]}``); attributes at the event level and inside its objects."""
    out = ParseResult()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        out.bad(f"json: {exc}")
        return out
    events: list[Any] = []
    if isinstance(doc, dict) and isinstance(doc.get("response"), list):
        events = doc["response"]
    elif isinstance(doc, list):
        events = doc
    else:
        events = [doc]
    for item in events:
        ev = item.get("Event", item) if isinstance(item, dict) else None
        if not isinstance(ev, dict):
            out.bad(str(item))
            continue
        info = ev.get("info") if isinstance(ev.get("info"), str) else None
        attrs = list(ev.get("Attribute") or [])
        for obj in ev.get("Object") or []:
            if isinstance(obj, dict):
                attrs.extend(obj.get("Attribute") or [])
        for attr in attrs:
            _misp_attribute(attr, info, out)
    return out


def _misp_attribute(attr: Any, info: str | None, out: ParseResult) -> None:
    if not isinstance(attr, dict):
        out.bad(str(attr))
        return
    kind = MISP_TYPES.get(str(attr.get("type", "")))
    if kind is None:
        return  # a type that is not an observable of ours (text, vulnerability, ...)
    if attr.get("deleted") in (True, "1") or attr.get("to_ids") in (False, "0"):
        return
    value = str(attr.get("value", ""))
    parts = value.split("|")
    atype = str(attr["type"])
    if atype.startswith("filename|"):
        value = parts[-1]
    elif "|" in atype:
        value = parts[0]
    ind = classify(value)
    if ind is None or (ind.kind != kind and not (kind == "ip" and ind.kind == "range")):
        out.bad(f"{atype}: {value}")
        return
    ind.first_seen = parse_time(attr.get("first_seen")) or parse_time(attr.get("timestamp"))
    ind.last_seen = parse_time(attr.get("last_seen")) or parse_time(attr.get("timestamp"))
    comment = attr.get("comment")
    ind.description = (comment if isinstance(comment, str) and comment else None) or info
    out.indicators.append(ind)


# STIX 2.1 patterning: the comparisons this appliance can observe. A pattern of several
# comparisons joined by OR gives one indicator each; AND and sequence operators are read
# the same way (each observable is an indicator), which matches more, never less.
_STIX_CMP = re.compile(
    r"(ipv4-addr|ipv6-addr|domain-name|url|file)\s*:\s*"
    r"(value|hashes\s*\.\s*(?:'[^']+'|[A-Za-z0-9-]+))\s*=\s*'((?:[^'\\]|\\.)*)'"
)


def parse_stix(text: str) -> ParseResult:
    """A STIX 2.1 bundle: ``indicator`` objects with ``pattern_type: stix``; ``valid_until``,
    ``confidence``, ``revoked`` and the pattern's observables."""
    out = ParseResult()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        out.bad(f"json: {exc}")
        return out
    objects = doc.get("objects") if isinstance(doc, dict) else doc
    if not isinstance(objects, list):
        out.bad("no objects")
        return out
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "indicator":
            continue
        if obj.get("revoked") is True or obj.get("pattern_type", "stix") != "stix":
            continue
        pattern = obj.get("pattern")
        found = _STIX_CMP.findall(pattern) if isinstance(pattern, str) else []
        if not found:
            out.bad(str(pattern))
            continue
        conf = obj.get("confidence")
        confidence = (
            max(0, min(100, int(conf)))
            if isinstance(conf, int | float) and not isinstance(conf, bool)
            else None
        )
        for _obj_type, _prop, raw in found:
            value = raw.replace("\\'", "'").replace("\\\\", "\\")
            ind = classify(value)
            if ind is None:
                out.bad(value)
                continue
            ind.confidence = confidence
            ind.first_seen = parse_time(obj.get("valid_from")) or parse_time(obj.get("created"))
            ind.last_seen = parse_time(obj.get("modified"))
            ind.valid_until = parse_time(obj.get("valid_until"))
            name = obj.get("name")
            ind.description = name if isinstance(name, str) else None
            out.indicators.append(ind)
    return out


PARSERS = {
    "plain": parse_plain,
    "netset": parse_plain,
    "csv": parse_csv,
    "misp": parse_misp,
    "stix": parse_stix,
}


def detect_format(name: str, text: str) -> str:
    """The format of a file from its content (first bytes) and name: JSON bundles are STIX,
    other JSON is MISP; CSV by extension or a comma-separated header; else a plain list."""
    head = text.lstrip()[:4096]
    if head.startswith(("{", "[")):
        return "stix" if '"bundle"' in head or '"pattern"' in head else "misp"
    if name.lower().endswith(".csv"):
        return "csv"
    for line in head.splitlines():
        body = line.lstrip("#").strip().lower()
        if "," in body and any(c in body for c in CSV_VALUE):
            return "csv"
    return "plain"


def parse_feed(fmt: str, name: str, text: str) -> ParseResult:
    if fmt == "auto":
        fmt = detect_format(name, text)
    return PARSERS[fmt](text)


def stream_feed(fmt: str, name: str, text: str) -> tuple[Iterable[Indicator], ParseResult]:
    """The indicators of a list as an iterable (plain lists streamed), and the result whose
    malformed count is complete once the iterable is exhausted."""
    if fmt == "auto":
        fmt = detect_format(name, text)
    if fmt in ("plain", "netset"):
        out = ParseResult()
        return iter_plain(text, out), out
    result = PARSERS[fmt](text)
    return result.indicators, result


# ----------------------------------------------------------------------------- the index


@dataclass(slots=True, frozen=True)
class Match:
    """An indicator that matched: what, from where, how sure, since when."""

    kind: str  # ipv4-addr | ipv6-addr | domain-name | url | file
    value: str  # the indicator (a CIDR block for networks)
    feed: str
    confidence: int
    first_seen: float | None
    last_seen: float | None
    description: str | None


class IntelIndex:
    """Every loaded indicator, immutable once built (a reload builds a new one and swaps it).

    Per indicator: feed, confidence, first/last seen, expiry and a description, kept in
    parallel arrays (a million indicators in tens of MB, not an object each).
    """

    def __init__(self) -> None:
        self.feeds: list[str] = []
        self._feed_ids: dict[str, int] = {}
        self.m_feed = array("H")
        self.m_conf = array("B")
        self.m_first = array("d")
        self.m_last = array("d")
        self.m_expires = array("d")
        self.m_desc: list[str | None] = []
        self.m_value: list[str | None] = []  # None for hosts (the matched address is it)
        self.m_kind: list[str] = []
        self._v4_keys: list[int] = []
        self._v6_keys: list[int] = []
        # built by finish(): sorted starts, ends, parents and meta ids per family
        self.v4 = _Intervals(32)
        self.v6 = _Intervals(128)
        self.hosts: dict[str, int] = {}  # canonical address text -> meta id
        self.domains: dict[str, int] = {}
        self.urls: dict[str, int] = {}
        self.hashes: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.m_feed)

    def add(
        self,
        ind: Indicator,
        *,
        feed: str,
        confidence: int,
        seen: float,
        ttl: float | None,
    ) -> bool:
        """Add one indicator; ``False`` if its value is not one after all (a bad range)."""
        if ind.kind == "range":
            lo, _, hi = ind.value.partition("-")
            try:
                nets = list(
                    ipaddress.summarize_address_range(
                        ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
                    )
                )
            except (ValueError, TypeError):
                return False
            for net in nets[:4096]:
                sub = Indicator(
                    "ip", str(net), ind.confidence, ind.first_seen, ind.last_seen, ind.valid_until
                )
                sub.description = ind.description
                self.add(sub, feed=feed, confidence=confidence, seen=seen, ttl=ttl)
            return True
        fid = self._feed_ids.get(feed)
        if fid is None:
            fid = self._feed_ids[feed] = len(self.feeds)
            self.feeds.append(feed)
        idx = len(self.m_feed)
        conf = confidence if ind.confidence is None else ind.confidence
        last = ind.last_seen if ind.last_seen is not None else seen
        expires = FOREVER
        if ttl:
            expires = max(last, seen) + ttl
        if ind.valid_until is not None:
            expires = min(expires, ind.valid_until)
        if ind.kind == "ip":
            parsed = ind.net or ip_interval(ind.value)
            if parsed is None:
                return False
            start, plen, v6 = parsed
            kind = "ipv6-addr" if v6 else "ipv4-addr"
            value: str | None = ind.value
            keys = self._v6_keys if v6 else self._v4_keys
            if plen == (128 if v6 else 32):
                # A host: one dict probe on the event's own text answers it. Of two feeds
                # listing the same host the more confident takes the dict; the other goes
                # among the blocks, where a lookup still finds it if the first expires.
                host = _ntop(_AF6, start.to_bytes(16)) if v6 else _ntop(_AF4, start.to_bytes(4))
                value = None  # the host's text is the dict key: no second copy
                old = self.hosts.get(host)
                if old is None:
                    self.hosts[host] = idx
                    idx_for_blocks = -1
                elif self.m_conf[old] <= conf:
                    self.hosts[host] = idx
                    idx_for_blocks, conf_for_blocks = old, self.m_conf[old]
                else:
                    idx_for_blocks, conf_for_blocks = idx, conf
            else:
                idx_for_blocks, conf_for_blocks = idx, conf
            if idx_for_blocks >= 0:
                # Sort key: start, then the larger block first, then the least confident
                # first, so nested and duplicate blocks come parent-before-child and a lookup
                # meets the most specific, most confident one first.
                keys.append(
                    (((start << 8) | plen) << 40) | (conf_for_blocks << 32) | idx_for_blocks
                )
        elif ind.kind == "domain":
            self._keep_best(self.domains, ind.value, idx, conf)
            kind, value = "domain-name", ind.value
        elif ind.kind == "url":
            self._keep_best(self.urls, ind.value, idx, conf)
            kind, value = "url", ind.value
        elif ind.kind == "hash":
            self._keep_best(self.hashes, ind.value, idx, conf)
            kind, value = "file", ind.value
        else:
            return False
        self.m_feed.append(fid)
        self.m_conf.append(conf)
        self.m_first.append(ind.first_seen if ind.first_seen is not None else math.nan)
        self.m_last.append(last)
        self.m_expires.append(expires)
        self.m_desc.append(ind.description)
        self.m_value.append(value)
        self.m_kind.append(kind)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return True

    def _keep_best(self, table: dict[str, int], key: str, idx: int, conf: int) -> None:
        """Of two indicators with the same value the more confident wins (an equal one: the
        later, which is the fresher sighting)."""
        old = table.get(key)
        if old is None or self.m_conf[old] <= conf:
            table[key] = idx

    def finish(self) -> IntelIndex:
        self.v4.build(self._v4_keys)
        self.v6.build(self._v6_keys)
        self._v4_keys = []
        self._v6_keys = []
        return self

    # ------------------------------------------------------------------------- lookups

    def _live(self, idx: int, now: float) -> bool:
        return self.m_expires[idx] > now

    def match(self, idx: int, atomic: str = "") -> Match:
        """What indicator ``idx`` is; ``atomic`` is the value that matched it (a host's)."""
        first = self.m_first[idx]
        return Match(
            kind=self.m_kind[idx],
            value=self.m_value[idx] or atomic,
            feed=self.feeds[self.m_feed[idx]],
            confidence=self.m_conf[idx],
            first_seen=None if math.isnan(first) else first,
            last_seen=self.m_last[idx],
            description=self.m_desc[idx],
        )

    def lookup_ip(self, text: str, now: float) -> int:
        """The live indicator covering this address (the most specific); :data:`NONE` when
        no listed block covers it at all, :data:`EXPIRED` when only expired ones do."""
        expires = self.m_expires
        hosts = self.hosts
        idx = hosts.get(text)
        if idx is not None and expires[idx] > now:
            return idx
        try:
            family = _AF6 if ":" in text else _AF4
            packed = _pton(family, text)
        except (OSError, ValueError, TypeError):
            return NONE
        v6 = family == _AF6
        value = int.from_bytes(packed, "big")
        if idx is None and hosts:  # the event's text may be another spelling of a host
            canon = _ntop(family, packed)
            if canon != text:
                idx = hosts.get(canon)
                if idx is not None and expires[idx] > now:
                    return idx
        found = (self.v6 if v6 else self.v4).find(value, expires, now)
        return EXPIRED if found == NONE and idx is not None else found

    def lookup_domain(self, name: str, now: float) -> int:
        """The live indicator for this name or the nearest parent domain listed, or -1."""
        table = self.domains
        if not table:
            return -1
        name = name.lower().rstrip(".")
        while True:
            idx = table.get(name)
            if idx is not None and self.m_expires[idx] > now:
                return idx
            dot = name.find(".")
            if dot < 0:
                return -1
            name = name[dot + 1 :]

    def absent(self, text: str) -> bool:
        """Whether no indicator of any kind, live or expired, can match ``text`` in any field:
        no address or block covers it, it is no listed domain nor under one, no URL, no hash.
        Such a value misses for as long as this index is in use, so the stage may remember it
        (whichever field it turns up in) instead of looking it up again."""
        return self.lookup_ip(text, -math.inf) == NONE and self.unlisted_name(text)

    def unlisted_name(self, text: str) -> bool:
        """:meth:`absent` but for addresses: ``text`` is no domain (nor under one), URL or
        hash ever listed here (for a value whose address lookup already said :data:`NONE`)."""
        if text in self.urls or text.lower() in self.hashes:
            return False
        table = self.domains
        name = text.lower().rstrip(".")
        while table:
            if name in table:
                return False
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        return True

    def lookup_url(self, url: str, now: float) -> int:
        idx = self.urls.get(url)
        return idx if idx is not None and self.m_expires[idx] > now else -1

    def lookup_hash(self, value: str, now: float) -> int:
        idx = self.hashes.get(value.lower())
        return idx if idx is not None and self.m_expires[idx] > now else -1

    def summary(self) -> dict[str, Any]:
        per_feed: dict[str, int] = {}
        for fid in self.m_feed:
            name = self.feeds[fid]
            per_feed[name] = per_feed.get(name, 0) + 1
        return {"indicators": len(self), "by_type": dict(self.counts), "by_feed": per_feed}


class _Intervals:
    """Sorted, laminar integer intervals (CIDR blocks) with parent pointers; see the module
    docstring for the lookup.

    IPv4 adds a table by the address's top 16 bits: where the intervals starting in that /16
    begin, so the bisect runs over the few of one /16 (a million indicators: ~15), not over
    all of them (~20 probes of a boxed array, measured 4x slower)."""

    __slots__ = ("bits", "buckets", "ends", "ids", "parents", "starts")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.starts: list[int] | array[int] = []
        self.ends: list[int] | array[int] = []
        self.parents = array("l")
        self.ids = array("L")
        self.buckets: array[int] | None = None

    def build(self, keys: list[int]) -> None:
        keys.sort()
        bits = self.bits
        # IPv4 fits machine words: arrays are a quarter of the memory of int lists.
        starts: list[int] | array[int] = array("Q") if bits == 32 else []
        ends: list[int] | array[int] = array("Q") if bits == 32 else []
        parents = self.parents
        ids = self.ids
        stack: list[int] = []
        mask32 = (1 << 32) - 1
        for k, key in enumerate(keys):
            idx = key & mask32
            head = key >> 40
            plen = head & 0xFF
            start = head >> 8
            end = start + (1 << (bits - plen)) - 1
            while stack and ends[stack[-1]] < start:
                stack.pop()
            parents.append(stack[-1] if stack else -1)
            stack.append(k)
            starts.append(start)
            ends.append(end)
            ids.append(idx)
        self.starts, self.ends = starts, ends
        if bits == 32:
            # Bucket t holds the first interval starting in /16 t or later. Filled by runs:
            # one slice per /16 that has a start, the rest already past the end (an appliance
            # without indicators builds this at every start: 65,537 stores one by one were
            # ~10 ms of it).
            buckets = array("L", [len(starts)]) * 65537
            b = 0
            for k, start in enumerate(starts):
                top = start >> 16
                if b <= top:
                    buckets[b : top + 1] = array("L", [k]) * (top + 1 - b)
                    b = top + 1
            self.buckets = buckets

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, value: int, expires: array[float], now: float) -> int:
        buckets = self.buckets
        if buckets is not None:
            top = value >> 16
            i = bisect_right(self.starts, value, buckets[top], buckets[top + 1]) - 1
        else:
            i = bisect_right(self.starts, value) - 1
        ends, parents, ids = self.ends, self.parents, self.ids
        found = NONE
        while i >= 0:
            if ends[i] >= value:
                idx = ids[i]
                if expires[idx] > now:
                    return idx
                found = EXPIRED
            i = parents[i]
        return found


# ----------------------------------------------------------------------------- sources


@dataclass(slots=True)
class SourceText:
    """One feed's or file's text, as read from disk, with what aging needs to know."""

    name: str  # the feed name (a file's stem for intel_files)
    fmt: str
    text: str
    confidence: int
    seen: float  # when the list last listed its entries: the file's modification time
    ttl: float | None


@dataclass(slots=True)
class LoadReport:
    loaded: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    refused: int = 0  # beyond intel_max_indicators


def build_index(
    sources: Iterable[SourceText], max_indicators: int
) -> tuple[IntelIndex, LoadReport]:
    """Parse every source into one new index (pure; the caller reads the files)."""
    index = IntelIndex()
    report = LoadReport()
    total = 0
    for src in sources:
        items, result = stream_feed(src.fmt, src.name, src.text)
        added = 0
        bad = 0
        add = index.add
        for ind in items:
            if total >= max_indicators:
                report.refused += 1
                continue
            if add(ind, feed=src.name, confidence=src.confidence, seen=src.seen, ttl=src.ttl):
                added += 1
                total = len(index.m_feed)
            else:
                bad += 1
                if len(result.samples) < 5:
                    result.samples.append(ind.value[:120])
        bad += result.malformed
        report.loaded[src.name] = report.loaded.get(src.name, 0) + added
        report.malformed[src.name] = report.malformed.get(src.name, 0) + bad
        if result.samples:
            report.samples[src.name] = result.samples
    return index.finish(), report
