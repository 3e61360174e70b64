"""The native ``Event`` (``appliance._dataplane.Event``, what ``appliance.event.Event`` is on
the native backend) behaves as the reference dataclass does: construction and defaults,
attributes, ``==``, hashing, ``repr``, ``changed``/``get``/``to_ecs``, pickling and copying;
subclasses keep their overrides, and what the batch calls make is that class."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref
from typing import Any

import pytest

from appliance import dataplane
from appliance.event import Event, ReferenceEvent
from appliance.metrics import Registry

pytestmark = pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")

NATIVE: Any = dataplane.native.Event if dataplane.native is not None else None
NAMES = ("timestamp", "created", "module", "fields", "raw", "id", "line", "listener")
FULL = (1.5, 2.5, "syslog", {"host.name": "a"}, b"raw", 7, b'{"x":1}', "edge")


def both(*args: Any, **kwargs: Any) -> tuple[Any, ReferenceEvent]:
    return NATIVE(*args, **kwargs), ReferenceEvent(*args, **kwargs)


def values(ev: Any) -> tuple[Any, ...]:
    return tuple(getattr(ev, n) for n in NAMES)


def test_the_module_exports_the_native_class_on_the_native_backend() -> None:
    assert Event is NATIVE
    assert (NATIVE.__module__, NATIVE.__qualname__) == ("appliance.event", "Event")


def test_omitted_arguments_take_the_dataclass_defaults() -> None:
    n, r = both(1.0, 2.0, "netflow")
    assert values(n) == values(r) == (1.0, 2.0, "netflow", {}, b"", None, None, "")


def test_each_event_gets_its_own_default_fields_dict() -> None:
    a, b = NATIVE(1.0, 2.0, "m"), NATIVE(1.0, 2.0, "m")
    a.fields["k"] = 1
    assert b.fields == {}


@pytest.mark.parametrize("keywords", [False, True])
def test_every_argument_is_kept_as_given(keywords: bool) -> None:
    if keywords:
        n, r = both(**dict(zip(NAMES, FULL, strict=True)))
    else:
        n, r = both(*FULL)
    assert values(n) == values(r) == FULL
    assert n.fields is FULL[3]


def test_attributes_can_be_set_and_read_back() -> None:
    n = NATIVE(1.0, 2.0, "m")
    for name, value in zip(NAMES, FULL, strict=True):
        setattr(n, name, value)
    assert values(n) == FULL


def test_unknown_attributes_are_refused_as_by_a_slotted_class() -> None:
    n, r = both(1.0, 2.0, "m")
    for ev in (n, r):
        with pytest.raises(AttributeError):
            ev.other = 1  # type: ignore[union-attr]


def test_equality_compares_every_attribute_within_the_class() -> None:
    a, b = NATIVE(*FULL), NATIVE(*FULL)
    assert (a == b, a != b) == (True, False)
    b.id = 8
    assert (a == b, a != b) == (False, True)
    assert NATIVE(*FULL) != ReferenceEvent(*FULL)  # another class: never equal, as dataclasses
    assert NATIVE(*FULL) != FULL


def test_events_are_unhashable_as_dataclasses_with_eq_are() -> None:
    n, r = both(1.0, 2.0, "m")
    for ev in (n, r):
        with pytest.raises(TypeError, match="unhashable"):
            hash(ev)


def test_repr_is_the_dataclass_repr() -> None:
    n, r = both(*FULL)
    assert repr(n) == repr(r)


def test_changed_drops_the_stored_line() -> None:
    n, r = both(*FULL)
    n.changed()
    r.changed()
    assert n.line is None and r.line is None


def test_get_reads_the_fields_with_a_default() -> None:
    n, r = both(*FULL)
    for ev in (n, r):
        assert ev.get("host.name") == "a"
        assert ev.get("nope") is None
        assert ev.get("nope", 3) == 3


def test_to_ecs_is_the_reference_document() -> None:
    n, r = both(*FULL)
    assert n.to_ecs("sensor-1") == r.to_ecs("sensor-1")
    assert n.to_ecs() == r.to_ecs()


def test_pickle_and_copy_give_an_equal_event() -> None:
    n = NATIVE(*FULL)
    assert pickle.loads(pickle.dumps(n)) == n
    c = copy.copy(n)
    assert c == n and c is not n and c.fields is n.fields
    d = copy.deepcopy(n)
    assert d == n and d.fields is not n.fields


def test_a_subclass_keeps_its_properties_in_repr_equality_and_native_reads() -> None:
    class Tagged(NATIVE):  # type: ignore[misc, valid-type]
        @property
        def module(self) -> str:
            return "tagged"

    t = Tagged(1.0, 2.0, "syslog")
    assert t.module == "tagged"
    assert "module='tagged'" in repr(t)
    assert t == Tagged(1.0, 2.0, "other")
    assert dataplane.native is not None
    # A native reader (the store's segment rows) takes the subclass's attributes by name.
    rows = dataplane.native.segment_rows_with_ids([t], 5, 10)
    assert t.id == 5 and rows is None  # no line: the reference makes the rows


def test_an_event_in_a_reference_cycle_is_collected() -> None:
    class Marker:
        pass

    n, m = NATIVE(1.0, 2.0, "m"), Marker()
    n.fields["self"] = n
    n.fields["marker"] = m
    gone = weakref.ref(m)
    del n, m
    gc.collect()
    assert gone() is None


def test_the_batch_decoders_make_native_events() -> None:
    from appliance.config import SyslogSource
    from appliance.sources.syslog_intake import SyslogIntake

    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["127.0.0.0/8"], rate_limit=0.0)
    intake = SyslogIntake(cfg, [], metrics, "udp")
    line = b"<38>Jan  5 10:00:00 srv1 sshd[1]: Failed password for root from 1.2.3.4 port 5 ssh2"
    got = intake.datagrams([(line, ("127.0.0.1", 514))], 1.79e9, 8192, 8192, dropped, truncated)
    assert len(got) == 1 and type(got[0]) is NATIVE
    ev = got[0]
    assert ev.fields["source.ip"] == "1.2.3.4" and ev.raw == line and ev.line
