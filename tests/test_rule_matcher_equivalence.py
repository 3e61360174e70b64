"""The native rule matcher against the Python predicates, pair for pair: every built-in rule,
every SigmaHQ rule of the shared corpus that loads and a rule file using every modifier,
against every corpus event and generated hostile field values. The native side may leave a
pair undecided (the predicates then answer it); every pair it decides must agree, and the
engine's batch matching must equal its one-event matching."""

from __future__ import annotations

import enum
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.correlate import Engine, load_rules
from appliance.correlate.matcher import NativeMatcher, reference_match, rule_form
from appliance.correlate.replay import parse_line
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from tests.conftest import CORPUS

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

NOW = 1_790_000_000.0

# Detections exercising every part of the compiled form (one file, several documents).
MODIFIERS = [
    "sel: {message|re: '\\d+ fail(ed|ure)s?\\s+for\\b'}\ncondition: sel",
    "sel: {message|re|i: 'USER (root|admin)$'}\ncondition: sel",
    "sel: {message|re|m|s: '^sshd.*$'}\ncondition: sel",
    "sel: {source.ip|cidr: [10.0.0.0/8, 192.168.0.0/16, 'fc00::/7']}\ncondition: sel",
    "sel: {destination.ip|cidr: 172.16.0.0/12}\nflt: {user.name: root}\ncondition: sel or flt",
    "sel: {destination.port|lt: 1024}\ncondition: sel",
    "sel: {destination.port|gte: 8080}\ncondition: sel",
    "sel: {event.duration|gt: 1.5}\ncondition: sel",
    "sel: {source.ip|fieldref: destination.ip}\ncondition: sel",
    "sel: {user.name|exists: true}\nother: {process.name|exists: false}\ncondition: sel and other",
    "sel: {user.name: null}\ncondition: sel",
    "sel: {user.name|cased: Admin}\ncondition: sel",
    "sel: {user.name|contains|cased: dmI}\ncondition: sel",
    "sel: {process.name|startswith: SSH}\ncondition: sel",
    "sel: {process.name|endswith: 'D'}\ncondition: sel",
    "sel: {process.name|contains: [ron, ud]}\ncondition: sel",
    "sel: {process.name: 's?hd'}\ncondition: sel",
    "sel: {process.name: 'c*n*'}\ncondition: sel",
    "sel: {process.name|cased: 'S*d'}\ncondition: sel",
    "sel: {user.name: '*'}\ncondition: sel",
    "sel: {user.name: ['root', 'ADMIN', 'Ünïcode', 'k']}\ncondition: sel",
    "sel: {event.outcome: [success, failure]}\nnot_root: {user.name: root}\n"
    "condition: sel and not not_root",
    "keywords: [invalid user, 'Failed*for', 'SESSION?OPENED']\ncondition: keywords",
    "keywords: ['|all': [sshd, password]]\ncondition: keywords",
    "kw:\n  '|cased': [Accepted]\ncondition: kw",
    "sel: {message|base64offset|contains: 'root'}\ncondition: sel",
    "sel: {message|windash|contains: ' -exec '}\ncondition: sel",
    "sel: {log.syslog.severity.code: 3}\ncondition: sel",
    "sel: {log.syslog.severity.code: '6'}\ncondition: sel",
    "sel: {network.transport: true}\ncondition: sel",
    "sel1: {user.name: root}\nsel2: {process.name: sshd}\ncondition: 1 of sel*",
    "sel1: {user.name: root}\nsel2: {process.name: sshd}\ncondition: all of them",
    "sel: {message|contains|all: [from, port]}\ncondition: sel",
]

HEAD = "title: m{n}\nid: 00000000-0000-4000-8000-{n:012d}\nlogsource: {{product: linux}}\n"


def modifier_rules(tmp: Path) -> Path:
    docs = [
        HEAD.format(n=n) + "detection:\n" + textwrap.indent(d, "  ")
        for n, d in enumerate(MODIFIERS)
    ]
    path = tmp / "modifiers.yml"
    path.write_text("\n---\n".join(docs))
    return path


def all_rules(tmp: Path) -> RuleSet:
    paths = [modifier_rules(tmp)]
    if (CORPUS / "sigma").is_dir():
        paths.append(CORPUS / "sigma")
    rs = load_rules(paths, builtin=True)
    modifier_failures = [f for f in rs.failures if f.path.endswith("modifiers.yml")]
    assert not modifier_failures, modifier_failures
    return rs


def corpus_events() -> Iterator[Event]:
    for sub, pattern in (("syslog", "*.log"), ("syslog", "*.jsonl"), ("json", "*.jsonl")):
        root = CORPUS / sub
        if not root.is_dir():
            continue
        for path in sorted(root.glob(pattern)):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    ev = parse_line(line, NOW)
                except Exception:  # a corpus line the replay format does not take
                    continue
                if ev is not None:
                    yield ev


