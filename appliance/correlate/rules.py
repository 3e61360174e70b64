"""Loading Sigma rules (built-in and user folders) into compiled detections and correlations.

Each ``.yml`` file is parsed by pySigma on its own, so one broken file fails only its rules;
every rule that cannot be used is kept as a :class:`RuleFailure` with the reason (shown by
``GET /api/v1/rules`` and ``appliance test-rule``). Correlation rules reference detections by
id or name across all loaded files.

Appliance extensions are one Sigma custom attribute, ``appliance:`` (documented in
``appliance/rules/README.md``)::

    appliance:
      group_by: [source.ip]                  # incident key for a single-event detection
      suppress: {by: [source.ip], for: 1h}   # dedup key + cooldown; suppressed hits counted
      absence: {by: [observer.ip], for: 15m} # alert when a group seen before goes silent
      baseline: {by: [source.ip], interval: 5m, k: 3, alpha: 0.2, warmup: 12, min_count: 20}
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.conditions import ConditionOR
from sigma.correlations import (
    CorrelationConditionAND,
    CorrelationConditionItem,
    CorrelationConditionNOT,
    CorrelationConditionOR,
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationTimespan,
    SigmaCorrelationType,
    SigmaExtendedCorrelationCondition,
    SigmaRuleReference,
)
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.rule import SigmaDetections, SigmaRule

from appliance.correlate.compile import (
    IR,
    Compiler,
    Predicate,
    Predicates,
    filtered,
    required_tokens,
    required_values,
)
from appliance.correlate.mapping import (
    SourceMatch,
    Unsupported,
    map_field,
    map_logsource,
    translate_values,
)

LEVELS = ("informational", "low", "medium", "high", "critical")
SUPPORTED_CORRELATIONS = {
    SigmaCorrelationType.EVENT_COUNT,
    SigmaCorrelationType.VALUE_COUNT,
    SigmaCorrelationType.TEMPORAL,
    SigmaCorrelationType.TEMPORAL_ORDERED,
    SigmaCorrelationType.VALUE_SUM,
    SigmaCorrelationType.VALUE_AVG,
    SigmaCorrelationType.VALUE_PERCENTILE,
    SigmaCorrelationType.VALUE_MEDIAN,
}
OPS = {
    SigmaCorrelationConditionOperator.LT: "lt",
    SigmaCorrelationConditionOperator.LTE: "lte",
    SigmaCorrelationConditionOperator.GT: "gt",
    SigmaCorrelationConditionOperator.GTE: "gte",
    SigmaCorrelationConditionOperator.EQ: "eq",
    SigmaCorrelationConditionOperator.NEQ: "neq",
}

# Comparisons of a correlation condition (the mapping's keys besides field/percentile).
Bounds = tuple[tuple[str, float], ...]
CONDITION_OPS = frozenset(OPS.values())


def make_check(op: str, threshold: float) -> Callable[[float], bool]:
    """The condition as one bound comparison (no per-event dispatch on the operator)."""
    t = threshold
    return {
        "gte": t.__le__,
        "gt": t.__lt__,
        "lte": t.__ge__,
        "lt": t.__gt__,
        "eq": t.__eq__,
        "neq": t.__ne__,
    }[op]


def make_range_check(bounds: Bounds) -> Callable[[float], bool]:
    """Several comparisons in one condition mapping (``gt: 100`` and ``lte: 200``): the Sigma
    specification links them with AND, which makes a range."""
    checks = tuple(make_check(op, t) for op, t in bounds)

    def in_range(v: float) -> bool:
        return all(chk(v) for chk in checks)

    return in_range


def empty_range(bounds: Bounds) -> bool:
    """True when no value satisfies every comparison (``gt: 10`` with ``lt: 5``): such a
    condition can never fire, which is a mistake in the rule, not a quiet rule."""
    lo, lo_strict, hi, hi_strict = -math.inf, False, math.inf, False
    for op, t in bounds:
        if op in ("gt", "gte") and (t > lo or (t == lo and op == "gt")):
            lo, lo_strict = t, op == "gt"
        elif op in ("lt", "lte") and (t < hi or (t == hi and op == "lt")):
            hi, hi_strict = t, op == "lt"
    if lo > hi or (lo == hi and (lo_strict or hi_strict)):
        return True
    eqs = [t for op, t in bounds if op == "eq"]
    return any(not all(compare(op, e, t) for op, t in bounds) for e in eqs)


def compare(op: str, value: float, threshold: float) -> bool:
    if op == "gte":
        return value >= threshold
    if op == "gt":
        return value > threshold
    if op == "lte":
        return value <= threshold
    if op == "lt":
        return value < threshold
    if op == "eq":
        return value == threshold
    return value != threshold


@dataclass(slots=True)
class RuleMeta:
    id: str
    title: str
    level: str
    tags: list[str]
    path: str
    description: str = ""
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "level": self.level, "tags": self.tags}


@dataclass(slots=True)
class Suppress:
    by: tuple[str, ...]
    cooldown: float


@dataclass(slots=True)
class Absence:
    by: tuple[str, ...]
    timespan: float


@dataclass(slots=True)
class Baseline:
    by: tuple[str, ...]
    interval: float
    k: float = 3.0
    alpha: float = 0.2
    warmup: int = 12
    min_count: int = 10


@dataclass(slots=True)
class DetectionRule:
    meta: RuleMeta
    predicate: Predicate
    source: SourceMatch
    actions: frozenset[str] | None  # required event.action values (index), None = any
    tokens: frozenset[str] | None = None  # one must be in the lower-cased message (pre-filter)
    group_by: tuple[str, ...] = ()
    suppress: Suppress | None = None
    absence: Absence | None = None
    baseline: Baseline | None = None
    generate: bool = True  # alerts on its own (False when only a correlation's input)
    parents: list[CorrelationRule] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)  # Sigma filters applied (their titles)
    # The compiled condition (appliance.correlate.compile): ``predicate`` is built from it,
    # and the native matcher evaluates it.
    ir: IR = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.absence:
            return "absence"
        if self.baseline:
            return "baseline"
        return "detection"


MAX_BOOL_RULES = {"temporal": 12, "temporal_ordered": 6}

# A boolean condition in negation normal form: ("pos", i) "rule i is part of the match",
# ("neg", i) "rule i did not occur in the window", ("and"|"or", [children]).
Nnf = tuple[str, Any]


@dataclass(slots=True)
class BoolCondition:
    """A temporal correlation's boolean condition (``a and (b or not c)``) over the rule's
    references by index (bit i of a mask is ``refs[i]``).

    temporal: ``table[seen]`` is the condition's value when the rules of mask ``seen``
    occurred in the window. temporal_ordered: ``table[pos << k | seen]`` is its value when
    the rules of mask ``pos`` occurred in the rules' order (the chain) and those of ``seen``
    occurred at all (``pos`` within ``seen``): a rule the condition wants is satisfied by the
    chain, a rule it negates by not occurring. Precomputed at load (2^k or 2^2k entries, k
    bounded by :data:`MAX_BOOL_RULES`), so a window pays one index per event, not a walk of
    the expression."""

    text: str
    names: list[str]  # the references as the rule wrote them, by index
    ordered: bool
    table: bytes


def _nnf(node: Any, index: dict[str, int], negate: bool = False) -> Nnf:
    """pySigma's condition tree in negation normal form (De Morgan), leaves as indices."""
    if isinstance(node, SigmaRuleReference):
        return ("neg" if negate else "pos", index[node.reference])
    if isinstance(node, CorrelationConditionNOT):
        return _nnf(node.args[0], index, not negate)
    if isinstance(node, CorrelationConditionAND | CorrelationConditionOR):
        is_and = isinstance(node, CorrelationConditionAND) != negate
        return ("and" if is_and else "or", [_nnf(a, index, negate) for a in node.args])
    raise Unsupported(f"unexpected element in the boolean condition: {type(node).__name__}")


