"""Sigma taxonomy to this appliance's ECS fields, and Sigma log sources to what we collect.

Sigma rules name fields in the vocabulary of their log source (``src_ip``, ``DestinationPort``,
``User``); our events carry ECS dotted names. This table is the processing pipeline between the
two: a field with a dot is taken as ECS already, a known taxonomy name is renamed, anything else
makes the rule fail to load with the field named (matching it against nothing would silently
never fire).

Log sources become an index key (so an event meets only the rules for its kind of source) and
a predicate (the rest of the log source's constraints). A log source we do not collect (Zeek,
Windows, proxies, DNS servers) fails the rule with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SIGMA_TO_ECS: dict[str, str] = {
    # network / firewall taxonomy (SigmaHQ `category: firewall`, Zeek-style names)
    "src_ip": "source.ip",
    "srcip": "source.ip",
    "SourceIp": "source.ip",
    "src": "source.ip",
    "dst_ip": "destination.ip",
    "dstip": "destination.ip",
    "DestinationIp": "destination.ip",
    "dst": "destination.ip",
    "src_port": "source.port",
    "srcport": "source.port",
    "SourcePort": "source.port",
    "dst_port": "destination.port",
    "dstport": "destination.port",
    "DestinationPort": "destination.port",
    "action": "event.action",
    "Action": "event.action",
    "protocol": "network.transport",
    "proto": "network.transport",
    "Protocol": "network.transport",
    "bytes": "network.bytes",
    "packets": "network.packets",
    # authentication
    "User": "user.name",
    "user": "user.name",
    "username": "user.name",
    "TargetUserName": "user.name",
    "outcome": "event.outcome",
    # host / process / message
    "Hostname": "host.hostname",
    "hostname": "host.hostname",
    "Computer": "host.hostname",
    "Image": "process.name",
    "process": "process.name",
    "pid": "process.pid",
    "Message": "message",
    "msg": "message",
    # device logs
    "vendor": "observer.vendor",
    "product": "observer.product",
    "interface": "observer.ingress.interface.name",
    "severity": "event.severity",
    "signature": "rule.name",
    "signature_id": "rule.id",
    # antivirus taxonomy (SigmaHQ `category: antivirus`): the detection name and the file
    "Signature": "rule.name",
    "Filename": "file.path",
    "trap": "event.action",
    # FortiGate event logs (names as Elastic's Fortinet integration stores them)
    "cfgpath": "fortinet.firewall.cfgpath",
    "cfgattr": "fortinet.firewall.cfgattr",
    "cfgobj": "fortinet.firewall.cfgobj",
    "logdesc": "fortinet.firewall.logdesc",
}

# Sigma taxonomy fields whose values also need translating to what our decoders write:
# (ECS field, {Sigma value (lower-case): our value}). Values not listed pass unchanged.
VALUE_MAPS: dict[str, tuple[str, dict[str, str]]] = {
    # Firewall taxonomy `action`: accept/forward/permit/pass mean our "allow", block our "deny".
    "action": (
        "event.action",
        {
            "accept": "allow",
            "forward": "allow",
            "permit": "allow",
            "pass": "allow",
            "block": "deny",
            "blocked": "deny",
        },
    ),
    # `blocked: true|false` (firewalls that mark the verdict rather than name an action).
    "blocked": ("event.outcome", {"false": "success", "true": "failure"}),
}

# ECS-looking names that are single words; accepted as is.
PLAIN_ECS = {"message", "tags", "labels"}


class Unsupported(Exception):
    """A rule uses something this engine does not evaluate; the message is the reason."""


def translate_values(node: Any) -> None:
    """Rewrite ``field: value`` leaves of a parsed Sigma condition whose taxonomy field has a
    value vocabulary of its own (:data:`VALUE_MAPS`) to our field and value, in place."""
    from sigma.conditions import ConditionFieldEqualsValueExpression
    from sigma.types import SigmaBool, SigmaCasedString, SigmaString

    if isinstance(node, ConditionFieldEqualsValueExpression):
        vm = VALUE_MAPS.get(node.field)
        if vm is None:
            return
        ecs, table = vm
        v = node.value
        if isinstance(v, SigmaBool):
            text: str | None = "true" if v.boolean else "false"
        elif (
            isinstance(v, SigmaString)
            and not isinstance(v, SigmaCasedString)
            and not v.contains_special()
        ):
            text = v.to_plain()
        else:
            text = None
        if text is None:
            return
        node.field = ecs
        node.value = SigmaString(table.get(text.lower(), text))
        return
    for arg in getattr(node, "args", ()):
        translate_values(arg)


def map_field(name: str) -> str:
    if name in SIGMA_TO_ECS:
        return SIGMA_TO_ECS[name]
    if "." in name or name in PLAIN_ECS:
        return name
    raise Unsupported(f"field {name!r} has no mapping to an ECS field")


# ------------------------------------------------------------------------------- log sources

Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """Where a log source's events come from: the index key plus the remaining checks."""

    key: str  # one of the keys event_index_keys() yields for a matching event
    checks: tuple[tuple[str, frozenset[str]], ...] = ()  # (field, allowed lowercase values)
    description: str = ""


