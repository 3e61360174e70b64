"""The console's routes: login/logout, the page shells, static assets, and the JSON the pages
need beyond the public API (``/api/v1/console/overview``, ``/api/v1/audit``).

Pages are server-rendered shells; their data comes from the JSON API through the session
cookie (``appliance.api.server`` accepts a console session where it accepts a token, viewer ->
read, operator -> write, admin -> admin, with the CSRF header for writes). Nothing runs for the
console unless a page is open and asks: no background task, no work at ingest.

Every page is sent with a Content-Security-Policy that allows only this origin's scripts and
styles (no inline script), ``frame-ancestors 'none'`` and ``no-store``; the scripts put data
into the page with ``textContent``/SVG attributes only, never as HTML.
"""

from __future__ import annotations

import html
import time
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from appliance import __version__
from appliance.api.components import FORWARDER_KEY
from appliance.api.params import parse_int, parse_time
from appliance.api.server import (
    APPLIANCE_KEY,
    AUDIT_KEY,
    SESSION_AUTH_KEY,
    json_error,
    json_page,
)
from appliance.api.tokens import Token, requires
from appliance.console.auth import COOKIE, CSRF_HEADER, ConsoleAuth, Session
from appliance.incidents.manager import SEVERITIES

CONSOLE_KEY: web.AppKey[ConsoleAuth] = web.AppKey("console_auth", ConsoleAuth)
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# (path, page id, title, least role): the navigation, in order.
PAGES = (
    ("/", "overview", "Overview", "viewer"),
    ("/incidents", "incidents", "Incidents", "viewer"),
    ("/search", "search", "Search", "viewer"),
    ("/flows", "flows", "Flows", "viewer"),
    ("/sources", "sources", "Sources", "viewer"),
    ("/rules", "rules", "Rules", "viewer"),
    ("/audit", "audit", "Users and audit", "admin"),
)
# Metrics whose growth is data lost, damaged or refused on its way in: the overview's loss
# counters (kernel and queue drops are reasons of events_dropped_total).
LOSS_METRICS = (
    "events_dropped_total",
    "flows_dropped_total",
    "flows_not_stored_total",
    "netflow_lost_flows_total",
    "netflow_datagrams_rejected_total",
    "netflow_errors_total",
    "snmp_malformed_total",
    "syslog_parse_errors_total",
    "syslog_frame_errors_total",
    "syslog_truncated_total",
    "syslog_tls_errors_total",
    "stage_errors_total",
    "storage_write_errors_total",
    "forward_dropped_total",
)


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The shipped assets, read once: only these names are ever served (no path from the
    request reaches the filesystem)."""
    out = {}
    for entry in resources.files("appliance.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


def _auth(request: web.Request) -> ConsoleAuth:
    return request.app[CONSOLE_KEY]


def _remote(request: web.Request) -> str:
    return request.remote or "?"


async def current_session(request: web.Request) -> Session | None:
    return await _auth(request).session(request.cookies.get(COOKIE))


def _same_origin(request: web.Request) -> bool:
    """A browser's POST carries Origin; one from another site is refused (login CSRF)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


async def session_token(request: web.Request) -> Token | None:
    """The API's view of a console session: a token with the role's scope."""
    session = await current_session(request)
    if session is None:
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _auth(request).csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise web.HTTPForbidden(
            text='{"error": "missing or wrong CSRF token (X-CSRF-Token header)"}',
            content_type="application/json",
        )
    return Token(f"user:{session.username}", session.username, (session.scope,), "", "")


async def audit_api_change(request: web.Request, token: Token) -> None:
    actor = token.name if token.id.startswith("user:") else f"token:{token.id}"
    body = b""
    if request.body_exists:
        body = await request.read()  # already read by the handler: aiohttp keeps it
    target = request.match_info.get("id") or request.match_info.get("name") or ""
    await _auth(request).audit(
        actor,
        _remote(request),
        f"{request.method} {request.path}",
        target,
        body[:2000].decode("utf-8", "replace"),
    )


