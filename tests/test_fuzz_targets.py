"""Every fuzz target's seeds pass through its harness once, without the fuzzer.

So a harness that no longer matches its parser's API, or a committed crash reproducer whose bug
came back, fails the ordinary suite instead of waiting for a ``scripts/fuzz`` run.
"""

from __future__ import annotations

import importlib
import itertools

import pytest

from tests.fuzz.targets import PYTHON_TARGETS

# Seeds per target in this replay: the fuzz run takes them all; here a sample keeps it quick.
SAMPLE = 300


@pytest.mark.parametrize("target", sorted(PYTHON_TARGETS))
def test_seeds_meet_the_target_contract(target: str) -> None:
    if target == "config":
        pytest.importorskip("atheris")  # its structured mode uses atheris' data provider
    module = importlib.import_module(f"tests.fuzz.targets.{PYTHON_TARGETS[target]}")
    if not getattr(module, "AVAILABLE", True):
        pytest.skip("a native-only target: the data plane is not loaded (APPLIANCE_NATIVE=0)")
    seeds = list(itertools.islice(module.seeds(), SAMPLE))
    assert seeds
    for seed in seeds:
        module.one_input(seed[: module.MAX_LEN])
