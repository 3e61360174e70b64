"""The OpenAPI document: it documents exactly the server's routes, it is served, and a running
appliance answers as it says (schemathesis: no server error, every response matching the
documented status codes, content types and schemas; the stateful phase follows the
document's links from the incident list to a real incident's actions)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from appliance.api.openapi import document
from tests.conftest import TOKEN, free_port
from tests.test_lifecycle import Proc, write_config
from tests.test_reports import brute_force

METHODS = ("get", "post", "put", "patch", "delete")
PROBES = ("/healthz", "/metrics")
# Routes beside /api/ that machines (or links in messages) call, so they are documented too.
DOCUMENTED_OUTSIDE_API = ("/ack/{token}",)


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_every_route_is_documented_and_every_documented_path_is_a_route(
    start_appliance: Any,
) -> None:
    run = await start_appliance()
    # The console's HTML pages, login and static assets share the server but are not the
    # REST API (appliance.console): every /api/ route and the two probes are.
    routes = {
        (r.method, r.resource.canonical)
        for r in run.app.api.app.router.routes()
        if r.method != "HEAD"
        and r.resource is not None
        and (
            r.resource.canonical.startswith("/api/")
            or r.resource.canonical in PROBES
            or r.resource.canonical in DOCUMENTED_OUTSIDE_API
        )
    }
    assert routes == documented()


def test_the_document_is_openapi_3_1_with_unique_operation_ids() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_the_document_is_served_with_a_read_token(start_appliance: Any) -> None:
    run = await start_appliance()
    served = await run.get_json("/api/v1/openapi.json")
    assert served["paths"].keys() == document()["paths"].keys()
    async with run.session.get(run.api + "/api/v1/openapi.json") as resp:
        assert resp.status == 401


async def test_a_path_no_route_matches_is_answered_in_json(start_appliance: Any) -> None:
    """A rule id with a brace cannot fill a route's ``{id}``: the API still answers JSON."""
    run = await start_appliance()
    for method, path in (
        ("POST", "/api/v1/rules/%7Bx%7D/enable"),
        ("GET", "/api/v1/no-such-thing"),
    ):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with run.session.request(method, run.api + path, headers=headers) as resp:
            assert resp.status == 404, path
            assert resp.content_type == "application/json", path
            assert "error" in await resp.json()


def incidents(port: int) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/incidents", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return list(json.loads(resp.read())["incidents"])


def send_syslog(port: int, lines: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for line in lines:
            s.sendto(line.encode(), ("127.0.0.1", port))


# One run over every operation against one appliance. Split by tag into four parts (each its
# own appliance, st process and schema load, so that under xdist they ran side by side) it
# cost ~12 s more CPU (30.5 s against 17-19 s, appliance included) for a shorter wall time
# only where cores are idle. One st run with --workers above 1 is not an option: hypothesis
# is not thread-safe there (a SystemError from ast.parse at --workers 4).
@pytest.mark.slow(seconds=30)  # ~18 s of CPU at 30 examples (st ~10 s, the appliance the rest)
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (test extra)")
    api_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "appliance.toml"
    write_config(config, tmp_path / "data", api_port, [udp_port])
    proc = Proc(config, api_port)
    try:
        proc.wait_healthy()
        # Something to find: SSH failures that raise a brute-force incident, and other lines.
        send_syslog(
            udp_port,
            [line.decode() for line in brute_force("203.0.113.9")]
            + ["<13>Nov 29 10:01:00 fw1 kernel: hello world"],
        )
        deadline = time.monotonic() + 20
        while not incidents(api_port):
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        result = subprocess.run(
            [
                st,
                "run",
                f"http://127.0.0.1:{api_port}/api/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--max-examples",
                os.environ.get("APPLIANCE_SCHEMATHESIS_EXAMPLES", "30"),
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--suppress-health-check",
                "all",
                "--request-timeout",
                "20",
                "--seed",
                "17",
            ],
            capture_output=True,
            text=True,
            timeout=280,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
        (tmp_path / "schemathesis.out").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-4000:]
        assert proc.p.poll() is None, proc.log()
    finally:
        proc.kill()


def test_the_readme_api_table_lists_every_documented_route() -> None:
    """The README's API table names each route (a row may list several: `/resolve`, ...)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## API\n") : readme.index("\n## ", readme.index("## API\n") + 1)]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    missing = []
    for method, path in sorted(documented()):
        last = "/" + path.rsplit("/", 1)[-1]
        if not any(
            f"`{method} {path}`" in row or (method in row and f"`{last}`" in row) for row in rows
        ):
            missing.append(f"{method} {path}")
    assert missing == []
