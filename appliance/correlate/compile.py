"""Sigma detections compiled to an intermediate form, and that form to Python predicates.

pySigma parses a rule and resolves its condition (``1 of sel*``, ``all of them``, modifiers)
into a tree of AND/OR/NOT over ``field = value`` leaves; :class:`Compiler` turns that tree into
plain data (the intermediate form, described below), and :class:`Predicates` turns the form
into nested closures over an event's flat ``fields`` dict, once at load time. The native data
plane evaluates the same form (``appliance._dataplane.RuleMatcher``), so the two backends are
built from one description; the closures are the reference. Semantics follow the Sigma
specification:

- string values match case-insensitively unless the ``cased`` modifier is used; ``*`` and
  ``?`` are wildcards; a field holding a list matches when any element matches;
- ``null`` matches a missing, null or empty field; ``exists`` tests presence;
- ``re`` uses RE2 (linear time, no backtracking blow-up); a pattern longer than the configured
  limit or one RE2 cannot compile (back-references, look-around) fails the rule;
- ``cidr`` tests IP membership; ``lt/lte/gt/gte`` compare numbers; ``fieldref`` compares two
  fields; ``base64``/``base64offset``/``wide``/``windash`` arrive as expanded value lists;
- keywords (values without a field) search the ``message`` field, case-insensitively.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from appliance.correlate.mapping import Unsupported, map_field

Fields = dict[str, Any]
Predicate = Callable[[Fields], bool]
ValueTest = Callable[[Any], bool]

_MISSING = object()


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _any_of(test: ValueTest) -> ValueTest:
    """Lift a scalar test to Sigma's list semantics: a list field matches if any item does."""

    def t(v: Any) -> bool:
        if isinstance(v, list):
            return any(test(x) for x in v)
        return test(v)

    return t


