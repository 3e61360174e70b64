"""Console access: users and their passwords, login, sessions, CSRF, throttling and the audit
log, against a real appliance on loopback (HTTP through aiohttp, users in its SQLite file)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.console import users as u
from tests.conftest import TOKEN, Running
from tests.ruletools import ssh
from tests.test_incidents_api import BRUTE, feed, wait_incident

PASSWORD = "correct horse battery"


@pytest.fixture
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash new passwords with small scrypt parameters: each login of these tests would
    otherwise cost 128 MiB and ~0.5 s. The stored hash names its parameters, so the code path
    is the production one."""
    monkeypatch.setattr(u, "SCRYPT_N", 2**10)
    monkeypatch.setattr(u, "_dummy", [])


def add(run: Running, name: str, role: str, password: str = PASSWORD) -> None:
    conn = u.connect(run.app.config.data_dir / "appliance.db")
    try:
        u.add_user(conn, name, role, password, "test")
    finally:
        conn.close()


class Client:
    """A browser stand-in: keeps the session cookie and the page's CSRF token."""

    def __init__(self, run: Running) -> None:
        self.run = run
        self.cookie = ""
        self.csrf = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"sem_session={self.cookie}"} if self.cookie else {}

    async def login(
        self, name: str, password: str = PASSWORD, **extra: str
    ) -> aiohttp.ClientResponse:
        resp = await self.run.session.post(
            self.run.api + "/login",
            data={"username": name, "password": password},
            allow_redirects=False,
            headers=extra,
        )
        cookie = resp.cookies.get("sem_session")
        if cookie is not None:
            self.cookie = cookie.value
            page = await self.get("/")
            m = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
            assert m, "the page carries the session's CSRF token"
            self.csrf = m.group(1)
        return resp

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.run.session.get(
            self.run.api + path, headers=self.headers, allow_redirects=False
        )

    async def post(self, path: str, body: Any = None, csrf: bool = True) -> aiohttp.ClientResponse:
        headers = dict(self.headers)
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return await self.run.session.post(self.run.api + path, json=body, headers=headers)


# ------------------------------------------------------------------------------ passwords


def test_password_hash_is_salted_scrypt_with_its_parameters() -> None:
    one, two = u.hash_password(PASSWORD), u.hash_password(PASSWORD)
    assert one != two  # a salt per hash
    kind, n, r, p, _salt, _digest = one.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**17, 8, 1)
    assert u.verify_password(PASSWORD, one)
    assert not u.verify_password(PASSWORD + "x", one)
    assert not u.verify_password(PASSWORD, "scrypt$x$y$z$garbage$garbage")