# Vendors of network devices whose syslog we collect; `product: <vendor>` selects them.
VENDORS = {
    "cisco": "cisco",
    "fortinet": "fortinet",
    "fortigate": "fortinet",
    "juniper": "juniper",
    "huawei": "huawei",
    "paloalto": "palo alto networks",
    "pfsense": "netgate",  # what the pfSense filterlog decoder writes as observer.vendor
    "netgate": "netgate",
    "mikrotik": "mikrotik",
    "checkpoint": "check point",
    "sonicwall": "sonicwall",
}

# Linux services by the process names they log under. OpenSSH 9.8 and later log the
# authentication lines from ``sshd-session``; Dropbear is the SSH daemon of small devices (the
# linux_auth decoder reads its logins as ``ssh_login`` too).
LINUX_SERVICES = {
    "sshd": ("sshd", "sshd-session", "dropbear"),
    "sudo": ("sudo",),
    "su": ("su",),
    "cron": ("cron", "crond", "crontab"),
    "vsftpd": ("vsftpd",),
    "clamav": ("clamd", "freshclam", "clamav"),
    "guacamole": ("guacd", "guacamole"),
    "syslog": (),
}

SYSLOG_ONLY = (("event.module", frozenset({"syslog"})),)
CATEGORIES: dict[str, tuple[str, tuple[tuple[str, frozenset[str]], ...]]] = {
    # category -> (index key, extra checks)
    "authentication": ("category:authentication", ()),
    "firewall": ("category:network", SYSLOG_ONLY),  # device logs, not flow records
    "network_connection": ("category:network", ()),
    "flow": ("module:netflow", ()),
    "ids": ("category:intrusion_detection", ()),
    "antivirus": ("category:malware", ()),  # the antivirus decoders' malware contract
    "intrusion_detection": ("category:intrusion_detection", ()),
    "configuration": ("category:configuration", ()),
    "network_device": ("module:syslog", ()),
    "snmp_trap": ("module:snmp", ()),
    "heartbeat": ("any", ()),
}

UNCOLLECTED_PRODUCTS = {"windows", "zeek", "macos", "aws", "azure", "gcp", "m365", "okta"}
UNCOLLECTED_CATEGORIES = {
    "dns",
    "proxy",
    "webserver",
    "process_creation",
    "file_event",
    "registry_event",
    "image_load",
    "database",
}


def map_logsource(product: str | None, category: str | None, service: str | None) -> SourceMatch:
    """The index key and checks for a Sigma ``logsource``; :class:`Unsupported` if not ours."""
    product = (product or "").lower() or None
    category = (category or "").lower() or None
    service = (service or "").lower() or None
    checks: list[tuple[str, frozenset[str]]] = []
    key = "any"
    if product in UNCOLLECTED_PRODUCTS:
        raise Unsupported(f"logsource product {product!r} is not collected by this appliance")
    if category in UNCOLLECTED_CATEGORIES:
        raise Unsupported(f"logsource category {category!r} is not collected by this appliance")
    if product == "linux":
        key = "module:syslog"
        if service == "auditd":
            raise Unsupported("logsource linux/auditd: auditd records are not decoded into fields")
        if service is not None:
            names = LINUX_SERVICES.get(service)
            if names is None and service != "auth":
                raise Unsupported(f"logsource linux service {service!r} is not mapped")
            if service == "auth":
                key = "category:authentication"
            elif names:
                # An event is indexed under its own process name: a service with several
                # names is looked up among all syslog events, then checked by name.
                key = f"process:{names[0]}" if len(names) == 1 else "module:syslog"
                checks.append(("process.name", frozenset(names)))
    elif product in VENDORS:
        key = f"vendor:{VENDORS[product]}"
    elif product in (None, "appliance"):
        if service in ("syslog", "snmp", "netflow"):
            key = f"module:{service}"
        elif service is not None:
            key = f"process:{service}"
            checks.append(("process.name", frozenset({service})))
    elif product is not None:
        raise Unsupported(f"logsource product {product!r} is not mapped")
    if category is not None:
        mapped = CATEGORIES.get(category)
        if mapped is None:
            raise Unsupported(f"logsource category {category!r} is not mapped")
        cat_key, extra = mapped
        checks.extend(extra)
        if key == "any":
            key = cat_key
        elif cat_key.startswith("category:"):
            checks.append(("event.category", frozenset({cat_key.split(":", 1)[1]})))
        elif cat_key.startswith("module:"):
            checks.append(("event.module", frozenset({cat_key.split(":", 1)[1]})))
    desc = "/".join(x for x in (product, category, service) if x)
    return SourceMatch(key, tuple(checks), desc)


def event_index_keys(module: str, fields: dict[str, Any]) -> list[str]:
    """Every index key an event can be met under (see :class:`SourceMatch`)."""
    keys = ["any", "module:" + module]
    proc = fields.get("process.name")
    if proc is not None:
        keys.append("process:" + str(proc).lower())
    vendor = fields.get("observer.vendor")
    if vendor is not None:
        keys.append("vendor:" + str(vendor).lower())
    cats = fields.get("event.category")
    if cats is not None:
        if isinstance(cats, list):
            keys.extend("category:" + str(c) for c in cats)
        else:
            keys.append("category:" + str(cats))
    return keys
