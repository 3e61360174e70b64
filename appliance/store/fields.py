"""Which event fields the search API accepts as filters, and why a name is refused.

A filter on a field that no event has matches nothing: a typo (``user_name=`` for
``user.name=``) would look like "no such events". So the API answers 400 for a field that is
neither

* emitted by a built-in decoder (:data:`KNOWN_FIELDS`: the syslog vendors, CEF/LEEF, SNMP and
  NetFlow; ``tests/test_search_fields.py`` decodes the shared corpus and fails when a decoder
  emits a field missing here),
* under a namespace whose keys come from the message itself (:data:`OPEN_PREFIXES`: CEF and
  LEEF extensions, key=value pairs, labels, structured data), nor
* seen in stored events (:class:`FieldRegistry` learns the names of every event a search
  reads, and a user's declarative vendor decoder emits whatever its file says: the first
  search that reads one of its events makes its fields known; a bounded probe of the newest
  segments answers for a name not learned yet).
"""

from __future__ import annotations

from collections.abc import Iterable

# Fields the built-in decoders emit (syslog vendors, CEF/LEEF, SNMP, NetFlow) and the
# columns every event has. Sorted; keep it so.
KNOWN_FIELDS: frozenset[str] = frozenset(
    (
        "aruba.cx.module",
        "aruba.cx.slot",
        "barracuda.traffic_type",
        "cisco.asa.message_id",
        "cisco.ftd.gid",
        "cisco.ios.facility",
        "clamav.database",
        "clamav.database_age_days",
        "clamav.database_version",
        "clamav.quarantine_path",
        "clamav.signatures",
        "clamav.target",
        "destination.bytes",
        "destination.domain",
        "destination.ip",
        "destination.mac",
        "destination.nat.ip",
        "destination.packets",
        "destination.port",
        "destination.user.name",
        "dns.question.name",
        "dns.question.type",
        "error.code",
        "error.message",
        "eset.action",
        "eset.action_taken",
        "eset.circumstances",
        "eset.detail",
        "eset.engine_version",
        "eset.event_type",
        "eset.group_name",
        "eset.object_uri",
        "eset.result",
        "eset.scanner_id",
        "eset.severity",
        "eset.source_uuid",
        "event.action",
        "event.category",
        "event.code",
        "event.count",
        "event.dataset",
        "event.duration",
        "event.end",
        "event.kind",
        "event.module",
        "event.outcome",
        "event.reason",
        "event.sequence",
        "event.severity",
        "event.start",
        "event.timezone",
        "event.type",
        "event.user",
        "file.hash.md5",
        "file.hash.sha1",
        "file.hash.sha256",
        "file.name",
        "file.path",
        "file.size",
        "fortinet.firewall.action",
        "fortinet.firewall.subtype",
        "fortinet.firewall.type",
        "host.hostname",
        "host.ip",
        "host.name",
        "http.request.method",
        "http.response.status_code",
        "juniper.netscreen.level",
        "juniper.netscreen.module",
        "juniper.netscreen.occurrences",
        "juniper.netscreen.type",
        "juniper.netscreen.vsys",
        "junos.if_admin_status",
        "kaspersky.component",
        "log.level",
        "log.source.transport",
        "log.syslog.appname",
        "log.syslog.facility.code",
        "log.syslog.facility.name",
        "log.syslog.format",
        "log.syslog.hostname",
        "log.syslog.msgid",
        "log.syslog.priority",
        "log.syslog.procid",
        "log.syslog.severity.code",
        "log.syslog.severity.name",
        "log.syslog.structured_data",
        "log.syslog.version",
        "message",
        "netfilter.mac",
        "netflow.exporter.address",
        "netflow.exporter.observation_domain_id",
        "netflow.exporter.port",
        "netflow.exporter.source_id",
        "netflow.exporter.version",
        "netflow.sampling_rate",
        "network.application",
        "network.bytes",
        "network.direction",
        "network.iana_number",
        "network.packets",
        "network.protocol",
        "network.session_id",
        "network.transport",
        "network.type",
        "observer.egress.interface.name",
        "observer.egress.zone",
        "observer.geo.name",
        "observer.hostname",
        "observer.ingress.interface.id",
        "observer.ingress.interface.name",
        "observer.ingress.zone",
        "observer.ip",
        "observer.name",
        "observer.product",
        "observer.serial_number",
        "observer.type",
        "observer.vendor",
        "observer.version",
        "panw.panos.module",
        "panw.panos.object",
        "panw.panos.sub_type",
        "panw.panos.type",
        "process.command_line",
        "process.executable",
        "process.name",
        "process.pid",
        "process.working_directory",
        "rule.category",
        "rule.id",
        "rule.name",
        "rule.ruleset",
        "rule.version",
        "snmp.community_index",
        "snmp.context_engine_id",
        "snmp.interface.admin_status",
        "snmp.interface.oper_status",
        "snmp.pdu",
        "snmp.security_level",
        "snmp.security_name",
        "snmp.trap",
        "snmp.trap_oid",
        "snmp.uptime",
        "snmp.v1.agent_addr",
        "snmp.v1.enterprise",
        "snmp.v1.generic_trap",
        "snmp.v1.specific_trap",
        "snmp.varbinds",
        "snmp.version",
        "snort.gid",
        "source.bytes",
        "source.domain",
        "source.ip",
        "source.mac",
        "source.nat.ip",
        "source.packets",
        "source.port",
        "source.user.name",
        "suricata.eve.event_type",
        "suricata.eve.flow_id",
        "symantec_endpoint.actual_action",
        "symantec_endpoint.ip_address",
        "symantec_endpoint.requested_action",
        "symantec_endpoint.risk_event",
        "symantec_endpoint.scan_source",
        "tags",
        "tls.client.server_name",
        "tls.version",
        "trendmicro.malware_target",
        "trendmicro.malware_target_type",
        "trendmicro.scan_type",
        "url.domain",
        "url.original",
        "user.domain",
        "user.effective.name",
        "user.name",
        "user.roles",
        "user.target.name",
        "user_agent.original",
        "windows_defender.action",
        "windows_defender.detection_source",
        "windows_defender.engine_version",
        "windows_defender.severity",
        "windows_defender.signature_version",
        "winlog.channel",
        "winlog.event_id",
        "winlog.logon.type",
        "winlog.provider_name",
        "winlog.record_id",
        "winlog.task",
        "zyxel.category",
        "zyxel.note",
    )
)
# Namespaces whose keys are taken from the message (any key may appear).
OPEN_PREFIXES: tuple[str, ...] = (
    "cef.extensions.",
    "leef.",
    "kv.",
    "labels.",
    "log.syslog.structured_data.",
    "snmp.varbinds.",
)
# Names learned from stored events, at most this many (a hostile sender could make up keys).
MAX_LEARNED = 10_000


class FieldRegistry:
    """Known field names: built-in, open namespaces, and learned from stored events."""

    def __init__(self, max_learned: int = MAX_LEARNED) -> None:
        self.learned: set[str] = set()
        self.max_learned = max_learned

    def known(self, name: str) -> bool:
        return name in KNOWN_FIELDS or name.startswith(OPEN_PREFIXES) or name in self.learned

    def learn(self, names: Iterable[str]) -> None:
        room = self.max_learned - len(self.learned)
        if room <= 0:
            return
        for name in names:
            if name not in KNOWN_FIELDS and name not in self.learned:
                if room <= 0:
                    return
                self.learned.add(name)
                room -= 1