@lru_cache(maxsize=65_536)
def ip_int(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an IP address text, or ``None``; cached (bounded), because
    ``cidr`` rules meet the same addresses over and over (every flow record, every firewall
    line) and parsing one with :mod:`ipaddress` costs more than the rest of the test."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return addr.version, int(addr)


class NetworkSet:
    """Membership of an address text in a rule's networks (``field|cidr: [a, b, ...]``).

    The answer per text is memoized (bounded, least recently used first out): a flow rule asks
    it of every record, and the same internal and external addresses come back over and over,
    so the usual test is one cache probe instead of a parse and a mask per network.
    """

    MEMO_MAX = 65_536

    def __init__(self, cidrs: list[SigmaCIDRExpression] | list[str]) -> None:
        # (version, network as integer, netmask as integer)
        nets = [ipaddress.ip_network(c) if isinstance(c, str) else c.network for c in cidrs]
        networks = [(n.version, int(n.network_address), int(n.netmask)) for n in nets]

        @lru_cache(maxsize=self.MEMO_MAX)
        def member(text: str) -> bool:
            addr = ip_int(text)
            if addr is None:
                return False
            version, value = addr
            return any(v == version and value & mask == base for v, base, mask in networks)

        self.networks = networks
        self.member = member  # address text -> bool

    def contains(self, v: Any) -> bool:
        return self.member(_as_text(v))


# ------------------------------------------------------------------ the intermediate form
#
# A detection compiles to plain data (lists, strings, numbers, booleans: JSON as it is), so
# the Python closures below and the native evaluator (``appliance._dataplane.RuleMatcher``)
# are built from the same description and cannot drift apart. Conditions:
#
#   ["and", [c, ...]]  ["or", [c, ...]]  ["not", c]
#   ["eq", field, [value, ...], [lower-cased value, ...]]   plain strings, case-insensitive
#   ["cidr", field, ["10.0.0.0/8", ...]]                    address in any network
#   ["null", field]  ["exists", field, want]  ["ref", field, other field]
#   ["kw", needle, cased]       a plain keyword in ``message`` (needle lower-cased unless cased)
#   ["msg", test]               a keyword with wildcards etc.: the value test on ``message``
#   ["field", field, test]      the value test on the field (a list: any item)
#
# Value tests:
#
#   ["any", [test, ...]]                 an expanded value list (base64offset, windash, ...)
#   ["str", kind, literal, cased]        kind: eq, all, contains, starts, ends (literal folded)
#   ["glob", [part, ...], cased]         anchored; a part is literal text, 0 for *, 1 for ?
#   ["bool", want]  ["num", number, its text]  ["cmp", op, number] (lt, lte, gt, gte, neq)
#   ["re", pattern, flags]               flags: any of "ims"
#   ["net", ["10.0.0.0/8", ...]]

IR = list[Any]

GLOB_MULTI = 0
GLOB_SINGLE = 1


class Compiler:
    """pySigma's condition tree to the intermediate form (no predicate is built here)."""

    def __init__(self, max_regex_length: int = 1000) -> None:
        self.max_regex_length = max_regex_length

    # ----------------------------------------------------------------------------- tree

    def condition(self, node: Any) -> IR:
        if isinstance(node, ConditionAND):
            return ["and", [self.condition(a) for a in node.args]]
        if isinstance(node, ConditionOR):
            fast = self._plain_set(node) or self._cidr_set(node)
            if fast is not None:
                return fast
            return ["or", [self.condition(a) for a in node.args]]
        if isinstance(node, ConditionNOT):
            (inner,) = [self.condition(a) for a in node.args]
            return ["not", inner]
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.field_test(map_field(node.field), node.value)
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value)
        raise Unsupported(f"condition element {type(node).__name__} is not supported")

    def keyword(self, value: Any) -> IR:
        if isinstance(value, SigmaString) and not value.contains_special():
            needle = value.to_plain()
            if not isinstance(value, SigmaCasedString):
                return ["kw", needle.lower(), False]
            return ["kw", needle, True]
        return ["msg", self.value_test(value, contains=True)]

    def field_test(self, field: str, value: Any) -> IR:
        if isinstance(value, SigmaNull):
            return ["null", field]
        if isinstance(value, SigmaExists):
            return ["exists", field, bool(value.exists)]
        if isinstance(value, SigmaFieldReference):
            return ["ref", field, map_field(value.field)]
        if _is_plain(value):
            return _plain_equal(field, [value.to_plain()])
        if isinstance(value, SigmaCIDRExpression):
            return ["cidr", field, [str(value.network)]]
        return ["field", field, self.value_test(value)]

    def _plain_set(self, node: ConditionOR) -> IR | None:
        """``field: [a, b, c]`` (plain strings, one field): one set probe instead of an OR."""
        fields = set()
        values: dict[str, None] = {}
        for a in node.args:
            if not isinstance(a, ConditionFieldEqualsValueExpression) or not _is_plain(a.value):
                return None
            fields.add(a.field)
            values[a.value.to_plain()] = None
        if len(fields) != 1:
            return None
        return _plain_equal(map_field(fields.pop()), list(values))

    def _cidr_set(self, node: ConditionOR) -> IR | None:
        """``field|cidr: [a, b, c]`` (one field): one memoized membership test, not an OR."""
        fields = set()
        nets = []
        for a in node.args:
            if not isinstance(a, ConditionFieldEqualsValueExpression) or not isinstance(
                a.value, SigmaCIDRExpression
            ):
                return None
            fields.add(a.field)
            nets.append(str(a.value.network))
        if len(fields) != 1:
            return None
        return ["cidr", map_field(fields.pop()), nets]

    # ---------------------------------------------------------------------------- values

    def value_test(self, value: Any, contains: bool = False) -> IR:
        if isinstance(value, SigmaExpansion):
            return ["any", [self.value_test(v, contains) for v in value.values]]
        if isinstance(value, SigmaString):
            return self.string_test(value, contains)
        if isinstance(value, SigmaBool):
            return ["bool", bool(value.boolean)]
        if isinstance(value, SigmaNumber):
            return ["num", value.number, str(value.number)]
        if isinstance(value, SigmaCompareExpression):
            return ["cmp", _CMP.get(value.op, "neq"), value.number.number]
        if isinstance(value, SigmaRegularExpression):
            return self.regex_test(value)
        if isinstance(value, SigmaCIDRExpression):
            return ["net", [str(value.network)]]
        raise Unsupported(f"value type {type(value).__name__} is not supported")

    def string_test(self, value: SigmaString, contains: bool = False) -> IR:
        if value.contains_placeholder():
            raise Unsupported("placeholders (expand modifier) are not supported")
        cased = isinstance(value, SigmaCasedString)
        parts = list(value.s)
        multi = SpecialChars.WILDCARD_MULTI
        single = SpecialChars.WILDCARD_SINGLE
        if contains:
            parts = [multi, *parts, multi]
        # Collapse runs of '*'
        norm: list[Any] = []
        for p in parts:
            if p is multi and norm and norm[-1] is multi:
                continue
            norm.append(p)
        has_single = any(p is single for p in norm)
        literals = [p for p in norm if isinstance(p, str)]
        stars = [i for i, p in enumerate(norm) if p is multi]
        if not has_single and len(literals) <= 1:
            lit = literals[0] if literals else ""
            if not cased:
                lit = lit.lower()
            n = len(norm)
            if not stars:
                return ["str", "eq", lit, cased]
            if n == 1:  # just '*': anything present
                return ["str", "all", lit, cased]
            if stars == [0, n - 1]:
                return ["str", "contains", lit, cased]
            if stars == [0]:
                return ["str", "ends", lit, cased]
            if stars == [n - 1]:
                return ["str", "starts", lit, cased]
        glob: list[str | int] = [
            GLOB_MULTI if p is multi else GLOB_SINGLE if p is single else p for p in norm
        ]
        return ["glob", glob, cased]

    @staticmethod
    def regex_test(value: SigmaRegularExpression) -> IR:
        flags = ""
        if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
            flags += "i"
        if SigmaRegularExpressionFlag.MULTILINE in value.flags:
            flags += "m"
        if SigmaRegularExpressionFlag.DOTALL in value.flags:
            flags += "s"
        return ["re", value.regexp.to_plain(), flags]


