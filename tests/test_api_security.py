"""API security: TLS (configured and self-signed), hashed scoped tokens, rotation without a
restart, and 401/403 counted and logged. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cryptography import x509

from appliance.api import server as api_server
from appliance.api import tokens as api_tokens
from appliance.api.tokens import requires
from appliance.cli import main as cli
from appliance.config import ConfigError, parse_config
from tests.conftest import TOKEN

SOURCES = {"syslog": [{}]}


def auth_failures(metrics: str, reason: str) -> int:
    m = re.search(rf'^appliance_api_auth_failures_total{{reason="{reason}"}} (\d+)$', metrics,
                  re.M)  # fmt: skip
    return int(m.group(1)) if m else 0


async def status(run: Any, method: str, path: str, token: str | None, **kw: Any) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with run.session.request(method, run.api + path, headers=headers, **kw) as resp:
        await resp.read()
        return resp.status


def add_token(tmp_path: Path, name: str, *scopes: str) -> str:
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    secret, _ = api_tokens.add_token(path, name, list(scopes))
    return secret


# ---------------------------------------------------------------------------------------- TLS


def write_pki(tmp_path: Path) -> trustme.CA:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "api.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "api.key"))
    return ca


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_api_serves_tls_1_2_or_later_with_the_configured_certificate(
    start_appliance: Any, tmp_path: Path
) -> None:
    ca = write_pki(tmp_path)
    # Paths relative to the config file's folder (tmp_path here).
    run = await start_appliance(api={"tls_cert": "api.pem", "tls_key": "api.key"})
    assert run.api.startswith("https://")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with aiohttp.ClientSession() as s:
        async with s.get(run.api + "/healthz", ssl=client) as resp:
            assert resp.status == 200
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(run.api + "/api/v1/events", ssl=client, headers=headers) as resp:
            assert resp.status == 200
        port = run.app.api.port
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        writer.close()
        # A client limited to TLS 1.2 still connects; one limited to TLS 1.1 is refused.
        tls12 = ssl.create_default_context()
        ca.configure_trust(tls12)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls12)
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()
        old = ssl.create_default_context()
        ca.configure_trust(old)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that it is the server that refuses
        with pytest.raises(OSError):  # the server's alert or reset, by the OpenSSL build
            await asyncio.open_connection("127.0.0.1", port, ssl=old)
        # Plain HTTP to the TLS port gets no answer.
        with pytest.raises(aiohttp.ClientError):
            async with s.get(run.api.replace("https://", "http://") + "/healthz") as resp:
                await resp.read()


async def test_loopback_api_stays_plain_http_without_a_certificate(start_appliance: Any) -> None:
    run = await start_appliance()
    assert run.api.startswith("http://")
    assert (await status(run, "GET", "/healthz", None)) == 200
    assert not (Path(run.app.config.data_dir) / "api-tls.key").exists()


async def test_self_signed_certificate_is_generated_once_with_key_0600_and_reused(
    start_appliance: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.api.tls")
    run = await start_appliance(api={"tls": True})
    data = tmp_path / "data"
    cert_path, key_path = data / "api-tls.crt", data / "api-tls.key"
    assert key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    fp = hashlib.sha256(cert.public_bytes(encoding=_der())).hexdigest()
    fp_text = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    assert any("generated" in r.getMessage() and fp_text in r.getMessage() for r in caplog.records)
    # A client that trusts (pins) exactly this certificate connects and verifies the name.
    client = ssl.create_default_context(cafile=str(cert_path))
    async with aiohttp.ClientSession() as s, s.get(run.api + "/healthz", ssl=client) as resp:
        assert resp.status == 200
    await run.app.stop()
    caplog.clear()
    again = await start_appliance(api={"tls": True})
    assert cert_path.read_bytes() == cert.public_bytes(encoding=_pem())
    assert any("using" in r.getMessage() and fp_text in r.getMessage() for r in caplog.records)
    async with aiohttp.ClientSession() as s, s.get(again.api + "/healthz", ssl=client) as resp:
        assert resp.status == 200


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def _pem() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def test_non_loopback_listen_is_tls_by_default() -> None:
    cfg = parse_config({"api": {"listen": "0.0.0.0:8443"}, "sources": SOURCES})
    assert cfg.api.tls_enabled
    cfg = parse_config({"api": {"listen": "[::1]:8080"}, "sources": SOURCES})
    assert not cfg.api.tls_enabled


def test_non_loopback_plaintext_is_refused_unless_allow_plaintext() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"api": {"listen": "192.0.2.10:8080", "tls": False}, "sources": SOURCES})
    assert len(exc.value.errors) == 1
    assert exc.value.errors[0].startswith("api.tls: false on a non-loopback listen")
    assert "api.allow_plaintext" in exc.value.errors[0]
    cfg = parse_config(
        {"api": {"listen": "0.0.0.0:8080", "tls": False, "allow_plaintext": True},
         "sources": SOURCES}
    )  # fmt: skip
    assert not cfg.api.tls_enabled


def test_tls_cert_needs_tls_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"api": {"tls_cert": "api.pem"}, "sources": SOURCES})
    assert exc.value.errors == ["api.tls_cert: tls_cert and tls_key go together"]


async def test_unreadable_configured_certificate_is_a_config_error_naming_the_key(
    start_appliance: Any,
) -> None:
    with pytest.raises(ConfigError) as exc:
        await start_appliance(api={"tls_cert": "missing.pem", "tls_key": "missing.key"})
    assert exc.value.errors[0].startswith("api.tls_cert: cannot load")


# ------------------------------------------------------------------------------------- tokens


def test_cli_tokens_add_list_revoke_store_only_a_hash_in_a_0600_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "data"}"\nallow_empty = true\n'
    )  # fmt: skip
    assert cli(["tokens", "add", "soar", "--scope", "write", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert re.fullmatch(r"sem_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", secret)
    assert "shown only this once" in err
    path = tmp_path / "data" / "api-tokens.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert secret not in text and secret[13:] not in text
    (entry,) = json.loads(text)["tokens"]
    assert entry["name"] == "soar" and entry["scopes"] == ["write"]
    assert entry["hash"] == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    assert set(entry) == {"id", "name", "scopes", "created", "hash"}
    assert cli(["tokens", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert entry["id"] in listing and "soar" in listing and "sha256" not in listing
    assert cli(["tokens", "revoke", "nope", "--config", str(config)]) == 1
    assert cli(["tokens", "revoke", entry["id"], "--config", str(config)]) == 0
    assert json.loads(path.read_text())["tokens"] == []


async def test_read_token_can_get_but_state_changes_answer_403(
    start_appliance: Any, tmp_path: Path
) -> None:
    reader = add_token(tmp_path, "grafana", "read")
    run = await start_appliance()
    assert await status(run, "GET", "/api/v1/events", reader) == 200
    assert await status(run, "GET", "/api/v1/incidents", reader) == 200
    assert await status(run, "POST", "/api/v1/incidents/x/ack", reader) == 403
    assert auth_failures(await run.metrics(), "insufficient_scope") == 1


async def test_write_token_can_post_incident_actions(start_appliance: Any, tmp_path: Path) -> None:
    writer = add_token(tmp_path, "soar", "write")
    run = await start_appliance()
    assert await status(run, "GET", "/api/v1/incidents", writer) == 200  # write includes read
    # Past authorization: the handler answers (no such incident).
    assert await status(run, "POST", "/api/v1/incidents/nope/ack", writer) == 404
    assert auth_failures(await run.metrics(), "insufficient_scope") == 0


async def test_admin_routes_need_the_admin_scope_and_the_legacy_token_has_it(
    start_appliance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @requires("admin")
    async def admin_only(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    writer = add_token(tmp_path, "soar", "write")
    admin = add_token(tmp_path, "ops", "admin")
    run = await start_appliance(
        route_setups=[lambda app: app.router.add_get("/api/v1/admin", admin_only)]
    )
    assert await status(run, "GET", "/api/v1/admin", writer) == 403
    assert await status(run, "GET", "/api/v1/admin", admin) == 200
    assert await status(run, "GET", "/api/v1/admin", TOKEN) == 200  # api.token: admin
    assert await status(run, "POST", "/api/v1/incidents/nope/ack", TOKEN) == 404


async def test_unknown_token_is_401_counted_and_logged_rate_limited(
    start_appliance: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.api.server")
    monkey_rl = api_server._rl
    monkey_rl._last.clear()
    real = add_token(tmp_path, "grafana", "read")
    run = await start_appliance()
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for bad in [forged, "nonsense", "sem_00000000_" + "A" * 43] * 5:
        assert await status(run, "GET", "/api/v1/events", bad) == 401
    assert await status(run, "GET", "/api/v1/events", None) == 401
    metrics = await run.metrics()
    assert auth_failures(metrics, "unknown_token") == 15
    assert auth_failures(metrics, "missing_token") == 1
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2  # one per reason within the interval, not one per request
    assert "unknown_token" in lines[0] and "127.0.0.1" in lines[0]


async def test_new_and_revoked_tokens_take_effect_without_restart(
    start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance()
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    secret, entry = api_tokens.add_token(path, "rotated-in", ["read"])

    async def works() -> bool:
        return await status(run, "GET", "/api/v1/events", secret) == 200

    await run.wait_for(works, timeout=5)  # the file is checked at most once a second
    assert api_tokens.revoke_token(path, entry.id) is not None

    async def refused() -> bool:
        return await status(run, "GET", "/api/v1/events", secret) == 401

    await run.wait_for(refused, timeout=5)
    assert await status(run, "GET", "/api/v1/events", TOKEN) == 200  # legacy unaffected


async def test_sighup_rereads_the_token_file_at_once(start_appliance: Any, tmp_path: Path) -> None:
    run = await start_appliance()
    store = run.app.api.tokens
    store.interval = 3600.0  # no mtime check: only the reload can pick the token up
    store._next_check = store.clock() + 3600.0
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    secret, _ = api_tokens.add_token(path, "late", ["read"])
    assert await status(run, "GET", "/api/v1/events", secret) == 401
    run.app.reload_tokens()  # what the SIGHUP handler calls
    assert await status(run, "GET", "/api/v1/events", secret) == 200


async def test_a_corrupt_token_file_accepts_no_file_token_but_keeps_the_legacy_one(
    start_appliance: Any, tmp_path: Path
) -> None:
    secret = add_token(tmp_path, "grafana", "read")
    run = await start_appliance()
    assert await status(run, "GET", "/api/v1/events", secret) == 200
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    path.write_text("{not json")
    run.app.reload_tokens()
    assert await status(run, "GET", "/api/v1/events", secret) == 401
    assert await status(run, "GET", "/api/v1/events", TOKEN) == 200


def test_token_check_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = api_tokens.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_tokens.hmac, "compare_digest", spy)
    store = api_tokens.TokenStore(Path("/nonexistent/api-tokens.json"), legacy=TOKEN)
    assert store.authenticate(f"Bearer {TOKEN}") is store.legacy
    assert store.authenticate("Bearer wrong") is None
    assert calls and all(a.startswith(b"sha256:") for a, _ in calls)


async def test_concurrent_requests_during_rotation_never_fail_open(
    start_appliance: Any, tmp_path: Path
) -> None:
    """While tokens are added and revoked under load, a revoked token never passes after the
    reload that dropped it, and a good one keeps working."""
    keep = add_token(tmp_path, "keep", "read")
    run = await start_appliance()
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    for i in range(5):
        secret, entry = api_tokens.add_token(path, f"tmp{i}", ["read"])
        api_tokens.revoke_token(path, entry.id)
        run.app.reload_tokens()
        results = await asyncio.gather(
            status(run, "GET", "/api/v1/events", secret), status(run, "GET", "/api/v1/events", keep)
        )
        assert results == [401, 200]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another owner")
def test_token_file_written_by_root_belongs_to_the_owner_of_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    os.chown(folder, 65534, 65534)  # the service user, say
    path = folder / api_tokens.TOKENS_FILE
    api_tokens.add_token(path, "ops", ["admin"])
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)
    api_tokens.add_token(path, "ci", ["read"])  # a rewrite keeps the file's owner
    assert path.stat().st_uid == 65534