# ------------------------------------------------------------------------------------ pages


def _page(request: web.Request, session: Session, page: str, title: str, body: str) -> str:
    cfg = request.app[APPLIANCE_KEY].config
    nav = "".join(
        f'<a href="{path}"{" class=current" if pid == page else ""}>{name}</a>'
        for path, pid, name, role in PAGES
        if session.allows(role)
    )
    e = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{e(session.csrf)}">
<title>{e(title)} - {e(cfg.appliance.sensor_id)}</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body data-page="{page}" data-role="{session.role}"
 data-refresh="{cfg.console.refresh_seconds:g}">
<header><span class="brand">SEM {e(cfg.appliance.sensor_id)}</span><nav>{nav}</nav>
<span class="who">{e(session.username)} ({session.role})</span>
<button type="button" id="theme" title="light / dark">&#9680;</button>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf"
 value="{e(session.csrf)}"><button type="submit" id="logout">Log out</button></form>
</header>
<div id="error" class="error" hidden></div>
<main>
{body}
</main>
<footer>appliance {e(__version__)} &middot; times in your local time zone</footer>
</body></html>
"""


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


SHELLS: dict[str, str] = {
    "overview": """
<h1>Overview</h1>
<section class="cards" id="cards"></section>
<div class="grid">
<section><h2>Events per second by source</h2><div class="chart" id="rate-sources"></div></section>
<section><h2>Events per second by device</h2><div class="chart" id="rate-devices"></div>
</section>
<section><h2>Incidents raised by severity (24 h, per hour)</h2>
<div class="chart" id="incidents-severity"></div></section>
<section><h2>Open incidents</h2><table id="open-incidents" class="list"><thead><tr>
<th>Severity</th><th>Title</th><th>Last seen</th></tr></thead><tbody></tbody></table></section>
<section><h2>Top talkers (1 h, bytes)</h2><div class="chart" id="top-talkers"></div></section>
<section><h2>Top denied sources (1 h, events)</h2><div class="chart" id="top-denied"></div>
<p class="note" id="top-denied-note"></p></section>
<section><h2>Top destination ports (1 h, bytes)</h2><div class="chart" id="top-ports"></div>
</section>
<section><h2>Silent sources</h2><ul id="silent"></ul></section>
<section><h2>Loss counters (per second)</h2><div class="chart" id="loss-trend"></div>
<table id="loss" class="list"><thead><tr><th>Counter</th><th>Total</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Backlogs</h2><table id="backlogs" class="list"><thead><tr><th>Queue</th>
<th>Items</th><th>State</th></tr></thead><tbody></tbody></table></section>
</div>""",
    "incidents": """
<h1>Incidents</h1>
<form id="filters" class="filters">
<label>Status <select name="status"><option value="">any</option><option>open</option>
<option>acknowledged</option><option>resolved</option><option>suppressed</option></select>
</label>
<label>Severity <select name="severity"><option value="">any</option>"""
    + "".join(f"<option>{s}</option>" for s in SEVERITIES)
    + """</select></label>
<label>Rule <select name="rule" id="rule-filter"><option value="">any</option></select></label>
<label>Sort <select name="sort" id="sort"><option value="">last seen</option>
<option value="risk_score">risk score</option><option value="severity">severity</option>
<option value="first_seen">first seen</option><option value="updated">updated</option>
</select></label>
<button type="submit">Filter</button></form>
<table id="incident-list" class="list sortable"><thead><tr>
<th data-key="severity">Severity</th><th data-key="status">Status</th>
<th data-key="title">Title</th><th data-key="group_key">Group</th>
<th data-key="risk_score">Risk</th><th data-key="hit_count">Hits</th>
<th data-key="last_seen">Last seen</th></tr></thead>
<tbody></tbody></table>""",
    "incident": """
