"""A blocking program for the exec-action tests: ``blocklist_tool.py FILE add|del VALUE``.

It keeps one value a line in FILE (a real file another process can read) and appends every
argv it was called with, as JSON, to FILE.calls, so a test sees exactly which arguments
arrived and how many there were.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[2] not in ("add", "del"):
        print(f"usage: {argv[0]} FILE add|del VALUE", file=sys.stderr)
        return 2
    path, verb, value = Path(argv[1]), argv[2], argv[3]
    with path.with_suffix(".calls").open("a", encoding="utf-8") as log:
        log.write(json.dumps(argv[1:]) + "\n")
    with path.open("a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        lines = [x for x in f.read().splitlines() if x]
        if verb == "add" and value not in lines:
            lines.append(value)
        elif verb == "del":
            lines = [x for x in lines if x != value]
        f.seek(0)
        f.truncate()
        f.write("".join(x + "\n" for x in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
