"""The store's errors: its own exception, and which failed writes are the disk's doing.

Apart from the connection owner so every store module (and the pipeline, which counts its
failed inserts) can use them without importing it.
"""

from __future__ import annotations

import errno
import sqlite3


class StoreError(Exception):
    """The database could not be opened or written."""


# SQLite primary result codes (https://www.sqlite.org/rescode.html) by what they mean here.
_ERROR_REASONS = {
    13: "disk_full",  # SQLITE_FULL
    10: "io_error",  # SQLITE_IOERR
    8: "readonly",  # SQLITE_READONLY
    11: "corrupt",  # SQLITE_CORRUPT
    26: "corrupt",  # SQLITE_NOTADB
    5: "busy",  # SQLITE_BUSY
    6: "busy",  # SQLITE_LOCKED
    14: "cantopen",  # SQLITE_CANTOPEN
}


def write_error_reason(exc: BaseException) -> str | None:
    """The storage reason behind a failed write, or ``None`` when the SQL was at fault
    (a constraint, a bug): only the former is the disk's doing and belongs in the metrics."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _ERROR_REASONS.get(code & 0xFF)
        return "disk_full" if "full" in str(exc) else None
    if isinstance(exc, OSError):
        return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
    return None