<h1 id="title">Incident</h1>
<section class="cards" id="facts"></section>
<section id="actions" class="actions" data-needs="operator">
<label>Note <input id="note" size="40"></label>
<button type="button" data-action="ack">Acknowledge</button>
<button type="button" data-action="resolve">Resolve</button>
<button type="button" data-action="false-positive">False positive</button>
<label>Assignee <input id="assignee" size="16"></label>
<button type="button" data-action="assign">Assign</button>
<label>Comment <input id="comment" size="30"></label>
<button type="button" data-action="comment">Comment</button>
<button type="button" data-action="reopen">Reopen</button>
<span id="action-result"></span>
</section>
<div class="grid">
<section><h2>Why it fired</h2><dl id="why"></dl></section>
<section><h2>Risk</h2><dl id="risk"></dl></section>
<section><h2>Asset and intel context</h2><dl id="context"></dl></section>
<section><h2>Evidence timeline</h2><div class="chart" id="timeline"></div>
<ol id="evidence" class="evidence"></ol></section>
<section><h2>History</h2><ol id="history"></ol></section>
<section><h2>Related incidents</h2><ul id="related"></ul></section>
<section><h2>Delivered upstream</h2><table id="delivery" class="list"><thead><tr>
<th>Upstream</th><th>State</th><th>Queued revisions</th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Flows of this address</h2><p><a id="flows-link" href="/flows">Flows</a></p>
</section>
</div>""",
    "search": """
<h1>Search</h1>
<form id="search-form" class="filters">
<label>From <input type="datetime-local" name="since"></label>
<label>To <input type="datetime-local" name="until"></label>
<label>Text <input name="q" size="24"></label>
<label>Source IP <input name="source.ip" size="15"></label>
<label>Device IP <input name="observer.ip" size="15"></label>
<label>Host <input name="host.hostname" size="15"></label>
<label>Module <input name="event.module" size="10"></label>
<label>More filters <input name="filters" size="24" placeholder="field=value ..."
 title="space-separated field=value pairs, passed to the events API as they are"></label>
<label>Limit <input name="limit" type="number" value="500" min="1" max="1000"></label>
<button type="submit" id="search-go">Search</button>
<button type="button" id="export-csv">Export CSV</button>
<button type="button" id="export-json">Export JSON</button>
</form>
<div class="grid wide">
<section><h2>Histogram <span id="result-count"></span></h2>
<div class="chart" id="histogram"></div><p class="note" id="histogram-note"></p>
<table id="results" class="list"><thead><tr><th>Time</th><th>Device</th><th>Module</th>
<th>Message</th></tr></thead><tbody></tbody></table></section>
<aside><h2>Top values</h2><div id="top-values"></div></aside>
</div>""",
    "flows": """
<h1>Flows</h1>
<form id="flow-form" class="filters">
<label>Window <select name="window"><option value="900">15 min</option>
<option value="3600" selected>1 h</option><option value="86400">24 h</option></select></label>
<label>IP <input name="ip" size="15"></label><button type="submit">Show</button></form>
<div class="grid">
<section><h2>Top talkers (bytes)</h2><div class="chart" id="flow-talkers"></div></section>
<section><h2>Top destinations (bytes)</h2><div class="chart" id="flow-dests"></div></section>
<section><h2>Conversations (bytes)</h2><div class="chart" id="flow-convs"></div></section>
<section><h2>Destination ports (bytes)</h2><div class="chart" id="flow-ports"></div></section>
<section><h2>Port bytes over time</h2><div class="chart" id="flow-ports-time"></div></section>
<section><h2>Flows of the address</h2><table id="flow-list" class="list"><thead><tr>
<th>Start</th><th>Source</th><th>Destination</th><th>Proto</th><th>Bytes</th></tr></thead>
<tbody></tbody></table></section>
</div>""",
    "sources": """
