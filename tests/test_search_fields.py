"""The search API's field registry covers what the decoders emit: every field decoded from the
shared corpus is known, so no filter on a real field is refused as unknown."""

from __future__ import annotations

import calendar

import pytest

from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.store.fields import KNOWN_FIELDS, FieldRegistry
from tests.conftest import corpus_dir

pytestmark = [pytest.mark.corpus]
NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def test_every_field_decoded_from_the_corpus_is_known() -> None:
    registry = FieldRegistry(max_learned=0)
    unknown: dict[str, str] = {}
    for family in ("syslog", "json"):
        for path in sorted(corpus_dir(family).iterdir()):
            if path.suffix not in (".log", ".jsonl") or ".expected" in path.name:
                continue
            with path.open("rb") as fh:
                for raw in fh:
                    line = raw.rstrip(b"\r\n")
                    if not line:
                        continue
                    msg = decode_syslog(line, NOW)
                    fields = syslog_fields(msg, "192.0.2.1")
                    REGISTRY.decode(msg, fields)
                    for name in fields:
                        if not registry.known(name):
                            unknown.setdefault(name, path.name)
    assert unknown == {}, "add these to appliance/store/fields.py KNOWN_FIELDS"


def test_learned_names_are_bounded() -> None:
    registry = FieldRegistry(max_learned=2)
    registry.learn(["a.one", "a.two", "a.three", next(iter(KNOWN_FIELDS))])
    assert registry.learned == {"a.one", "a.two"}
    assert not registry.known("a.three")
