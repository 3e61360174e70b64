#!/usr/bin/env python3
"""Console pages and the JSON they poll, timed on a large database.

Usage: scripts/bench console [--events 10000000] [--incidents 10000] [--repeat 20]
       [--data-dir DIR] [--no-index]

Fills a database with ``--events`` syslog events (50 devices, 5000 source addresses, spread
over the last 6 days, inserted through the store as the pipeline does; one event in two
million is from a rare source, 203.0.113.77, user ``mallory``) and ``--incidents`` incidents,
unless ``--data-dir`` already holds one (``--no-index``: stored without the search index, as
before migration 0014); starts the appliance on it as its own process, logs in as an admin
through ``POST /login``, and requests each page shell and each JSON endpoint the pages call
``--repeat`` times in turn with the session cookie. Prints ONE JSON line: per URL the median,
p95 and max milliseconds (and for searches the events returned and whether the answer was
complete), the database's size and the search index's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import ApplianceProcess

from appliance.console import users
from appliance.event import Event, iso8601
from appliance.store import Store

PASSWORD = "bench console password"


RARE_EVERY = 2_000_000


async def fill(db_path: Path, n_events: int, n_incidents: int, index: bool = True) -> None:
    store = Store(db_path, quick_check=False, search_index=index)
    await store.open()
    now = time.time()
    span = 6 * 86400.0
    rnd = random.Random(7)
    batch = 5000
    t0 = time.monotonic()
    for first in range(0, n_events, batch):
        events = []
        for i in range(first, min(n_events, first + batch)):
            ts = now - span + span * i / n_events
            dev = i % 50
            src = f"198.51.{(i // 7) % 20}.{i % 250}"
            user = f"user{rnd.randrange(200)}"
            if i % RARE_EVERY == RARE_EVERY // 2:
                src, user = "203.0.113.77", "mallory"
            fields = {
                "observer.ip": f"10.0.0.{dev + 1}",
                "host.hostname": f"dev{dev:02d}",
                "event.module": "syslog",
                "event.dataset": "linux_auth",
                "source.ip": src,
                "user.name": user,
                "message": f"Failed password for {user} from {src} port {40000 + i % 20000} ssh2",
            }
            raw = f"<38>Dec 10 06:55:46 dev{dev:02d} sshd[{i % 30000}]: {fields['message']}"
            events.append(Event(ts, ts, "syslog", fields, raw=raw.encode()))
        await store.insert_events(events)
        if first % 500_000 == 0:
            rate = (first + batch) / max(1e-9, time.monotonic() - t0)
            print(f"filled {first + batch} events ({rate:.0f}/s)", file=sys.stderr)
    severities = ("informational", "low", "medium", "high", "critical")
    async with store.transaction() as conn:
        for i in range(n_incidents):
            ts = now - span + span * i / max(1, n_incidents)
            sev = severities[i % 5]
            iid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            key = f"source.ip=198.51.{i % 20}.{i % 250}"
            doc = {
                "schema_version": 1,
                "id": iid,
                "revision": 1,
                "sensor_id": "bench",
                "title": "SSH brute force from one source",
                "rule": {"id": "bench-rule", "title": "SSH brute force", "level": sev, "tags": []},
                "severity": sev,
                "status": "open" if i % 3 else "resolved",
                "group_key": key,
                "first_seen": iso8601(ts),
                "last_seen": iso8601(ts + 60),
                "hit_count": 1,
                "suppressed_count": 0,
                "evidence": {"event_ids": [], "samples": ["Failed password ..."]},
                "created": iso8601(ts),
                "updated": iso8601(ts),
            }
            await conn.execute(
                "INSERT INTO incidents (id, rule_id, group_key, status, severity, first_seen,"
                " last_seen, updated, revision, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (iid, "bench-rule", key, doc["status"], sev, ts, ts + 60, ts, json.dumps(doc)),
            )
    await store.close()


def login(base: str) -> str:
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(urllib.request.Request(base + "/login", data=body), timeout=30)
    except urllib.error.HTTPError as exc:
        cookie = exc.headers.get("Set-Cookie", "")
        if exc.code == 303 and cookie.startswith("sem_session="):
            return cookie.split(";", 1)[0]
        raise
    raise SystemExit("login did not answer 303")


def timed(
    base: str, cookie: str, path: str, repeat: int, app: ApplianceProcess | None = None
) -> dict[str, Any]:
    times = []
    body = b""
    cpu0 = app.cpu_seconds() if app is not None else 0.0
    for _ in range(repeat):
        req = urllib.request.Request(base + path, headers={"Cookie": cookie})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
            assert r.status == 200, (path, r.status)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    out: dict[str, Any] = {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
    }
    if app is not None:
        # The appliance's CPU per request: what the latency is on an idle box, where the
        # shared VM's wall clock also counts waiting for a core.
        out["server_cpu_ms"] = round((app.cpu_seconds() - cpu0) * 1000 / repeat, 1)
    if path.startswith("/api/v1/events?"):
        doc = json.loads(body)
        out.update(count=doc["count"], complete=doc["complete"], scanned=doc["scanned"])
    return out


def index_share(db: Path) -> dict[str, Any]:
    """Segments, how many have a search index, and the index's bytes against the events' as
    stored (packed since 2026-12-07: the share is ~0.2-0.3 of them, against ~0.01 of the
    plain lines before)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        segs, body = conn.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM event_segments"
        ).fetchone()
        try:
            indexed, bloom, largest = conn.execute(
                "SELECT count(*), coalesce(sum(length(bloom)), 0), coalesce(max(length(bloom)), 0)"
                " FROM event_index"
            ).fetchone()
        except sqlite3.OperationalError:  # a database from before migration 0014
            indexed = bloom = largest = 0
    finally:
        conn.close()
    return {
        "segments": segs,
        "indexed_segments": indexed,
        "events_bytes": body,
        "index_bytes": bloom,
        "index_share": round(bloom / body, 4) if body else 0.0,
        "largest_filter_bytes": largest,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--incidents", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--no-index", action="store_true", help="fill without the search index")
    args = ap.parse_args()
    data_dir = args.data_dir
    if data_dir is None:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="bench-console-")) / "data"
    db = data_dir / "appliance.db"
    t0 = time.monotonic()
    if not db.exists():
        asyncio.run(fill(db, args.events, args.incidents, index=not args.no_index))
        conn = users.connect(db)
        users.add_user(conn, "bench", "admin", PASSWORD, "bench")
        conn.close()
    fill_s = time.monotonic() - t0
    app = ApplianceProcess(
        '[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:0"\n',
        "[storage]\nretention_days = 30.0\nmax_db_bytes = 100000000000\n",
        data_dir=data_dir,
    )
    try:
        base = f"http://127.0.0.1:{app.api_port}"
        cookie = login(base)
        with urllib.request.urlopen(
            urllib.request.Request(
                base + "/api/v1/incidents?limit=1&status=open", headers={"Cookie": cookie}
            ),
            timeout=60,
        ) as r:
            one = json.loads(r.read())["incidents"][0]["id"]
        paths = [
            "/",
            "/incidents",
            f"/incidents/{one}",
            "/search",
            "/flows",
            "/sources",
            "/rules",
            "/audit",
            "/api/v1/console/overview",
            "/api/v1/events?limit=500",
            "/api/v1/events?limit=1000",
            "/api/v1/incidents?limit=500",
            f"/api/v1/incidents/{one}",
            "/api/v1/rules",
            "/api/v1/audit?limit=200",
            "/api/v1/flows/top?by=source.ip&limit=10",
            "/api/v1/events?limit=500&source.ip=198.51.3.77",
            "/api/v1/events?limit=500&q=user7%20",
            # Rare (one event in two million) and absent values, and rare free text.
            "/api/v1/events?limit=500&source.ip=203.0.113.77",
            "/api/v1/events?limit=500&user.name=mallory",
            "/api/v1/events?limit=500&q=mallory",
            "/api/v1/events?limit=500&source.ip=192.0.2.99",
            "/api/v1/events?limit=500&q=no%20such%20text",
        ]
        results = {p: timed(base, cookie, p, args.repeat, app) for p in paths}
    finally:
        app.stop()
    print(
        json.dumps(
            {
                "bench": "console",
                "events": args.events,
                "incidents": args.incidents,
                "db_bytes": db.stat().st_size,
                **index_share(db),
                "fill_seconds": round(fill_s, 1),
                "repeat": args.repeat,
                "urls": results,
            }
        )
    )


if __name__ == "__main__":
    main()