<h1>Sources and devices</h1>
<table id="source-list" class="list"><thead><tr><th>Source</th><th>Received</th>
<th>Rate (/s)</th><th>Dropped</th><th>Last change</th></tr></thead><tbody></tbody></table>
<h2>Devices (from the latest events)</h2>
<table id="device-list" class="list"><thead><tr><th>Device</th><th>Host</th><th>Decoder</th>
<th>Events</th><th>Last seen</th><th>Clock skew</th></tr></thead><tbody></tbody></table>""",
    "rules": """
<h1>Rules</h1>
<table id="rule-list" class="list sortable"><thead><tr><th data-key="id">Id</th>
<th data-key="title">Title</th><th data-key="level">Level</th><th data-key="hits">Hits</th>
<th data-key="alerts">Alerts</th><th data-key="incidents">Incidents</th>
<th data-key="fp_share">False positives</th><th data-key="last_fired">Last fired</th>
<th data-key="enabled">Enabled</th><th>Test</th></tr></thead>
<tbody></tbody></table>
<section id="rule-test" hidden><h2 id="rule-test-title">Test</h2>
<p id="rule-test-summary"></p>
<table id="rule-test-alerts" class="list"><thead><tr><th>Group</th><th>Count</th>
<th>First</th><th>Last</th></tr></thead><tbody></tbody></table>
<ol id="rule-test-events" class="evidence"></ol></section>
<h2>Failed to load</h2><ul id="rule-failures"></ul>""",
    "audit": """
<h1>Users</h1>
<table id="user-list" class="list"><thead><tr><th>User</th><th>Role</th><th>Created</th>
<th>Sessions</th><th>Last active</th></tr></thead><tbody></tbody></table>
<p>Add, change and remove users with <code>appliance users</code> on the box.</p>
<h1>Audit log</h1>
<table id="audit-list" class="list"><thead><tr><th>Time</th><th>Who</th><th>From</th>
<th>What</th><th>Target</th><th>Detail</th></tr></thead><tbody></tbody></table>""",
}


def _page_handler(page: str, title: str, role: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        if session is None:
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
        if not session.allows(role):
            return _html("<!doctype html><title>Forbidden</title><p>Not for your role.", 403)
        return _html(_page(request, session, page, title, SHELLS[page]))

    return handler


def _login_form(message: str = "", next_path: str = "/") -> str:
    e = html.escape
    note = f'<p class="error" id="login-error">{e(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/console.css"></head>
<body class="login"><main><h1>Log in</h1>{note}
<form method="post" action="/login">
<input type="hidden" name="next" value="{e(next_path)}">
<label>User <input name="username" id="username" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password"
 autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button></form></main></body></html>
"""


