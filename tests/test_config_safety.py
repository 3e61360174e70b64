"""Config safety at run time: a reload never silently leaves the appliance deaf, and every
reload is counted by its result."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from appliance.app import ReloadRefused
from appliance.config import parse_config
from tests.conftest import make_config


def reloads(metrics: str, result: str) -> int:
    m = re.search(rf'^appliance_config_reloads_total{{result="{result}"}} (\d+)$', metrics, re.M)
    return int(m.group(1)) if m else 0


async def test_reload_that_removes_every_source_is_refused_and_counted(
    start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance()
    source = run.source()
    bare = make_config(
        tmp_path, sources={"syslog": []}, appliance={"allow_empty": True, "sensor_id": "x"}
    )
    with pytest.raises(ReloadRefused, match="close every listener"):
        await run.app.reload(parse_config(bare, base_dir=tmp_path))
    assert run.app.sources == [source] and source.listening
    assert run.app.config.appliance.sensor_id == "test-01"
    assert reloads(await run.metrics(), "refused") == 1
    assert (await run.get_json("/healthz"))["status"] == "ok"


async def test_applied_reload_is_counted(start_appliance: Any, tmp_path: Path) -> None:
    run = await start_appliance()
    await run.app.reload(parse_config(make_config(tmp_path), base_dir=tmp_path))
    assert reloads(await run.metrics(), "applied") == 1
