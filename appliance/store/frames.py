"""Wire format between the store and its event writer process (see writer_process.py)."""

from __future__ import annotations

import struct

REQUEST = struct.Struct("<QI")
REPLY = struct.Struct("<QIBH")
INSERT = (
    "INSERT OR REPLACE INTO events (id, ts, created, module, observer_ip, source_ip, hostname,"
    " message, fields, raw) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