def _safe_next(value: str | None) -> str:
    """Only a path on this site: an open redirect would lend the login page to phishing."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def login_page(request: web.Request) -> web.Response:
    next_path = _safe_next(request.query.get("next"))
    if await current_session(request) is not None:
        raise web.HTTPSeeOther(next_path)
    return _html(_login_form(next_path=next_path))


async def login(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return _html(_login_form("Cross-site login refused."), 403)
    form = await request.post()
    username = str(form.get("username", ""))
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "/")))
    result = await _auth(request).login(username, password, _remote(request))
    if isinstance(result, float):
        if result > 0:
            return _html(
                _login_form(f"Too many failed logins; try again in {result:.0f} s.", next_path),
                429,
            )
        return _html(_login_form("Wrong user name or password.", next_path), 401)
    cookie, _csrf = result
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
        max_age=int(request.app[APPLIANCE_KEY].config.console.session_max),
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    session = await current_session(request)
    if session is not None:
        form = await request.post()
        if not _same_origin(request) or not _auth(request).csrf_ok(
            session, str(form.get("csrf", ""))
        ):
            return _html("<!doctype html><title>Refused</title><p>Missing CSRF token.", 403)
        await _auth(request).logout(session, _remote(request))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def _static_handler(files: dict[str, tuple[bytes, str]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(
            body=body,
            content_type=ctype,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    return handler


# -------------------------------------------------------------------------------- JSON


def _loss_counters(app: Any) -> dict[str, float]:
    """Each loss counter by name and reason (when it has one), zero when nothing was lost."""
    out: dict[str, float] = {}
    for name in LOSS_METRICS:
        metric = app.metrics.get(name)
        if metric is None:
            continue
        short = name.removesuffix("_total")
        out[short] = 0.0
        if "reason" not in metric.labelnames:
            out[short] = float(sum(v for _k, v in metric.samples()))
            continue
        at = metric.labelnames.index("reason")
        for labels, value in metric.samples():
            key = f"{short}{{{labels[at]}}}"
            out[key] = out.get(key, 0.0) + float(value)
            out[short] += float(value)
    return out


async def overview(request: web.Request) -> web.Response:
    """What the overview page polls: counters (the page turns them into rates), incidents by
    severity per hour over a day, open incidents, backlogs. Bounded: one grouped query over the
    day's incidents, 10 open ones, the in-memory counters."""
    app = request.app[APPLIANCE_KEY]
    pipeline = app.pipeline
    books = [(pipeline.received, pipeline.dropped), (app.flows.received, app.flows.dropped)]
    sources = {}
    for src in app.sources:
        name = src.name
        sources[name] = {
            "received": int(sum(r.value(name) for r, _ in books)),
            "dropped": int(sum(v for _, d in books for k, v in d.values.items() if k[0] == name)),
        }
    now = time.time()
    first_hour = int(now // 3600 - 23) * 3600
    conn = app.store.reader
    assert conn is not None
    by_hour: dict[str, list[int]] = {s: [0] * 24 for s in SEVERITIES}
    # By when they were raised (wall clock), not by their events' time: replayed or late
    # logs raise incidents now. ``updated`` >= ``created``, so it bounds the scan.
    async with conn.execute(
        "SELECT CAST((julianday(json_extract(doc, '$.created')) - 2440587.5) * 86400 AS REAL),"
        " severity FROM incidents WHERE updated >= ? LIMIT 200000",
        (first_hour,),
    ) as cur:
        for created, severity in await cur.fetchall():
            if created is None or severity not in by_hour:
                continue
            hour = int((created - first_hour) // 3600)
            if 0 <= hour < 24:
                by_hour[severity][hour] += 1
    open_by_severity = dict.fromkeys(SEVERITIES, 0)
    async with conn.execute(
        "SELECT severity, count(*) FROM incidents WHERE status IN ('open', 'acknowledged')"
        " GROUP BY 1"
    ) as cur:
        for severity, count in await cur.fetchall():
            open_by_severity[severity] = count
    async with conn.execute(
        "SELECT id, severity, status, last_seen, json_extract(doc, '$.title') FROM incidents"
        " WHERE status IN ('open', 'acknowledged') ORDER BY last_seen DESC LIMIT 10"
    ) as cur:
        recent = [
            {"id": i, "severity": s, "status": st, "last_seen": ls, "title": t}
            for i, s, st, ls, t in await cur.fetchall()
        ]
    backlogs = []
    forwarder = request.app.get(FORWARDER_KEY)
    for lane in forwarder.status() if forwarder is not None else []:
        backlogs.append(
            {
                "queue": f"upstream {lane.get('name', '?')}",
                "items": lane.get("backlog", 0),
                "state": lane.get("status", ""),
            }
        )
    backlogs.append({"queue": "ingest queue", "items": len(pipeline), "state": ""})
    return json_page(
        {
            "now": now,
            "sources": sources,
            "events_stored": int(pipeline.stored.total()),
            "loss": _loss_counters(app),
            "incidents_by_hour": {"first_hour": first_hour, "series": by_hour},
            "open_by_severity": open_by_severity,
            "open_incidents": recent,
            "backlogs": backlogs,
        }
    )


async def incident_delivery(request: web.Request) -> web.Response:
    """Per incident upstream lane: revisions still queued or parked (dead) for this incident,
    with attempts and the last error; none queued means every revision queued was delivered
    (the outbox deletes a row when the upstream acknowledges it)."""
    app = request.app[APPLIANCE_KEY]
    incident_id = request.match_info["id"]
    conn = app.store.reader
    assert conn is not None
    async with conn.execute(
        "SELECT json_extract(doc, '$.sensor_id'), revision FROM incidents WHERE id = ?",
        (incident_id,),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return json_error(404, "no such incident")
    prefix = f"{row[0]}:{incident_id}:"
    lanes = []
    forwarder = request.app.get(FORWARDER_KEY)
    for sender in forwarder.senders.values() if forwarder is not None else []:
        if sender.stream != "incident":
            continue
        async with conn.execute(
            "SELECT key, state, attempts, last_error FROM outbox WHERE upstream = ?"
            " AND substr(key, 1, ?) = ? ORDER BY id LIMIT 50",
            (sender.name, len(prefix), prefix),
        ) as cur:
            queued = [
                {
                    "revision": int(k.rsplit(":", 1)[-1]),
                    "state": st,
                    "attempts": n,
                    "last_error": err,
                }
                for k, st, n, err in await cur.fetchall()
            ]
        state = (
            "dead"
            if any(q["state"] == "dead" for q in queued)
            else "pending"
            if queued
            else "delivered"
        )
        lanes.append({"upstream": sender.name, "state": state, "queued": queued})
    return json_page({"id": incident_id, "revision": row[1], "deliveries": lanes})


async def rule_outcomes(request: web.Request) -> web.Response:
    """Per rule id: incidents raised (kept within the incident retention) and how many were
    marked false positives, for the Rules page's false-positive share."""
    conn = request.app[APPLIANCE_KEY].store.reader
    assert conn is not None
    async with conn.execute(
        "SELECT rule_id, count(*), sum(status = 'suppressed') FROM incidents GROUP BY rule_id"
    ) as cur:
        rows = await cur.fetchall()
    return json_page(
        {"rules": {r: {"incidents": n, "false_positives": fp or 0} for r, n, fp in rows}}
    )


@requires("admin")
async def audit_log(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    q = request.query
    entries = await _auth(request).audit_entries(
        since=parse_time("since", q.get("since")),
        actor=q.get("actor") or None,
        limit=parse_int("limit", q.get("limit"), 100, 1, app.config.api.max_page),
    )
    return json_page({"entries": entries, "count": len(entries)})


@requires("admin")
async def list_users(request: web.Request) -> web.Response:
    conn = request.app[APPLIANCE_KEY].store.reader
    assert conn is not None
    async with conn.execute(
        "SELECT u.name, u.role, u.created, u.updated, count(s.id_hash), max(s.last_seen)"
        " FROM console_users u LEFT JOIN console_sessions s ON s.username = u.name"
        " GROUP BY u.name ORDER BY u.name"
    ) as cur:
        rows = await cur.fetchall()
    keys = ("name", "role", "created", "updated", "sessions", "last_seen")
    found = [dict(zip(keys, r, strict=True)) for r in rows]
    return json_page({"users": found, "count": len(found)})


def setup(app: web.Application) -> None:
    appliance = app[APPLIANCE_KEY]
    app[CONSOLE_KEY] = ConsoleAuth(appliance.store, appliance.config.console, appliance.metrics)
    app[SESSION_AUTH_KEY] = session_token
    app[AUDIT_KEY] = audit_api_change
    for path, page, title, role in PAGES:
        app.router.add_get(path, _page_handler(page, title, role))
    app.router.add_get("/incidents/{id}", _page_handler("incident", "Incident", "viewer"))
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name}", _static_handler(_static_files()))
    app.router.add_get("/api/v1/console/overview", overview)
    app.router.add_get("/api/v1/console/rule-outcomes", rule_outcomes)
    app.router.add_get("/api/v1/console/incidents/{id}/delivery", incident_delivery)
    app.router.add_get("/api/v1/audit", audit_log)
    app.router.add_get("/api/v1/users", list_users)