def literals(node: Any, out: set[str]) -> None:
    if isinstance(node, str):
        out.add(node)
    elif isinstance(node, list):
        for x in node:
            literals(x, out)


def form_fields(rs: RuleSet) -> list[str]:
    names: set[str] = {"message"}

    def walk(node: Any) -> None:
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            return
        tag = node[0]
        if tag in ("eq", "cidr", "null", "exists", "field"):
            names.add(node[1])
        if tag == "ref":
            names.update(node[1:3])
        for x in node[1:]:
            if isinstance(x, list):
                for y in x if x and isinstance(x[0], list) else [x]:
                    walk(y)

    for d in rs.detections:
        walk(d.ir)
    return sorted(names)


HOSTILE_TEXT = [
    "",
    " ",
    "\u212a",  # KELVIN SIGN: lower-cases to ASCII k
    "İstanbul",  # lower-cases to two code points
    "ΣΑΣ",  # final sigma
    "straße",
    "ROOT\u0000",
    "a\x0bb",  # vertical tab: RE2's \s leaves it out
    "\ud800",  # a lone surrogate
    "*",
    "?",
    "\\",
    "\\*",
    "%s%n",
    "😀 emoji",
    "10",
    " 10 ",
    "1e3",
    "1_000",
    "inf",
    "-Infinity",
    "nan",
    "0x10",
    "٣",  # an Arabic-Indic digit: float() reads it
    "10.0.0.1",
    "010.0.0.1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "fd00::1",
    "10.0.0.1/8",
    "192.168.1.300",
    "true",
    "FALSE",
    "None",
]


