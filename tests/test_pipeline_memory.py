"""What a queued event holds in memory: its stored line is no larger than its bytes."""

from __future__ import annotations

import tracemalloc

from appliance.store.segments import encode_line


def test_an_encoded_line_holds_no_buffer_beyond_its_own_bytes() -> None:
    # orjson hands back its output buffer unshrunk (4-8 KiB for a 1 KB line); a line waits in
    # the pipeline queue, so the slack would be held once per queued event.
    fields = {"message": "m" * 600, "host.hostname": "h", "log.syslog.priority": 13}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        line = encode_line(1000.0, 1000.0, "syslog", fields, b"<13>" + b"r" * 250)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 900 < len(line) < 1024
    assert held < len(line) + 128, f"{held} bytes held for a {len(line)}-byte line"
