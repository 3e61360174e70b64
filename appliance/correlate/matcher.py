"""Detections matched a batch at a time by the native data plane.

The engine's stateless half: which detections an event matches. The rules' compiled form
(:mod:`appliance.correlate.compile`) goes to ``appliance._dataplane.RuleMatcher`` once; per
batch, the engine's candidate sets (its logsource/action index, memoized on the same
signature as :meth:`Engine.candidates`) are handed over as group numbers with the events'
fields, and the matches come back. What the native side cannot decide exactly as the Python
predicates would (non-ASCII text against case-folded literals, floats printed as text, a
caught panic) comes back marked undecided and is answered by the predicates, so the result
is the reference's (tests/test_rule_matcher_equivalence.py holds both to it).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from appliance import dataplane
from appliance.correlate.rules import DetectionRule
from appliance.event import Event

if TYPE_CHECKING:
    from appliance.correlate.engine import Engine

log = logging.getLogger(__name__)


def reference_match(d: DetectionRule, fields: dict[str, Any]) -> bool:
    """One rule against one event as :meth:`Engine.matches` decides it (pre-filter, then the
    predicate)."""
    toks = d.tokens
    if toks is not None:
        m = fields.get("message")
        msg_l = str(m).lower() if m is not None else ""
        if not any(t in msg_l for t in toks):
            return False
    return d.predicate(fields)


def rule_form(detections: list[DetectionRule]) -> str:
    """The document ``RuleMatcher`` is built from: each rule's form and pre-filter tokens."""
    return json.dumps(
        {
            "rules": [
                {"ir": d.ir, "tokens": None if d.tokens is None else sorted(d.tokens)}
                for d in detections
            ]
        },
        ensure_ascii=False,
        allow_nan=False,
    )


class NativeMatcher:
    # Candidate groups registered before the native side's list is cleared (the candidate
    # signatures are a handful per source type; this bounds hostile variety).
    MAX_GROUPS = 8192

    def __init__(self, impl: Any, detections: list[DetectionRule]) -> None:
        self.impl = impl
        self.detections = detections
        self.number = {id(d): i for i, d in enumerate(detections)}
        self.groups: dict[Any, int] = {}
        self.registered = 0
        self.undecided = 0  # (event, rule) pairs the predicates answered
        self.failures = 0  # batches the native side failed on (all went to the predicates)
        self.python_only = impl.unsupported()  # [(rule index, reason)]

    @classmethod
    def build(cls, detections: list[DetectionRule]) -> NativeMatcher | None:
        """The native matcher, or None on the Python backend (or if the form is refused,
        which is logged: the predicates then match everything)."""
        if dataplane.native is None:
            return None
        try:
            impl = dataplane.native.RuleMatcher(rule_form(detections))
        except ValueError as exc:
            log.warning("native rule matcher refused the ruleset (%s): using the predicates", exc)
            return None
        return cls(impl, detections)

    def groups_for(self, engine: Engine, events: list[Event]) -> list[int]:
        """Each event's candidate group number (its candidates registered on first sight)."""
        impl = self.impl
        if self.registered + len(events) > self.MAX_GROUPS:
            impl.clear_groups()
            self.groups.clear()
            self.registered = 0
        memo = self.groups
        number = self.number
        groups: list[int] = impl.memo_groups(events, memo)
        if -1 not in groups:  # every signature memoised (a stream's usual slice): no loop
            return groups
        for i, known in enumerate(groups):
            if known >= 0:
                continue
            ev = events[i]  # (a native flow batch makes this one's event only)
            sig = engine._signature(ev)
            try:
                g = memo.get(sig)
                hashable = True
            except TypeError:  # an unhashable value in an index field
                g, hashable = None, False
            if g is None:
                g = impl.group([number[id(d)] for d in engine.candidates(ev)])
                self.registered += 1
                if hashable:
                    memo[sig] = g
            groups[i] = g
        return groups

    def match_batch(self, engine: Engine, events: list[Event]) -> list[list[DetectionRule]]:
        groups = self.groups_for(engine, events)
        decisions = self.impl.match_dicts([ev.fields for ev in events], groups)
        out: list[list[DetectionRule]] = [[] for _ in events]
        dets = self.detections
        for e, r, undecided in decisions:
            d = dets[r]
            if undecided:
                self.undecided += 1
                if not reference_match(d, events[e].fields):
                    continue
            out[e].append(d)
        return out

    def resolve(self, ev: Event, decisions: list[tuple[int, int, bool]]) -> list[DetectionRule]:
        """One event's decisions as its matches (the undecided ones asked of the predicates)."""
        out: list[DetectionRule] = []
        dets = self.detections
        for _e, r, undecided in decisions:
            d = dets[r]
            if undecided:
                self.undecided += 1
                if not reference_match(d, ev.fields):
                    continue
            out.append(d)
        return out