def mutate(rnd: random.Random, text: str) -> str:
    ops = [
        str.upper,
        str.lower,
        str.swapcase,
        lambda s: s + rnd.choice(HOSTILE_TEXT),
        lambda s: rnd.choice(HOSTILE_TEXT) + s,
        lambda s: s.replace("k", "\u212a").replace("K", "\u212a"),
        lambda s: s.replace("i", "İ"),
        lambda s: s * rnd.randint(2, 4),
        lambda s: "x" * 70_000 + s,
        lambda s: s[: len(s) // 2],
        lambda s: " ".join([s, rnd.choice(HOSTILE_TEXT), s]),
    ]
    for _ in range(rnd.randint(0, 2)):
        text = rnd.choice(ops)(text)
    return text


def hostile_value(rnd: random.Random, pool: list[str]) -> Any:
    r = rnd.random()
    if r < 0.45:
        return mutate(rnd, rnd.choice(pool))
    if r < 0.6:
        return rnd.choice(HOSTILE_TEXT)
    if r < 0.7:
        return rnd.choice([0, 1, 3, 6, 22, 1023, 1024, 8080, -1, 2**53 + 1, 2**70, True, False])
    if r < 0.76:
        return rnd.choice([1.5, 0.1, 3.0, float("nan"), float("inf"), -0.0, 1e300])
    if r < 0.78:
        return None
    if r < 0.9:
        return [hostile_value(rnd, pool) for _ in range(rnd.randint(0, 3))]
    if r < 0.94:
        return [[rnd.choice(pool)], rnd.choice(pool)]
    return rnd.choice(
        [(rnd.choice(pool),), {"k": "v"}, b"root", frozenset(), Text(""), Text("TRUE"), Level.HIGH]
    )


class Text(str):
    """A str subclass (what a decoder's enum of text values may hand over)."""


class Level(enum.IntEnum):
    HIGH = 3


def hostile_events(rs: RuleSet, n: int, seed: int = 15) -> list[Event]:
    rnd = random.Random(seed)
    pool: set[str] = set()
    for d in rs.detections:
        literals(d.ir, pool)
    words = sorted(pool)
    names = form_fields(rs)
    events = []
    for _ in range(n):
        fields = {name: hostile_value(rnd, words) for name in rnd.sample(names, rnd.randint(1, 8))}
        if rnd.random() < 0.5:
            fields["message"] = mutate(rnd, " ".join(rnd.choices(words, k=rnd.randint(1, 6))))
        if rnd.random() < 0.3:
            fields["destination.ip"] = fields.get("source.ip")
        events.append(Event(NOW, NOW, rnd.choice(["syslog", "netflow", "snmp"]), fields))
    return events


def compare_every_pair(rs: RuleSet, events: list[Event]) -> tuple[int, int]:
    """Every rule against every event (no candidate index: the evaluator alone)."""
    dets = rs.detections
    impl = NativeMatcher.build(dets)
    assert impl is not None
    group = impl.impl.group(list(range(len(dets))))
    decided = undecided = 0
    for start in range(0, len(events), 64):
        chunk = events[start : start + 64]
        got = impl.impl.match_dicts([e.fields for e in chunk], [group] * len(chunk))
        native = {(e, r): u for e, r, u in got}
        for i, ev in enumerate(chunk):
            for r, d in enumerate(dets):
                u = native.get((i, r))
                if u is True:
                    undecided += 1
                    continue
                decided += 1
                assert (u is False) == reference_match(d, ev.fields), (d.meta.title, ev.fields)
    return decided, undecided


def test_every_rule_decides_every_corpus_event_as_the_predicates_do(tmp_path: Path) -> None:
    rs = all_rules(tmp_path)
    events = list(corpus_events())
    if not events:
        pytest.skip("corpus not present (set APPLIANCE_CORPUS)")
    decided, undecided = compare_every_pair(rs, events)
    assert len(rs.detections) > 100 and len(events) > 1000
    assert undecided < decided / 50  # nearly every real pair is decided natively


def test_every_rule_decides_hostile_field_values_as_the_predicates_do(tmp_path: Path) -> None:
    rs = all_rules(tmp_path)
    decided, undecided = compare_every_pair(rs, hostile_events(rs, 1500))
    assert decided > undecided


def test_engine_batch_matching_equals_one_event_matching(tmp_path: Path) -> None:
    rs = all_rules(tmp_path)
    events = list(corpus_events())[::7] + hostile_events(rs, 1500, seed=16)
    engine = Engine(rs)
    assert engine._native is not None
    failing = 0
    for start in range(0, len(events), 256):
        chunk = events[start : start + 256]
        try:
            one = [ids(engine.matches(ev)) for ev in chunk]
        except UnicodeEncodeError:  # RE2 refuses a lone surrogate: so must the batch
            failing += 1
            with pytest.raises(UnicodeEncodeError):
                engine.match_batch(chunk)
            continue
        assert [ids(m) for m in engine.match_batch(chunk)] == one
    assert failing < len(events) / 256 / 2


def ids(rules: list[Any]) -> list[str]:
    return [d.meta.id for d in rules]


def test_a_panic_is_counted_and_its_event_goes_to_the_predicates(tmp_path: Path) -> None:
    rs = all_rules(tmp_path)
    engine = Engine(rs)
    native = engine._native
    assert native is not None
    line = "<38>Dec  4 13:00:00 srv1 sshd[1]: Failed password for root from 10.0.0.1 port 22 ssh2"
    ev = parse_line(line, NOW)
    assert ev is not None
    expected = [d.meta.id for d in engine.matches(ev)]
    assert expected
    before = dataplane.native_panics()
    native.impl.inject_panic()
    got = engine.match_batch([ev, ev])
    assert dataplane.native_panics() == before + 1
    assert [[d.meta.id for d in m] for m in got] == [expected, expected]


def test_a_malformed_form_is_refused_with_a_reason() -> None:
    assert dataplane.native is not None
    for doc in ["", "{}", '{"rules": 3}', '{"rules": [{"ir": ["eq", "f"]}]}']:
        try:
            m = dataplane.native.RuleMatcher(doc)
        except ValueError as exc:
            assert str(exc)
        else:  # loaded: the broken rule is left to the predicates, with its reason
            assert all(reason for _i, reason in m.unsupported())
            assert len(m.unsupported()) == len(m)


def test_rules_the_regex_crate_reads_differently_stay_with_the_predicates(
    tmp_path: Path,
) -> None:
    (tmp_path / "r.yml").write_text(
        HEAD.format(n=1) + "detection:\n  sel: {message|re: '[a-z&&[^c]]x'}\n  condition: sel\n"
    )
    rs = load_rules([tmp_path], builtin=False)
    form = rule_form(rs.detections)
    assert dataplane.native is not None
    m = dataplane.native.RuleMatcher(form)
    ((index, reason),) = m.unsupported()
    assert index == 0 and "&&" in reason
    engine = Engine(rs)
    ev = Event(NOW, NOW, "syslog", {"message": "b&x"})
    assert [d.meta.id for d in engine.match_batch([ev])[0]] == [
        d.meta.id for d in engine.matches(ev)
    ]


def test_observe_after_prepare_raises_the_alerts_of_observe_alone(tmp_path: Path) -> None:
    rs = all_rules(tmp_path)
    events = [ev for ev in corpus_events() if ev.module == "syslog"][:3000]
    if not events:
        pytest.skip("corpus not present (set APPLIANCE_CORPUS)")
    batched, alone = Engine(rs), Engine(all_rules(tmp_path))
    got, want = [], []
    for start in range(0, len(events), 256):
        chunk = events[start : start + 256]
        batched.prepare(chunk)
        for ev in chunk:
            got += [(a.rule.id, a.group_key, a.count) for a in batched.observe(ev, NOW)]
            want += [(a.rule.id, a.group_key, a.count) for a in alone.observe(ev, NOW)]
        batched.prepare([])
    assert got == want and want


async def test_the_appliance_matches_natively_and_exports_its_fallbacks(
    start_appliance: Any,
) -> None:
    from appliance.correlate.component import CorrelationComponent
    from tests.test_syslog_udp import send_udp

    run = await start_appliance()
    comp = next(c for c in run.app.components if isinstance(c, CorrelationComponent))
    native = comp.engine._native
    assert native is not None
    calls = {"n": 0}
    real = native.impl

    class Counting:  # the real matcher, its batch calls counted
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def match_dicts(self, *args: Any) -> Any:
            calls["n"] += 1
            return real.match_dicts(*args)

    native.impl = Counting()
    feeds = comp.engine._feeds

    class CountingFeeds:  # observe_batch's native calls (they match with the same matcher)
        def __getattr__(self, name: str) -> Any:
            return getattr(feeds, name)

        def run(self, *args: Any) -> Any:
            calls["n"] += 1
            return feeds.run(*args)

    if feeds is not None:
        comp.engine._feeds = CountingFeeds()
    send_udp(
        run.source().address,
        b"<38>sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
        "<38>sshd[2]: Failed password for \u212aevin from 203.0.113.9 port 22 ssh2".encode(),
    )
    await run.wait_stored(2)
    await run.wait_for(lambda: calls["n"] >= 1)
    text = await run.metrics()
    assert 'appliance_rules_native_fallbacks{reason="batch_failed"} 0' in text
    assert 'appliance_rules_native_fallbacks{reason="rule_unsupported"} 0' in text
    assert 'appliance_rules_native_fallbacks{reason="undecided"}' in text
    assert "appliance_correlation_events_native " in text


def test_candidate_groups_read_natively_are_the_engines_own() -> None:
    """``memo_groups`` (the signature read and looked up in Rust, one met again in the call
    known by its objects) gives each event the group the engine's own signature and memo
    give it: lists and tuples of categories, an empty list against None, unhashable values,
    other modules."""
    engine = Engine(load_rules([], builtin=True))
    r = random.Random(5)
    cats: list[Any] = [["network"], ["network", "intrusion_detection"], [], None, "network",
                       ("network",), [["x"]], ["authentication"], [{"a": 1}]]  # fmt: skip
    events = []
    for i in range(600):
        fields: dict[str, Any] = {}
        for name, values in (
            ("event.category", cats),
            ("event.action", [None, "logon-failed", "deny", ["x"]]),
            ("process.name", [None, "sshd", "sudo"]),
            ("observer.vendor", [None, "Fortinet", "Cisco"]),
        ):
            v = r.choice(values)
            if v is not None or r.random() < 0.5:
                fields[name] = v
        module = r.choice(["netflow", "syslog", "snmp"])
        events.append(Event(1.0, 1.0, module, fields))
        if i % 3 == 0:  # runs of the same objects, as one source's events
            events.append(Event(1.0, 1.0, module, dict(fields)))
    fast, slow = NativeMatcher.build(engine.ruleset.detections), engine._native
    assert fast is not None and slow is not None

    class Slow:  # the same matcher with the native memo read switched off
        def __getattr__(self, name: str) -> Any:
            return getattr(slow_impl, name)

        def memo_groups(self, events: list[Event], memo: Any) -> list[int]:
            return [-1] * len(events)

    slow_impl = slow.impl
    slow.impl = Slow()
    for i in range(0, len(events), 64):
        chunk = events[i : i + 64]
        assert fast.groups_for(engine, chunk) == slow.groups_for(engine, chunk)
    assert fast.groups == slow.groups


def test_candidate_groups_take_only_the_category_list_as_its_tuple() -> None:
    """The engine's signature makes a tuple of an ``event.category`` list only: an event
    whose process.name is the list ``["a"]`` has an unhashable signature (its candidates
    worked out each time), not the group of one whose process.name is the tuple
    ``("a",)``."""
    engine = Engine(load_rules([], builtin=True))
    events = [Event(1.0, 1.0, "syslog", {"process.name": ("a",)}),
              Event(1.0, 1.0, "syslog", {"process.name": ["a"]})]  # fmt: skip
    fast, slow = NativeMatcher.build(engine.ruleset.detections), engine._native
    assert fast is not None and slow is not None
    slow_impl = slow.impl

    class Slow:  # the same matcher with the native memo read switched off
        def __getattr__(self, name: str) -> Any:
            return getattr(slow_impl, name)

        def memo_groups(self, events: list[Event], memo: Any) -> list[int]:
            return [-1] * len(events)

    slow.impl = Slow()
    for _ in range(2):  # the second time the memo has the tuple's signature
        assert fast.groups_for(engine, events) == slow.groups_for(engine, events)
