"""One Python target under atheris, in a process of its own (libFuzzer exits when done).

``python -m tests.fuzz.run_one TARGET [libFuzzer arguments...]``; ``scripts/fuzz`` builds the
arguments. The appliance's modules are imported under atheris's instrumentation so their
branches steer the search; the harness and third-party libraries are not instrumented.
"""

from __future__ import annotations

import importlib
import sys

import atheris

from tests.fuzz.targets import PYTHON_TARGETS


def main() -> None:
    name = sys.argv[1]
    with atheris.instrument_imports(include=["appliance"]):
        module = importlib.import_module(f"tests.fuzz.targets.{PYTHON_TARGETS[name]}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], module.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
