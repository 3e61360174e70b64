"""The event writer child process: batches of rows in on stdin, one transaction each, acks out.

Why a process: on a 2-core box the event loop thread spends its core receiving and decoding,
and an SQLite writer *thread* in the same interpreter fights it for the GIL (every row's bind
needs the GIL, every step releases it: a convoy that measured worse than writing inline). A
child process inserts on the other core with its own GIL. It is the only writer of the
``events`` table; everything else (incidents, outbox, state) is written by the parent through
aiosqlite, and SQLite's own locking (WAL, busy_timeout) serialises the two.

Frames (little-endian): request ``u64 batch, u32 length, payload`` where payload is a marshal
(or pickle) of
``(max_raw, [(id, ts, created, module, fields, raw), ...])`` from the parent; the child turns
each into its row (JSON encoding included, so that work is off the event loop's core; the
pipe is private between two processes of ours);
reply ``u64 batch, u32 rows, u8 status, u16 length, error text``. Rows carry explicit ids and
are written with ``INSERT OR REPLACE``, so a batch replayed after a crash is idempotent.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time

from appliance.store.frames import INSERT, REPLY, REQUEST, encode_row, unpack_batch


def _read_exactly(stream, n: int) -> bytes:  # type: ignore[no-untyped-def]
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def serve(db_path: str) -> int:
    # The parent decides when we stop (it closes our stdin after its last batch); a Ctrl-C or
    # SIGTERM sent to the whole process group must not cut a transaction short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            batch, length = REQUEST.unpack(_read_exactly(stdin, REQUEST.size))
            payload = _read_exactly(stdin, length)
        except EOFError:
            break
        max_raw, parts = unpack_batch(payload)
        rows = [encode_row(*p, max_raw) for p in parts]
        status, error = 0, b""
        for attempt in range(20):
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, rows)
                conn.execute("COMMIT")
                status, error = 0, b""
                break
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                status, error = 1, str(exc).encode()[:1000]
                if "locked" not in str(exc) and "busy" not in str(exc):
                    break  # disk full, corrupt: report now, the parent decides
                time.sleep(min(1.0, 0.05 * 2**attempt))
        stdout.write(REPLY.pack(batch, len(rows), status, len(error)) + error)
        stdout.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve(sys.argv[1]))
