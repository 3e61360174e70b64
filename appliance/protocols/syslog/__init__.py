"""Sans-I/O syslog: bytes (plus sender and clock) to :class:`SyslogMessage`; no sockets here."""

from appliance.protocols.syslog.decode import decode_syslog
from appliance.protocols.syslog.message import (
    FACILITY_NAMES,
    SEVERITY_NAMES,
    SyslogMessage,
)
from appliance.protocols.syslog.rfc3164 import decode_rfc3164
from appliance.protocols.syslog.rfc5424 import decode_rfc5424

__all__ = [
    "FACILITY_NAMES",
    "SEVERITY_NAMES",
    "SyslogMessage",
    "decode_rfc3164",
    "decode_rfc5424",
    "decode_syslog",
]