_CMP = {
    CompareOperators.LT: "lt",
    CompareOperators.LTE: "lte",
    CompareOperators.GT: "gt",
    CompareOperators.GTE: "gte",
}


def _plain_equal(field: str, values: list[str]) -> IR:
    return ["eq", field, values, [v.lower() for v in values]]


def filtered(rule: IR, flt: IR) -> IR:
    """A detection with a Sigma filter applied: both must hold (rule first)."""
    return ["and", [rule, flt]]


# ------------------------------------------------------------- the Python evaluator (reference)


class Predicates:
    """The intermediate form to nested closures, once at load time, so matching an event is
    a few dict probes and string operations, no interpretation. This is the reference the
    native evaluator is held to (tests/test_rule_matcher_equivalence.py)."""

    def __init__(self, max_regex_length: int = 1000) -> None:
        self.max_regex_length = max_regex_length

    def condition(self, ir: IR) -> Predicate:
        tag = ir[0]
        if tag == "and":
            preds = [self.condition(a) for a in ir[1]]
            if len(preds) == 1:
                return preds[0]
            if len(preds) == 2:
                a, b = preds
                return lambda f: a(f) and b(f)

            def all_of(f: Fields) -> bool:  # a loop: no generator per event
                for p in preds:  # noqa: SIM110
                    if not p(f):
                        return False
                return True

            return all_of
        if tag == "or":
            preds = [self.condition(a) for a in ir[1]]
            if len(preds) == 1:
                return preds[0]
            if len(preds) == 2:
                a, b = preds
                return lambda f: a(f) or b(f)

            def any_of(f: Fields) -> bool:  # a loop: no generator per event
                for p in preds:  # noqa: SIM110
                    if p(f):
                        return True
                return False

            return any_of
        if tag == "not":
            inner = self.condition(ir[1])
            return lambda f: not inner(f)
        if tag == "eq":
            return self._plain_equal(ir[1], frozenset(ir[2]), frozenset(ir[3]))
        if tag == "cidr":
            return self._in_networks(ir[1], ir[2])
        if tag == "null":
            field = ir[1]
            return lambda f: f.get(field) in (None, "", [])
        if tag == "exists":
            field, want = ir[1], ir[2]
            return lambda f: (f.get(field) is not None) is want
        if tag == "ref":
            field, other = ir[1], ir[2]

            def ref(f: Fields) -> bool:
                a, b = f.get(field, _MISSING), f.get(other, _MISSING)
                return a is not _MISSING and a == b

            return ref
        if tag == "kw":
            needle, cased = ir[1], ir[2]
            if not cased:

                def kw(f: Fields) -> bool:
                    m = f.get("message")
                    return m is not None and needle in _as_text(m).lower()

                return kw

            return lambda f: needle in _as_text(f.get("message", ""))
        if tag == "msg":
            test = self.value_test(ir[1])
            return lambda f: (m := f.get("message")) is not None and test(m)
        if tag == "field":
            field = ir[1]
            test = _any_of(self.value_test(ir[2]))
            return lambda f: (v := f.get(field)) is not None and test(v)
        raise Unsupported(f"unknown condition {tag!r} in the compiled form")

    @staticmethod
    def _in_networks(field: str, cidrs: list[str]) -> Predicate:
        nets = NetworkSet(cidrs)
        member = nets.member
        slow = _any_of(nets.contains)

        def in_networks(f: Fields) -> bool:
            v = f.get(field)
            if v.__class__ is str:
                return member(v)
            return v is not None and slow(v)

        return in_networks

    @staticmethod
    def _plain_equal(field: str, exact: frozenset[str], lowered: frozenset[str]) -> Predicate:
        """Case-insensitive equality with any of the values: the hot path of most rules."""
        slow = _any_of(lambda v: _as_text(v).lower() in lowered)

        def eq(f: Fields) -> bool:
            v = f.get(field)
            if v.__class__ is str:
                return v in exact or v.lower() in lowered
            return v is not None and slow(v)

        return eq

    # ---------------------------------------------------------------------------- values

    def value_test(self, ir: IR) -> ValueTest:
        tag = ir[0]
        if tag == "any":
            tests = [self.value_test(v) for v in ir[1]]
            return lambda v: any(t(v) for t in tests)
        if tag == "str":
            return self.string_test(ir[1], ir[2], ir[3])
        if tag == "glob":
            return self.glob_test(ir[1], ir[2])
        if tag == "bool":
            want_b = ir[1]
            text = "true" if want_b else "false"
            return lambda v: v is want_b or (isinstance(v, str) and v.lower() == text)
        if tag == "num":
            num, text = ir[1], ir[2]
            return lambda v: (
                v == num if isinstance(v, int | float) and not isinstance(v, bool) else v == text
            )
        if tag == "cmp":
            return self.compare_test(ir[1], ir[2])
        if tag == "re":
            pattern, flags = ir[1], ir[2]
            rx = self._re2((f"(?{flags})" if flags else "") + pattern)
            return lambda v: rx.search(_as_text(v)) is not None
        if tag == "net":
            return NetworkSet(ir[1]).contains
        raise Unsupported(f"unknown value test {tag!r} in the compiled form")

    @staticmethod
    def string_test(kind: str, lit: str, cased: bool) -> ValueTest:
        fold: Callable[[str], str] = (lambda s: s) if cased else str.lower
        if kind == "eq":
            if cased:
                return lambda v: _as_text(v) == lit
            return lambda v: _as_text(v).lower() == lit
        if kind == "all":
            return lambda v: True
        if kind == "contains":
            return lambda v: lit in fold(_as_text(v))
        if kind == "ends":
            return lambda v: fold(_as_text(v)).endswith(lit)
        if kind == "starts":
            return lambda v: fold(_as_text(v)).startswith(lit)
        raise Unsupported(f"unknown string test {kind!r} in the compiled form")

    def glob_test(self, parts: list[str | int], cased: bool) -> ValueTest:
        """A general glob: RE2, anchored."""
        out = []
        for p in parts:
            if p == GLOB_MULTI and not isinstance(p, str):
                out.append(".*")
            elif p == GLOB_SINGLE and not isinstance(p, str):
                out.append(".")
            else:
                out.append(re2.escape(p))
        pattern = ("" if cased else "(?i)") + "(?s)^" + "".join(out) + "$"
        rx = self._re2(pattern)
        return lambda v: rx.search(_as_text(v)) is not None

    def _re2(self, pattern: str) -> Any:
        if len(pattern) > self.max_regex_length:
            raise Unsupported(
                f"regular expression longer than rules.max_regex_length ({self.max_regex_length})"
            )
        try:
            opts = re2.Options()
            opts.log_errors = False
            return re2.compile(pattern, opts)
        except re2.error as exc:
            raise Unsupported(f"regular expression not supported by RE2: {exc}") from None

    @staticmethod
    def compare_test(op: str, num: float) -> ValueTest:
        def to_num(v: Any) -> float | None:
            if isinstance(v, bool):
                return None
            if isinstance(v, int | float):
                return v
            try:
                return float(v)
            except (TypeError, ValueError):
                return None

        if op == "lt":
            return lambda v: (x := to_num(v)) is not None and x < num
        if op == "lte":
            return lambda v: (x := to_num(v)) is not None and x <= num
        if op == "gt":
            return lambda v: (x := to_num(v)) is not None and x > num
        if op == "gte":
            return lambda v: (x := to_num(v)) is not None and x >= num
        return lambda v: (x := to_num(v)) is not None and x != num


