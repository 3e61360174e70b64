"""What the fuzz targets share: where their seeds come from and the checks every output meets.

Seeds are built when a run starts, from the shared real-data corpus (``$APPLIANCE_CORPUS``,
default ``../shared/corpus`` beside the repository; it is never copied in) plus the small
hand-made seeds in ``tests/fuzz/seeds/<target>/`` and the ones each target builds in code.
Without the shared corpus the targets still run, from their own seeds only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from appliance.store.segments import encode_line

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("APPLIANCE_CORPUS", ROOT / ".." / "shared" / "corpus")).resolve()
SEEDS = Path(__file__).resolve().with_name("seeds")


def corpus_dir(sub: str) -> Path | None:
    """``$APPLIANCE_CORPUS/sub`` when it exists (fuzzing goes on without it)."""
    path = CORPUS / sub
    return path if path.is_dir() else None


def committed_seeds(target: str) -> Iterator[bytes]:
    """Hand-made seeds and past crash reproducers kept in the repository for ``target``."""
    folder = SEEDS / target
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                yield path.read_bytes()


def spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items taken evenly across ``items``: big log files (loghub has 2,000
    lines of one program) would otherwise spend a short run replaying near-duplicates."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def corpus_lines(
    sub: str, per_file: int = 150, suffixes: Iterable[str] = (".log",)
) -> Iterator[tuple[str, bytes]]:
    """(file stem, line) for the non-empty lines of every corpus file in ``sub``."""
    root = corpus_dir(sub)
    if root is None:
        return
    wanted = tuple(suffixes)
    for path in sorted(root.iterdir()):
        if path.suffix in wanted and ".expected" not in path.name:
            lines = [line for line in path.read_bytes().splitlines() if line.strip()]
            for line in spread(lines, per_file):
                yield path.stem, line


def stored_json(fields: dict[str, Any], what: str) -> bytes:
    """The line the store would write for an event with ``fields``; fields it cannot encode are
    a bug in the parser that made them (the event would fail at insert time, far from its
    cause)."""
    try:
        return encode_line(0.0, 0.0, "fuzz", fields, b"")
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise AssertionError(f"{what} is not storable: {exc}: {fields!r}") from None


def finite_or_none(value: object, what: str) -> None:
    assert value is None or (isinstance(value, float) and math.isfinite(value)), (
        f"{what}: {value!r} is neither None nor a finite float"
    )