def _eval_nnf(n: Nnf, pos: int, seen: int) -> bool:
    kind, arg = n
    if kind == "pos":
        return bool(pos >> arg & 1)
    if kind == "neg":
        return not seen >> arg & 1
    if kind == "and":
        return all(_eval_nnf(c, pos, seen) for c in arg)
    return any(_eval_nnf(c, pos, seen) for c in arg)


def bool_condition(
    text: str, tree: CorrelationConditionItem | SigmaRuleReference, names: list[str], ordered: bool
) -> BoolCondition:
    nnf = _nnf(tree, {n: i for i, n in enumerate(names)})
    k = len(names)
    if not ordered:
        table = bytes(_eval_nnf(nnf, m, m) for m in range(1 << k))
        possible = any(table[1:])
    else:
        t = bytearray(1 << (2 * k))
        for seen in range(1 << k):
            pos = seen  # every subset of seen, down to the empty one
            while True:
                t[pos << k | seen] = _eval_nnf(nnf, pos, seen)
                if not pos:
                    break
                pos = (pos - 1) & seen
        table = bytes(t)
        possible = any(t[m << k | m] for m in range(1, 1 << k))
    # Evaluated when an event of a referenced rule arrives, so some rule has occurred: a
    # condition false for every non-empty set of rules (``not a``) could never fire.
    if not possible:
        raise Unsupported(f"the condition '{text}' can never be true once a referenced rule occurs")
    return BoolCondition(text, names, ordered, table)


