"""The composition root: an appliance owns its components, incident hooks and routes."""

from __future__ import annotations

from typing import Any

import appliance
from appliance.composition import api_route_setups, component_builders


async def test_two_appliances_in_one_process_keep_their_own_incident_hooks(
    start_appliance: Any,
) -> None:
    seen: list[str] = []

    async def hook(conn: Any, doc: dict) -> None:
        seen.append(doc["id"])

    first = await start_appliance(incident_hooks=[hook])
    assert hook in first.app.incident_hooks
    await first.app.stop()  # one appliance per data_dir at a time
    second = await start_appliance()
    assert hook not in second.app.incident_hooks
    assert first.app.incident_hooks is not second.app.incident_hooks


def test_components_and_routes_are_listed_once_in_the_composition_root() -> None:
    builders = component_builders()
    assert len(builders) == len(set(builders))
    setups = api_route_setups()
    assert len(setups) == len(set(setups))


def test_no_module_keeps_a_process_wide_list_of_hooks_or_builders() -> None:
    import pkgutil
    from importlib import import_module

    names = ("INCIDENT_TXN_HOOKS", "ROUTE_HOOKS", "COMPONENT_BUILDERS")
    for info in pkgutil.walk_packages(appliance.__path__, "appliance."):
        if info.name.endswith(("_dataplane", "__main__")):
            continue
        module = import_module(info.name)
        for name in names:
            assert not hasattr(module, name), f"{info.name}.{name}"


async def test_the_api_finds_each_running_component_under_its_own_key(
    start_appliance: Any,
) -> None:
    from appliance.analysis.context import AnalysisComponent
    from appliance.api.components import ANALYSIS_KEY, CORRELATION_KEY, FORWARDER_KEY, NOTIFY_KEY
    from appliance.correlate.component import CorrelationComponent
    from appliance.forward import Forwarder
    from appliance.notify.engine import NotifyEngine

    run = await start_appliance()
    assert run.app.api is not None
    served = run.app.api.app
    for key, kind in (
        (CORRELATION_KEY, CorrelationComponent),
        (FORWARDER_KEY, Forwarder),
        (NOTIFY_KEY, NotifyEngine),
        (ANALYSIS_KEY, AnalysisComponent),
    ):
        assert served[key] is run.app.component(kind), key


def test_api_handlers_do_not_look_components_up_by_type() -> None:
    """Handlers read their component's AppKey (appliance.api.components); the one lookup by
    type is where the keys are set, when the routes are set up."""
    from pathlib import Path

    root = Path(appliance.__file__).parent
    handlers = [*root.glob("api/*.py"), *root.glob("*/*api.py"), root / "console" / "web.py"]
    for path in handlers:
        if path.name == "components.py":
            continue
        text = path.read_text()
        assert ".component(" not in text and "isinstance(comp" not in text, path