def _is_plain(value: Any) -> bool:
    return (
        isinstance(value, SigmaString)
        and not isinstance(value, SigmaCasedString)
        and not value.contains_special()
    )


# ------------------------------------------------------------------------------ pre-filters


def required_values(node: Any, field: str) -> frozenset[str] | None:
    """Lower-cased values ``field`` must equal for ``node`` to match, or ``None`` if unknown.

    Used to index rules by ``event.action``: a rule whose condition is an AND containing
    ``event.action: [a, b]`` is met only by events whose action is a or b.
    """
    if isinstance(node, ConditionFieldEqualsValueExpression):
        try:
            mapped = map_field(node.field)
        except Unsupported:
            return None
        v = node.value
        if (
            mapped == field
            and isinstance(v, SigmaString)
            and not v.contains_special()
            and not isinstance(v, SigmaCasedString)
        ):
            return frozenset({v.to_plain().lower()})
        return None
    if isinstance(node, ConditionAND):
        found: frozenset[str] | None = None
        for a in node.args:
            r = required_values(a, field)
            if r is not None:
                found = r if found is None else found & r
        return found
    if isinstance(node, ConditionOR):
        acc: set[str] = set()
        for a in node.args:
            r = required_values(a, field)
            if r is None:
                return None
            acc |= r
        return frozenset(acc)
    return None