@dataclass(slots=True)
class CorrelationRule:
    meta: RuleMeta
    type: str
    refs: list[str]  # referenced rule ids, in order
    group_by: tuple[str, ...]
    timespan: float
    op: str
    threshold: float
    fieldref: str | None
    aliases: dict[str, dict[str, str]]  # alias -> {rule id -> field}
    generate: bool = False
    suppress: Suppress | None = None
    parents: list[CorrelationRule] = field(default_factory=list)
    check: Callable[[float], bool] = field(default=lambda v: False, repr=False)
    percentile: float | None = None  # value_percentile's; value_median uses the median
    # More comparisons ANDed with (op, threshold): a range (``gt: 100`` and ``lte: 200``).
    more: Bounds = ()
    # The other fields of a value_count over several fields (their distinct combinations).
    more_fields: tuple[str, ...] = ()
    # temporal/temporal_ordered with a boolean condition over the referenced rules.
    expr: BoolCondition | None = None

    def __post_init__(self) -> None:
        if self.more:
            self.check = make_range_check(((self.op, self.threshold), *self.more))
        else:
            self.check = make_check(self.op, self.threshold)

    @property
    def kind(self) -> str:
        return self.type

    def condition_detail(self) -> dict[str, float] | str:
        """The condition as the rule wrote it: the mapping of its comparisons, or the boolean
        expression (an incident's ``detail.condition``: why it fired)."""
        if self.expr is not None:
            return self.expr.text
        return dict(((self.op, self.threshold), *self.more))

    def group_field(self, alias: str, rule_id: str) -> str:
        m = self.aliases.get(alias)
        if m is not None and rule_id in m:
            return m[rule_id]
        return alias


@dataclass(slots=True)
class RuleFailure:
    path: str
    title: str
    id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "title": self.title, "id": self.id, "reason": self.reason}


@dataclass
class RuleSet:
    detections: list[DetectionRule] = field(default_factory=list)
    correlations: list[CorrelationRule] = field(default_factory=list)
    failures: list[RuleFailure] = field(default_factory=list)
    # Sigma filters (meta rules), compiled; applied to the detections they name, never
    # matched on their own.
    filters: list[tuple[DetectionRule, list[str]]] = field(default_factory=list)

    def all_rules(self) -> list[DetectionRule | CorrelationRule]:
        """Detections then correlations (one list of the union, for callers that read both)."""
        return [*self.detections, *self.correlations]

    def by_id(self) -> dict[str, DetectionRule | CorrelationRule]:
        out: dict[str, DetectionRule | CorrelationRule] = {}
        for r in self.all_rules():
            out[r.meta.id] = r
        return out


