"""One report from the database to bytes, and writing it so no reader sees half a file."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from appliance.reports.data import connect_ro, gather
from appliance.reports.render import to_csv, to_html, to_pdf

FORMATS = ("html", "pdf", "csv")


def build_report(
    db_path: Path, *, span: float, fmt: str, sensor_id: str, now: float | None = None
) -> bytes:
    """The report over the last ``span`` seconds, as bytes of the given format."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    until = time.time() if now is None else now
    conn = connect_ro(db_path)
    try:
        data = gather(conn, since=until - span, until=until, sensor_id=sensor_id)
    finally:
        conn.close()
    if fmt == "pdf":
        return to_pdf(data)
    return (to_html(data) if fmt == "html" else to_csv(data)).encode("utf-8")


def write_atomically(path: Path, body: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