def _longest_literal(value: Any) -> str | None:
    if not isinstance(value, SigmaString) or value.contains_placeholder():
        return None
    parts = [p for p in value.s if isinstance(p, str)]
    if not parts:
        return None
    best = max(parts, key=len)
    return best.lower() if len(best) >= 3 else None


def required_tokens(node: Any) -> frozenset[str] | None:
    """Lower-cased substrings of ``message`` of which at least one must occur for a match.

    ``None`` when no such set is known. Lets keyword rules (most SigmaHQ Linux rules) be
    skipped with one lower-casing of the message per event and a few ``in`` tests, instead of
    running every rule's predicate.
    """
    if isinstance(node, ConditionValueExpression):
        tok = _longest_literal(node.value)
        return frozenset({tok}) if tok else None
    if isinstance(node, ConditionFieldEqualsValueExpression):
        try:
            field = map_field(node.field)
        except Unsupported:
            return None
        if field != "message":
            return None
        tok = _longest_literal(node.value)
        return frozenset({tok}) if tok else None
    if isinstance(node, ConditionOR):
        acc: set[str] = set()
        for a in node.args:
            r = required_tokens(a)
            if r is None:
                return None
            acc |= r
        return frozenset(acc)
    if isinstance(node, ConditionAND):
        options = [r for a in node.args if (r := required_tokens(a)) is not None]
        return min(options, key=len) if options else None
    return None
