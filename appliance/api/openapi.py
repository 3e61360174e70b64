"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of the REST API.

Hand-written YAML shipped in the package (``openapi.yaml`` beside this module), because the
prose, parameter syntax and error shapes are what a reader needs and no route metadata holds
them. It stays true to the router by test: ``tests/test_openapi.py`` fails when a route is
undocumented or a documented path has no route, and runs schemathesis against a running
appliance. Served with the read scope like every other ``/api/`` GET (it names no secret, but
it maps the attack surface, and the token middleware needs no exception for it).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from appliance import __version__
from appliance.api.server import json_page


@functools.cache
def document() -> dict[str, Any]:
    text = resources.files("appliance.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    doc["info"]["x-appliance-version"] = __version__
    return doc


async def openapi(request: web.Request) -> web.Response:
    return json_page(document())


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
