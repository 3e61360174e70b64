"""Sigma detections compiled to Python predicates over an event's flat ``fields`` dict.

pySigma parses a rule and resolves its condition (``1 of sel*``, ``all of them``, modifiers)
into a tree of AND/OR/NOT over ``field = value`` leaves; this module turns that tree into
nested closures, once at load time, so matching an event is a few dict probes and string
operations, no interpretation. Semantics follow the Sigma specification:

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

    def __init__(self, cidrs: list[SigmaCIDRExpression]) -> None:
        # (version, network as integer, netmask as integer)
        nets = [c.network for c in cidrs]
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


class Compiler:
    def __init__(self, max_regex_length: int = 1000) -> None:
        self.max_regex_length = max_regex_length

    # ----------------------------------------------------------------------------- tree

    def condition(self, node: Any) -> Predicate:
        if isinstance(node, ConditionAND):
            preds = [self.condition(a) for a in node.args]
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
        if isinstance(node, ConditionOR):
            fast = self._plain_set(node) or self._cidr_set(node)
            if fast is not None:
                return fast
            preds = [self.condition(a) for a in node.args]
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
        if isinstance(node, ConditionNOT):
            (inner,) = [self.condition(a) for a in node.args]
            return lambda f: not inner(f)
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.field_test(map_field(node.field), node.value)
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value)
        raise Unsupported(f"condition element {type(node).__name__} is not supported")

    def keyword(self, value: Any) -> Predicate:
        if isinstance(value, SigmaString) and not value.contains_special():
            needle = value.to_plain()
            if not isinstance(value, SigmaCasedString):
                needle = needle.lower()

                def kw(f: Fields) -> bool:
                    m = f.get("message")
                    return m is not None and needle in _as_text(m).lower()

                return kw

            return lambda f: needle in _as_text(f.get("message", ""))
        test = self.value_test(value, contains=True)
        return lambda f: (m := f.get("message")) is not None and test(m)

    def field_test(self, field: str, value: Any) -> Predicate:
        if isinstance(value, SigmaNull):
            return lambda f: f.get(field) in (None, "", [])
        if isinstance(value, SigmaExists):
            want = value.exists
            return lambda f: (f.get(field) is not None) is want
        if isinstance(value, SigmaFieldReference):
            other = map_field(value.field)

            def ref(f: Fields) -> bool:
                a, b = f.get(field, _MISSING), f.get(other, _MISSING)
                return a is not _MISSING and a == b

            return ref
        if _is_plain(value):
            return self._plain_equal(field, frozenset({value.to_plain()}))
        if isinstance(value, SigmaCIDRExpression):
            return self._in_networks(field, [value])
        test = _any_of(self.value_test(value))
        return lambda f: (v := f.get(field)) is not None and test(v)

    def _plain_set(self, node: ConditionOR) -> Predicate | None:
        """``field: [a, b, c]`` (plain strings, one field): one set probe instead of an OR."""
        fields = set()
        values = set()
        for a in node.args:
            if not isinstance(a, ConditionFieldEqualsValueExpression) or not _is_plain(a.value):
                return None
            fields.add(a.field)
            values.add(a.value.to_plain())
        if len(fields) != 1:
            return None
        return self._plain_equal(map_field(fields.pop()), frozenset(values))

    def _cidr_set(self, node: ConditionOR) -> Predicate | None:
        """``field|cidr: [a, b, c]`` (one field): one memoized membership test, not an OR."""
        fields = set()
        nets = []
        for a in node.args:
            if not isinstance(a, ConditionFieldEqualsValueExpression) or not isinstance(
                a.value, SigmaCIDRExpression
            ):
                return None
            fields.add(a.field)
            nets.append(a.value)
        if len(fields) != 1:
            return None
        return self._in_networks(map_field(fields.pop()), nets)

    @staticmethod
    def _in_networks(field: str, values: list[SigmaCIDRExpression]) -> Predicate:
        nets = NetworkSet(values)
        member = nets.member
        slow = _any_of(nets.contains)

        def in_networks(f: Fields) -> bool:
            v = f.get(field)
            if v.__class__ is str:
                return member(v)
            return v is not None and slow(v)

        return in_networks

    @staticmethod
    def _plain_equal(field: str, values: frozenset[str]) -> Predicate:
        """Case-insensitive equality with any of ``values``: the hot path of most rules."""
        exact = values
        lowered = frozenset(v.lower() for v in values)
        slow = _any_of(lambda v: _as_text(v).lower() in lowered)

        def eq(f: Fields) -> bool:
            v = f.get(field)
            if v.__class__ is str:
                return v in exact or v.lower() in lowered
            return v is not None and slow(v)

        return eq

    # ---------------------------------------------------------------------------- values

    def value_test(self, value: Any, contains: bool = False) -> ValueTest:
        if isinstance(value, SigmaExpansion):
            tests = [self.value_test(v, contains) for v in value.values]
            return lambda v: any(t(v) for t in tests)
        if isinstance(value, SigmaString):
            return self.string_test(value, contains)
        if isinstance(value, SigmaBool):
            want_b = value.boolean
            text = "true" if want_b else "false"
            return lambda v: v is want_b or (isinstance(v, str) and v.lower() == text)
        if isinstance(value, SigmaNumber):
            num = value.number
            text = str(num)
            return lambda v: (
                v == num if isinstance(v, int | float) and not isinstance(v, bool) else v == text
            )
        if isinstance(value, SigmaCompareExpression):
            return self.compare_test(value)
        if isinstance(value, SigmaRegularExpression):
            return self.regex_test(value)
        if isinstance(value, SigmaCIDRExpression):
            return NetworkSet([value]).contains
        raise Unsupported(f"value type {type(value).__name__} is not supported")

    def string_test(self, value: SigmaString, contains: bool = False) -> ValueTest:
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
        fold: Callable[[str], str] = (lambda s: s) if cased else str.lower
        if not has_single and len(literals) <= 1:
            lit = fold(literals[0]) if literals else ""
            n = len(norm)
            if not stars:
                if cased:
                    return lambda v: _as_text(v) == lit
                return lambda v: _as_text(v).lower() == lit
            if n == 1:  # just '*': anything present
                return lambda v: True
            if stars == [0, n - 1]:
                return lambda v: lit in fold(_as_text(v))
            if stars == [0]:
                return lambda v: fold(_as_text(v)).endswith(lit)
            if stars == [n - 1]:
                return lambda v: fold(_as_text(v)).startswith(lit)
        # General glob: RE2, anchored.
        out = []
        for p in norm:
            if p is multi:
                out.append(".*")
            elif p is single:
                out.append(".")
            else:
                out.append(re2.escape(p))
        pattern = ("" if cased else "(?i)") + "(?s)^" + "".join(out) + "$"
        rx = self._re2(pattern)
        return lambda v: rx.search(_as_text(v)) is not None

    def regex_test(self, value: SigmaRegularExpression) -> ValueTest:
        pattern = value.regexp.to_plain()
        flags = ""
        if SigmaRegularExpressionFlag.IGNORECASE in value.flags:
            flags += "i"
        if SigmaRegularExpressionFlag.MULTILINE in value.flags:
            flags += "m"
        if SigmaRegularExpressionFlag.DOTALL in value.flags:
            flags += "s"
        rx = self._re2((f"(?{flags})" if flags else "") + pattern)
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
    def compare_test(value: SigmaCompareExpression) -> ValueTest:
        num = value.number.number
        op = value.op

        def to_num(v: Any) -> float | None:
            if isinstance(v, bool):
                return None
            if isinstance(v, int | float):
                return v
            try:
                return float(v)
            except (TypeError, ValueError):
                return None

        if op is CompareOperators.LT:
            return lambda v: (x := to_num(v)) is not None and x < num
        if op is CompareOperators.LTE:
            return lambda v: (x := to_num(v)) is not None and x <= num
        if op is CompareOperators.GT:
            return lambda v: (x := to_num(v)) is not None and x > num
        if op is CompareOperators.GTE:
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
