"""Rule matching, the native evaluator against the Python predicates of the same form.

Input: the compiled form of one detection (JSON text, as ``compile.py`` emits it), then the
values of four fields, each section after a 0xFF byte (which UTF-8 never holds). A field
section's first byte picks its type: ``s`` text, ``i`` integer, ``f`` float, ``l`` a list
(items split at ``,``), ``n`` None; anything else leaves the field out. The Rust target
``rust-rules`` reads the same layout with coverage from the Rust code.

A pair the native side decides differently from the predicates, or a panic it caught
(counted by ``panics()``), is a failure; an undecided pair is allowed (the engine asks the
predicates). Forms the predicates refuse only check that the native side does not panic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from appliance import dataplane
from appliance.correlate.compile import Predicates
from appliance.correlate.rules import builtin_rule_files, load_rules

MAX_LEN = 4096
__all__ = ["AVAILABLE", "MAX_LEN", "one_input", "seeds"]
AVAILABLE = dataplane.native is not None
FIELDS = ("message", "user.name", "source.ip", "destination.port")
SEP = b"\xff"


def value(section: bytes) -> tuple[bool, Any]:
    """(present, value) of one field section."""
    if not section:
        return False, None
    tag, body = section[:1], section[1:].decode("utf-8", "replace")
    if tag == b"s":
        return True, body
    if tag == b"i":
        try:
            return True, int(body.strip() or "0")
        except ValueError:
            return True, len(body)
    if tag == b"f":
        try:
            return True, float(body.strip() or "0")
        except ValueError:
            return True, len(body) / 3
    if tag == b"l":
        return True, body.split(",")
    if tag == b"n":
        return True, None
    return False, None


def parse(data: bytes) -> tuple[bytes, dict[str, Any]]:
    form, *sections = data.split(SEP)
    fields: dict[str, Any] = {}
    for name, section in zip(FIELDS, sections, strict=False):
        present, v = value(section)
        if present:
            fields[name] = v
    return form, fields


def seeds() -> Iterator[bytes]:
    rules = load_rules([f for f in builtin_rule_files()][:40], builtin=False)
    samples = [
        [b"sFailed password for root from 10.0.0.1 port 22 ssh2", b"sroot", b"s10.0.0.1", b"i22"],
        [b"saccepted publickey", b"sADMIN", b"sfd00::1", b"s8080"],
        [b"l\xe2\x84\xaa,root", b"n", b"f1.5", b"i1023"],
    ]
    for i, d in enumerate(rules.detections):
        yield SEP.join([json.dumps(d.ir).encode(), *samples[i % len(samples)]])


def one_input(data: bytes) -> None:
    native = dataplane.native
    if native is None:
        return
    form, fields = parse(data)
    doc = b'{"rules": [{"ir": ' + form + b', "tokens": null}]}'
    panics = dataplane.native_panics()
    try:
        matcher = native.RuleMatcher(doc.decode("utf-8", "replace"))
    except ValueError:  # not a document: refused with a reason, not a panic
        assert dataplane.native_panics() == panics, "the rule loader panicked"
        return
    group = matcher.group([0])
    got = matcher.match_dicts([fields], [group])
    assert dataplane.native_panics() == panics, "the rule matcher panicked"
    try:
        predicate = Predicates().condition(json.loads(form))
        expected = bool(predicate(fields))
    except Exception:  # a form compile.py never emits, or one the predicates choke on
        return
    if got and got[0][2]:  # undecided: the engine asks the predicates
        return
    assert bool(got) == expected, f"native {bool(got)} != predicates {expected} for {fields!r}"