# ----------------------------------------------------------------------------------- loading


def builtin_rule_files() -> list[Path]:
    root = resources.files("appliance.rules")
    return sorted(Path(str(p)) for p in _walk(Path(str(root))))


def _walk(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()]


def rule_files(paths: list[Path], builtin: bool) -> tuple[list[Path], list[RuleFailure]]:
    files: list[Path] = builtin_rule_files() if builtin else []
    failures = []
    for p in paths:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(_walk(p)))
        else:
            failures.append(RuleFailure(str(p), "", None, "rules path does not exist"))
    return files, failures


def _timespan(value: Any, what: str) -> float:
    try:
        return float(SigmaCorrelationTimespan(str(value)).seconds)
    except SigmaError as exc:
        raise Unsupported(f"{what}: {exc}") from None


def _fields(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unsupported(f"{what}: expected a list of field names")
    return tuple(map_field(v) for v in value)


def _extensions(custom: dict[str, Any]) -> dict[str, Any]:
    ext = custom.get("appliance") or {}
    if not isinstance(ext, dict):
        raise Unsupported("custom attribute 'appliance' must be a mapping")
    unknown = set(ext) - {"group_by", "suppress", "absence", "baseline"}
    if unknown:
        raise Unsupported(f"unknown appliance extension(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {"group_by": _fields(ext.get("group_by"), "appliance.group_by")}
    if (s := ext.get("suppress")) is not None:
        if not isinstance(s, dict) or "for" not in s:
            raise Unsupported("appliance.suppress needs 'for' (a timespan) and 'by' (fields)")
        out["suppress"] = Suppress(_fields(s.get("by"), "suppress.by"), _timespan(s["for"], "for"))
    if (a := ext.get("absence")) is not None:
        if not isinstance(a, dict) or "for" not in a:
            raise Unsupported("appliance.absence needs 'for' (a timespan) and 'by' (fields)")
        out["absence"] = Absence(_fields(a.get("by"), "absence.by"), _timespan(a["for"], "for"))
    if (b := ext.get("baseline")) is not None:
        if not isinstance(b, dict) or "interval" not in b:
            raise Unsupported("appliance.baseline needs 'interval' (a timespan) and 'by'")
        try:
            out["baseline"] = Baseline(
                _fields(b.get("by"), "baseline.by"),
                _timespan(b["interval"], "interval"),
                k=float(b.get("k", 3.0)),
                alpha=float(b.get("alpha", 0.2)),
                warmup=int(b.get("warmup", 12)),
                min_count=int(b.get("min_count", 10)),
            )
        except (TypeError, ValueError) as exc:
            raise Unsupported(f"appliance.baseline: {exc}") from None
    return out


def _meta(rule: SigmaRule | SigmaCorrelationRule, path: Path) -> RuleMeta:
    level = rule.level.name.lower() if rule.level is not None else "medium"
    return RuleMeta(
        id=str(rule.id) if rule.id else f"{path.stem}:{rule.title}",
        title=rule.title,
        level=level,
        tags=[str(t) for t in rule.tags],
        path=str(path),
        description=rule.description or "",
        name=rule.name,
    )


def _detection(rule: SigmaRule, path: Path, compiler: Compiler) -> DetectionRule:
    ls = rule.logsource
    source = map_logsource(ls.product, ls.category, ls.service)
    conds = rule.detection.parsed_condition
    if not conds:
        raise Unsupported("the detection has no condition")
    # Several conditions (a YAML list) each stand on their own: the rule matches when any
    # does (Sigma specification), which is their OR, so the prefilters stay exact.
    tree = conds[0].parsed if len(conds) == 1 else ConditionOR([c.parsed for c in conds])
    translate_values(tree)
    ir = compiler.condition(tree)
    predicate = Predicates(compiler.max_regex_length).condition(ir)
    actions = required_values(tree, "event.action")
    ext = _extensions(rule.custom_attributes)
    return DetectionRule(
        meta=_meta(rule, path),
        predicate=predicate,
        source=source,
        actions=actions,
        tokens=required_tokens(tree),
        group_by=ext["group_by"],
        suppress=ext.get("suppress"),
        absence=ext.get("absence"),
        baseline=ext.get("baseline"),
        ir=ir,
    )


def _correlation(
    rule: SigmaCorrelationRule, path: Path, ranges: dict[int, Bounds | str]
) -> CorrelationRule:
    if rule.type not in SUPPORTED_CORRELATIONS:
        raise Unsupported(f"correlation type {rule.type.name.lower()} is not supported")
    cond = rule.condition
    refs = [r.reference for r in (rule.rules or [])]
    custom = {k: v for k, v in rule.custom_attributes.items() if k != "correlation"}
    ext = _extensions(custom)
    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {ref.reference: map_field(f) for ref, f in alias.mapping.items()}
    ctype = rule.type.name.lower()
    common: dict[str, Any] = {
        "meta": _meta(rule, path),
        "type": ctype,
        "group_by": tuple(g if g in aliases else map_field(g) for g in (rule.group_by or [])),
        "timespan": float(rule.timespan.seconds),
        "aliases": aliases,
        "generate": bool(rule.generate),
        "suppress": ext.get("suppress"),
    }
    if isinstance(cond, SigmaExtendedCorrelationCondition):
        # pySigma has checked that the rules list (when given) and the condition name the
        # same rules; without a list, the condition's references in order are the rules.
        names = list(dict.fromkeys(refs or cond.get_referenced_rules()))
        if len(names) > MAX_BOOL_RULES[ctype]:
            raise Unsupported(
                f"a boolean condition over more than {MAX_BOOL_RULES[ctype]} rules is not"
                f" supported for {ctype}"
            )
        expr = bool_condition(cond.expression, cond.parsed, names, ctype == "temporal_ordered")
        return CorrelationRule(
            **common, refs=names, op="gte", threshold=1.0, fieldref=None, expr=expr
        )
    if not isinstance(cond, SigmaCorrelationCondition):
        raise Unsupported(f"unexpected correlation condition {type(cond).__name__}")
    fieldrefs: list[str] = []
    if isinstance(cond.fieldref, list):
        fieldrefs = [str(f) for f in cond.fieldref]
        if not fieldrefs:
            raise Unsupported("condition.field is an empty list")
        if len(fieldrefs) > 1 and rule.type != SigmaCorrelationType.VALUE_COUNT:
            raise Unsupported(f"{ctype} reads one numeric field; condition.field lists several")
    elif cond.fieldref:
        fieldrefs = [cond.fieldref]
    percentile: float | None = None
    if rule.type == SigmaCorrelationType.VALUE_PERCENTILE:
        if cond.percentile is None or not 0 < cond.percentile <= 100:
            raise Unsupported("value_percentile needs condition.percentile (1-100)")
        percentile = float(cond.percentile)
    bounds = ranges.get(id(rule.custom_attributes.get("correlation")))
    if isinstance(bounds, str):
        raise Unsupported(bounds)
    if bounds is None:
        bounds = ((OPS[cond.op], float(cond.count)),)
    elif empty_range(bounds):
        text = " and ".join(f"{op}: {t:g}" for op, t in bounds)
        raise Unsupported(f"the condition's comparisons ({text}) are never all true")
    mapped = [map_field(f) for f in fieldrefs]
    return CorrelationRule(
        **common,
        refs=refs,
        op=bounds[0][0],
        threshold=bounds[0][1],
        fieldref=mapped[0] if mapped else None,
        percentile=percentile,
        more=bounds[1:],
        more_fields=tuple(mapped[1:]),
    )


def _split_ranges(docs: list[Any]) -> tuple[list[Any], dict[int, Bounds | str]]:
    """Correlation conditions with several comparisons (the specification's range: ``gt: 100``
    and ``lte: 200``, ANDed) are refused by pySigma 2 ("must have exactly one condition
    item"), which fails the whole file. Each such document goes to pySigma with its first
    comparison only; every comparison is kept here, by the identity of the ``correlation``
    mapping pySigma keeps in the rule's custom attributes. A value that is not a number is
    kept as the reason the rule fails."""
    out: list[Any] = []
    ranges: dict[int, Bounds | str] = {}
    for doc in docs:
        corr = doc.get("correlation") if isinstance(doc, dict) else None
        cond = corr.get("condition") if isinstance(corr, dict) else None
        ops = [k for k in cond if k in CONDITION_OPS] if isinstance(cond, dict) else []
        if len(ops) < 2:
            out.append(doc)
            continue
        assert isinstance(corr, dict) and isinstance(cond, dict)
        bounds: list[tuple[str, float]] = []
        bad = ""
        for op in ops:
            v = cond[op]
            try:  # as pySigma reads one: a number, or a string of one
                if isinstance(v, bool):
                    raise ValueError
                num = float(v)
                if not math.isfinite(num):
                    raise ValueError
            except (TypeError, ValueError):
                bad = f"condition {op}: {v!r} is not a number"
                break
            bounds.append((op, num))
        first = {k: v for k, v in cond.items() if k not in CONDITION_OPS or k == ops[0]}
        if bad:
            first[ops[0]] = 0
        corr = {**corr, "condition": first}
        ranges[id(corr)] = bad or tuple(bounds)
        out.append({**doc, "correlation": corr})
    return out, ranges


def load_rules(paths: list[Path], *, builtin: bool = True, max_regex_length: int = 1000) -> RuleSet:
    """Parse and compile every rule; failures are collected, never raised."""
    files, failures = rule_files(paths, builtin)
    rs = RuleSet(failures=failures)
    compiler = Compiler(max_regex_length)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            docs = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            rs.failures.append(RuleFailure(str(path), "", None, f"unreadable: {exc}"))
            continue
        except Exception as exc:  # yaml errors
            rs.failures.append(RuleFailure(str(path), "", None, f"unparsable: {exc}"))
            continue
        docs, ranges = _split_ranges(docs)
        for coll in _collections(docs, path, rs):
            _compile_collection(coll, path, ranges, compiler, rs)
    _apply_filters(rs)
    _link(rs)
    return rs


def _collections(docs: list[Any], path: Path, rs: RuleSet) -> list[SigmaCollection]:
    """The file's documents as pySigma collections. pySigma raises (rather than collects) a
    few errors of one correlation rule (a boolean condition naming a rule the rules list
    lacks), which would fail every rule of the file: then each document is parsed on its own
    and only the broken one fails, with its title. Files using ``action:`` documents (global
    parts merged into the next ones) are only parsed whole."""

    def parse(ds: list[Any]) -> SigmaCollection:
        return SigmaCollection.from_dicts(
            ds, collect_errors=True, resolve_references=False, collect_filters=True
        )

    try:
        return [parse(docs)]
    except (SigmaError, ValueError) as exc:
        whole: Exception = exc
    except Exception as exc:  # anything pySigma lets through
        rs.failures.append(RuleFailure(str(path), "", None, f"unparsable: {exc}"))
        return []
    dicts = [d for d in docs if d is not None]
    if len(dicts) < 2 or any(not isinstance(d, dict) or "action" in d for d in dicts):
        title, rid = _doc_title(dicts[0] if len(dicts) == 1 else None)
        rs.failures.append(RuleFailure(str(path), title, rid, f"invalid Sigma: {whole}"))
        return []
    out = []
    for d in dicts:
        try:
            out.append(parse([d]))
        except Exception as exc:
            title, rid = _doc_title(d)
            rs.failures.append(RuleFailure(str(path), title, rid, f"invalid Sigma: {exc}"))
    return out


def _doc_title(doc: Any) -> tuple[str, str | None]:
    if not isinstance(doc, dict):
        return "", None
    rid = doc.get("id")
    return str(doc.get("title") or ""), str(rid) if rid is not None else None


def _compile_collection(
    coll: SigmaCollection,
    path: Path,
    ranges: dict[int, Bounds | str],
    compiler: Compiler,
    rs: RuleSet,
) -> None:
    # pySigma lists each rule's errors in the collection's too: those are reported with
    # their rule's title below, only the others here.
    own = {id(e) for rule in coll.rules for e in getattr(rule, "errors", ())}
    for err in coll.errors:
        if id(err) not in own:
            rs.failures.append(RuleFailure(str(path), "", None, f"invalid Sigma: {err}"))
    for rule in coll.rules:
        title = getattr(rule, "title", "")
        rid = str(rule.id) if getattr(rule, "id", None) else None
        try:
            if rule.errors:
                raise Unsupported(_invalid(rule, rule.errors[0]))
            if isinstance(rule, SigmaCorrelationRule):
                rs.correlations.append(_correlation(rule, path, ranges))
            elif isinstance(rule, SigmaRule):
                rs.detections.append(_detection(rule, path, compiler))
            else:
                raise Unsupported(f"{type(rule).__name__} is not supported")
        except Unsupported as exc:
            rs.failures.append(RuleFailure(str(path), title, rid, str(exc)))
        except (SigmaError, ValueError, TypeError, AttributeError) as exc:
            rs.failures.append(RuleFailure(str(path), title, rid, f"invalid Sigma: {exc}"))
    for flt in coll.filters:
        _compile_filter(flt, path, compiler, rs)


# The draft specification's examples write AND/OR/NOT; pySigma 2 reads them in lower case.
_UPPER_OPS = re.compile(r"\b(AND|OR|NOT|And|Or|Not)\b")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _invalid(rule: Any, err: Exception) -> str:
    """pySigma's error, with why for the boolean-condition forms its parser cannot read."""
    reason = f"invalid Sigma: {err}"
    corr = (
        rule.custom_attributes.get("correlation")
        if isinstance(rule, SigmaCorrelationRule)
        else None
    )
    cond = corr.get("condition") if isinstance(corr, dict) else None
    if not isinstance(cond, str) or "extended condition" not in str(err):
        return reason
    if _UPPER_OPS.search(cond):
        return (
            f"{reason} (pySigma reads the operators and/or/not in lower case only: write"
            f" '{_UPPER_OPS.sub(lambda m: m.group(1).lower(), cond)}')"
        )
    words = re.findall(r"[^\s()]+", cond)
    odd = [w for w in words if w not in ("and", "or", "not") and not _IDENT.fullmatch(w)]
    if odd:
        return (
            f"{reason} (a boolean condition names rules by identifiers of letters, digits and"
            f" '_' only, so '{odd[0]}' cannot appear in it: give that rule such a name: and use"
            " it in both the rules list and the condition)"
        )
    return reason


def _compile_filter(flt: SigmaFilter, path: Path, compiler: Compiler, rs: RuleSet) -> None:
    """A Sigma filter as a detection over its own selections and condition (pySigma's
    model: the filtered rule's condition becomes ``(its condition) and (the filter's)``)."""
    rid = str(flt.id) if flt.id else None
    try:
        if flt.errors:
            raise Unsupported(f"invalid Sigma: {flt.errors[0]}")
        g = flt.filter
        rule = SigmaRule(
            title=flt.title,
            id=flt.id,
            name=flt.name,
            logsource=flt.logsource,
            detection=SigmaDetections(detections=g.detections, condition=g.condition),
        )
        compiled = _detection(rule, path, compiler)
    except Unsupported as exc:
        rs.failures.append(RuleFailure(str(path), flt.title, rid, f"filter: {exc}"))
        return
    except (SigmaError, ValueError, TypeError, AttributeError) as exc:
        rs.failures.append(RuleFailure(str(path), flt.title, rid, f"filter: invalid Sigma: {exc}"))
        return
    refs = [r if isinstance(r, str) else r.reference for r in flt.filter.rules]
    rs.filters.append((compiled, refs))


def _apply_filters(rs: RuleSet) -> None:
    """AND each filter's predicate into the detections it names (by id or name) whose log
    source it covers; a reference to no detection, or to one of another log source, is a
    failure of the filter (reported like a rule's)."""
    by_ref: dict[str, DetectionRule] = {}
    for d in rs.detections:
        by_ref.setdefault(d.meta.id, d)
        if d.meta.name:
            by_ref.setdefault(d.meta.name, d)
    for flt, refs in rs.filters:
        m = flt.meta
        for ref in refs:
            target = by_ref.get(ref)
            if target is None:
                rs.failures.append(
                    RuleFailure(m.path, m.title, m.id, f"filter: references unknown rule {ref}")
                )
                continue
            if flt.source.key != "any" and flt.source.key != target.source.key:
                rs.failures.append(
                    RuleFailure(
                        m.path,
                        m.title,
                        m.id,
                        f"filter: log source {flt.source.description or flt.source.key} does"
                        f" not cover rule {ref}",
                    )
                )
                continue
            target.predicate = _filtered(target.predicate, flt.predicate)
            target.ir = filtered(target.ir, flt.ir)
            target.filters.append(m.title)


def _filtered(rule: Predicate, flt: Predicate) -> Predicate:
    return lambda fields: rule(fields) and flt(fields)


def _link(rs: RuleSet) -> None:
    """Resolve correlation references (by id or name); drop correlations that cannot resolve."""
    names: dict[str, DetectionRule | CorrelationRule] = {}
    seen_ids: set[str] = set()
    for r in rs.all_rules():
        if r.meta.id in seen_ids:
            rs.failures.append(
                RuleFailure(r.meta.path, r.meta.title, r.meta.id, "duplicate rule id (ignored)")
            )
        seen_ids.add(r.meta.id)
        names.setdefault(r.meta.id, r)
        if r.meta.name:
            names.setdefault(r.meta.name, r)
    rs.detections = list({r.meta.id: r for r in reversed(rs.detections)}.values())[::-1]
    pending = list(rs.correlations)
    good: list[CorrelationRule] = []
    # Correlations of correlations: resolve in rounds until nothing changes.
    changed = True
    bad: dict[str, str] = {}
    while changed:
        changed = False
        for c in list(pending):
            missing = [ref for ref in c.refs if ref not in names]
            if missing:
                bad[c.meta.id] = f"references unknown rule(s): {', '.join(missing)}"
                pending.remove(c)
                names.pop(c.meta.id, None)
                if c.meta.name:
                    names.pop(c.meta.name, None)
                changed = True
    for c in pending:
        ids = [names[ref].meta.id for ref in c.refs]
        c.aliases = {
            a: {names[ref].meta.id: f for ref, f in m.items() if ref in names}
            for a, m in c.aliases.items()
        }
        c.refs = ids
        if c.type.startswith("value_") and c.fieldref is None:
            bad[c.meta.id] = f"{c.type} needs condition.field"
            continue
        good.append(c)
    for c in rs.correlations:
        if c.meta.id in bad:
            rs.failures.append(RuleFailure(c.meta.path, c.meta.title, c.meta.id, bad[c.meta.id]))
    rs.correlations = good
    by_id = rs.by_id()
    for c in good:
        for rid in dict.fromkeys(c.refs):
            target = by_id.get(rid)
            if target is None:
                continue
            target.parents.append(c)
            if not c.generate and isinstance(target, DetectionRule):
                target.generate = False
    # A rule referenced only by correlations with generate: true keeps alerting.
    for d in rs.detections:
        if d.parents and any(p.generate for p in d.parents):
            d.generate = True
        if d.absence or d.baseline:
            d.generate = False