def test_users_cli_reads_the_password_from_stdin_and_audits(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[appliance]\ndata_dir = "{tmp_path / "data"}"\nallow_empty = true\n')

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appliance", "users", *args, "--config", str(cfg)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("add", "alice", "--role", "operator", stdin=PASSWORD + "\n").returncode == 0
    listed = cli("list").stdout
    assert re.search(r"^alice\s+operator\s", listed, re.M)
    short = cli("add", "bob", "--role", "viewer", stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr
    assert cli("add", "carol", "--role", "root", stdin=PASSWORD).returncode == 2
    assert cli("passwd", "alice", stdin="another long one\n").returncode == 0
    assert cli("remove", "alice").returncode == 0
    assert "no user" in cli("remove", "alice").stderr
    conn = u.connect(tmp_path / "data" / "appliance.db")
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id")]
    hashes = conn.execute("SELECT count(*) FROM console_users").fetchone()[0]
    conn.close()
    assert actions == ["user.add", "user.passwd", "user.remove"]
    assert hashes == 0


# ------------------------------------------------------------------------------ login


async def test_root_redirects_to_login_without_a_session(start_appliance: Any) -> None:
    run = await start_appliance()
    resp = await Client(run).get("/")
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/login")


async def test_login_sets_a_strict_httponly_cookie_and_serves_the_console(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "alice", "viewer")
    client = Client(run)
    resp = await client.login("alice")
    assert resp.status == 303
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP on loopback: a Secure cookie would be lost
    page = await client.get("/")
    assert page.status == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'data-page="overview"' in await page.text()
    again = await client.get("/login?next=/rules")  # already logged in: straight through
    assert again.status == 303 and again.headers["Location"] == "/rules"


async def test_wrong_password_is_refused_and_repeated_failures_lock_the_user_out(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance(console={"login_max_failures": 3, "login_lockout": 600})
    add(run, "alice", "admin")
    client = Client(run)
    for _ in range(3):
        assert (await client.login("alice", "wrong password")).status == 401
    locked = await client.login("alice")  # the right password, during the lockout
    assert locked.status == 429
    assert "sem_session" not in locked.cookies
    metrics = await run.metrics()
    assert 'appliance_console_logins_total{result="bad_credentials"} 3' in metrics
    assert 'appliance_console_logins_total{result="locked_out"} 1' in metrics


async def test_unknown_user_and_cross_site_login_are_refused(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "alice", "admin")
    assert (await Client(run).login("mallory")).status == 401
    cross = await Client(run).login("alice", Origin="https://evil.example")
    assert cross.status == 403


async def test_login_redirects_only_to_paths_on_this_site(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "alice", "viewer")
    resp = await run.session.post(
        run.api + "/login",
        data={"username": "alice", "password": PASSWORD, "next": "//evil.example/x"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/"


# ------------------------------------------------------------------------------ sessions


async def test_session_reads_the_api_and_writes_need_the_csrf_token(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "olga", "operator")
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    inc = await wait_incident(run, BRUTE)
    client = Client(run)
    await client.login("olga")
    assert (await client.get("/api/v1/incidents")).status == 200
    refused = await client.post(f"/api/v1/incidents/{inc['id']}/ack", {}, csrf=False)
    assert refused.status == 403
    ok = await client.post(f"/api/v1/incidents/{inc['id']}/ack", {"note": "on it"})
    assert ok.status == 200 and (await ok.json())["status"] == "acknowledged"


async def test_viewer_session_cannot_change_anything(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "vera", "viewer")
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    inc = await wait_incident(run, BRUTE)
    client = Client(run)
    await client.login("vera")
    resp = await client.post(f"/api/v1/incidents/{inc['id']}/ack", {})
    assert resp.status == 403
    assert (await client.get("/api/v1/audit")).status == 403
    assert (await client.get("/audit")).status == 403


async def test_logout_ends_the_session(start_appliance: Any, cheap_scrypt: None) -> None:
    run = await start_appliance()
    add(run, "alice", "viewer")
    client = Client(run)
    await client.login("alice")
    no_token = await run.session.post(
        run.api + "/logout", headers=client.headers, allow_redirects=False
    )
    assert no_token.status == 403  # a cross-site form cannot log people out either
    out = await run.session.post(
        run.api + "/logout",
        data={"csrf": client.csrf},
        headers=client.headers,
        allow_redirects=False,
    )
    assert out.status == 303
    assert (await client.get("/")).status == 303
    assert (await client.get("/api/v1/incidents")).status == 401


async def test_idle_session_expires(start_appliance: Any, cheap_scrypt: None) -> None:
    import asyncio

    run = await start_appliance(console={"session_idle": 0.5})
    add(run, "alice", "viewer")
    client = Client(run)
    await client.login("alice")
    await asyncio.sleep(1.0)
    assert (await client.get("/")).status == 303


async def test_removed_user_loses_their_session(start_appliance: Any, cheap_scrypt: None) -> None:
    run = await start_appliance()
    add(run, "alice", "viewer")
    client = Client(run)
    await client.login("alice")
    conn = u.connect(run.app.config.data_dir / "appliance.db")
    u.remove_user(conn, "alice", "test")
    conn.close()
    assert (await client.get("/api/v1/incidents")).status == 401


# ------------------------------------------------------------------------------ audit


async def test_changes_are_audited_with_who_what_and_where(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "olga", "operator")
    add(run, "ada", "admin")
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    inc = await wait_incident(run, BRUTE)
    olga = Client(run)
    await olga.login("olga")
    await olga.post(f"/api/v1/incidents/{inc['id']}/false-positive", {"note": "scanner"})
    ada = Client(run)
    await ada.login("ada")
    entries = (await (await ada.get("/api/v1/audit")).json())["entries"]
    fp = next(e for e in entries if e["action"].endswith("/false-positive"))
    assert fp["actor"] == "olga" and fp["remote"] == "127.0.0.1"
    assert fp["target"] == inc["id"] and "scanner" in fp["detail"]
    assert {"login", "user.add"} <= {e["action"] for e in entries}
    outcomes = (await run.get_json("/api/v1/console/rule-outcomes"))["rules"]
    assert outcomes[inc["rule"]["id"]] == {"incidents": 1, "false_positives": 1}
    # Machines keep their token; an admin token reads the audit log too.
    by_token = await run.get_json("/api/v1/audit", token=TOKEN)
    assert by_token["count"] == len(entries)


async def test_static_assets_are_served_and_nothing_else(start_appliance: Any) -> None:
    run = await start_appliance()
    client = Client(run)
    js = await client.get("/static/console.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    assert (await client.get("/static/..%2Fweb.py")).status == 404
    assert (await client.get("/static/nothing.js")).status == 404


async def test_audit_log_keeps_only_the_newest_entries(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.console import auth as console_auth
    from appliance.console.web import CONSOLE_KEY

    monkeypatch.setattr(console_auth, "AUDIT_KEEP", 10)
    run = await start_appliance()
    assert run.app.api is not None
    auth = run.app.api.app[CONSOLE_KEY]
    for i in range(1000):
        await auth.audit("script", "127.0.0.1", "POST /x", str(i), "")
    entries = await auth.audit_entries(since=None, actor=None, limit=1000)
    assert [e["target"] for e in entries] == [str(i) for i in range(999, 989, -1)]


# ------------------------------------------------------------------------------ rules


async def _brute_rule_id(run: Running) -> str:
    rules = (await run.get_json("/api/v1/rules"))["loaded"]
    return next(r["id"] for r in rules if r["title"] == BRUTE)


async def test_operator_disables_a_rule_and_it_raises_nothing_until_enabled(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "olga", "operator")
    rule = await _brute_rule_id(run)
    olga = Client(run)
    await olga.login("olga")
    assert (await olga.post(f"/api/v1/rules/{rule}/disable", {})).status == 200
    listed = (await run.get_json("/api/v1/rules"))["loaded"]
    assert next(r for r in listed if r["id"] == rule)["enabled"] is False
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    assert not [
        i for i in (await run.get_json("/api/v1/incidents"))["incidents"] if i["rule"]["id"] == rule
    ]
    assert (await olga.post(f"/api/v1/rules/{rule}/enable", {})).status == 200
    await feed(run, [ssh(100 + i, "198.51.100.7") for i in range(10)])
    await wait_incident(run, BRUTE)
    assert (await olga.post("/api/v1/rules/no-such-rule/disable", {})).status == 404


async def test_disabled_rule_stays_disabled_after_a_restart(
    tmp_path: Path, start_appliance: Any
) -> None:
    run = await start_appliance()
    rule = await _brute_rule_id(run)
    resp = await run.session.post(
        run.api + f"/api/v1/rules/{rule}/disable", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 200
    await run.app.stop()
    again = await start_appliance()
    listed = (await again.get_json("/api/v1/rules"))["loaded"]
    assert next(r for r in listed if r["id"] == rule)["enabled"] is False


async def test_viewer_cannot_disable_a_rule(start_appliance: Any, cheap_scrypt: None) -> None:
    run = await start_appliance()
    add(run, "vera", "viewer")
    rule = await _brute_rule_id(run)
    vera = Client(run)
    await vera.login("vera")
    assert (await vera.post(f"/api/v1/rules/{rule}/disable", {})).status == 403


async def test_admin_lists_users_without_their_hashes(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "ada", "admin")
    add(run, "vera", "viewer")
    ada, vera = Client(run), Client(run)
    await ada.login("ada")
    await vera.login("vera")
    listed = await (await ada.get("/api/v1/users")).json()
    assert [(x["name"], x["role"], x["sessions"]) for x in listed["users"]] == [
        ("ada", "admin", 1),
        ("vera", "viewer", 1),
    ]
    assert "scrypt" not in json.dumps(listed)
    assert (await vera.get("/api/v1/users")).status == 403


async def test_session_cookie_is_secure_over_tls(start_appliance: Any, cheap_scrypt: None) -> None:
    run = await start_appliance(api={"tls": True})
    assert run.api.startswith("https://")
    add(run, "alice", "viewer")
    resp = await run.session.post(
        run.api + "/login",
        data={"username": "alice", "password": PASSWORD},
        allow_redirects=False,
        ssl=False,  # the appliance's self-signed certificate; TLS itself is tested in the API's
    )
    assert resp.status == 303
    set_cookie = resp.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie


async def test_overview_counts_incidents_raised_this_hour_by_severity(
    start_appliance: Any,
) -> None:
    run = await start_appliance()
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])  # event times of 1970
    await wait_incident(run, BRUTE)
    ov = await run.get_json("/api/v1/console/overview")
    assert ov["incidents_by_hour"]["series"]["high"][-1] == 1  # raised now, whatever the logs say
    assert ov["open_by_severity"]["high"] == 1
    assert [i["title"] for i in ov["open_incidents"]] == [BRUTE]
    assert set(ov["sources"]) == {s.name for s in run.app.sources}
    assert ov["loss"]["events_dropped"] == 0


async def test_incident_delivery_shows_delivered_and_pending_lanes(
    start_appliance: Any, receiver: Any
) -> None:
    from tests.forwarding import upstream

    run = await start_appliance(
        upstream=[
            upstream("hq", "webhook", receiver.url("/hook"), receiver.pki),
            upstream("down", "webhook", "https://127.0.0.1:9/hook", receiver.pki),
        ]
    )
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    inc = await wait_incident(run, BRUTE)

    async def lanes() -> dict[str, Any]:
        body = await run.get_json(f"/api/v1/console/incidents/{inc['id']}/delivery")
        return {d["upstream"]: d for d in body["deliveries"]}

    async def settled() -> bool:
        got = await lanes()
        return got["hq"]["state"] == "delivered" and got["down"]["queued"][0]["attempts"] > 0

    await run.wait_for(settled, timeout=15)
    down = (await lanes())["down"]
    assert down["state"] == "pending" and down["queued"][0]["revision"] == 1
    assert down["queued"][0]["last_error"]
    assert receiver.seen  # hq really received it


async def test_malformed_logins_are_plain_refusals(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "alice", "viewer")
    as_json = await run.session.post(
        run.api + "/login", json={"username": "alice", "password": PASSWORD}
    )
    assert as_json.status == 401
    huge = await Client(run).login("a" * 100_000, "p" * 100_000)
    assert huge.status == 401
    odd_cookie = await run.session.get(
        run.api + "/api/v1/incidents", headers={"Cookie": "sem_session=" + "x" * 4000}
    )
    assert odd_cookie.status == 401
    assert (await Client(run).login("alice")).status == 303  # and the service still works


async def test_testing_a_rule_replays_recent_events_without_raising_anything(
    start_appliance: Any, cheap_scrypt: None
) -> None:
    run = await start_appliance()
    add(run, "vera", "viewer")
    rule = await _brute_rule_id(run)
    await run.app.stop()  # store the events without the live rules: no incident exists
    run = await start_appliance(rules={"builtin": False})
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    await run.app.stop()
    run = await start_appliance()
    vera = Client(run)
    await vera.login("vera")
    result = await (await vera.get(f"/api/v1/rules/{rule}/test?limit=100")).json()
    assert result["events"] == 10 and result["matched"] == 10
    assert [a["group_key"] for a in result["alerts"]] == ["source.ip=203.0.113.9"]
    assert len(result["alerts"][0]["event_ids"]) == 10
    assert not (await run.get_json("/api/v1/incidents"))["incidents"]
    assert (await vera.get("/api/v1/rules/nope/test")).status == 404
