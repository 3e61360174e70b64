"""Decoders as data: a vendor's log format in a TOML file, compiled into a :class:`VendorDecoder`.

A site adds a device without writing Python (Wazuh's XML decoders and Elastic's ingest
pipelines are how the field does it), and the native data plane can interpret the same files:
the format is closed (no code, regular expressions in the syntax RE2 and Rust's ``regex``
share) so two interpreters give the same events. ``docs/decoders.md`` is the reference; the
shipped files in ``files/`` are the examples.

A file is compiled once, at load, into a list of small closures: the per-message cost is the
parse steps and one call per field, not a walk over the TOML.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import re
import re._constants as re_constants
import re._parser as re_parser
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import re2

from appliance import dataplane
from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    DecodeFn,
    Fields,
    VendorDecoder,
    authentication,
    canonical_ip,
    config_change,
    epoch_digits,
    intrusion_alert,
    iso_time,
    kv_pairs,
    local_time,
    malware,
    network_verdict,
    small_int,
    transport,
)
from appliance.protocols.syslog.vendors.cef_format import cef_captures, leef_captures

log = logging.getLogger(__name__)
Captures = dict[str, str]
Convert = Callable[[str], Any]


class DecoderFileError(ValueError):
    """A decoder file that cannot be used; the message names the file and the key path."""


@dataclass(slots=True)
class DecoderFile:
    """A compiled decoder file: the decoder, and the samples it carries for ``decoders test``."""

    decoder: VendorDecoder
    path: Path
    digest: str = ""  # of the file's bytes: a reload tells a changed file from the same one
    description: str = ""
    provenance: str = ""
    tests: list[dict[str, Any]] = field(default_factory=list)
    # Both interpreters, for the equivalence tests: the generated Python, and the native one
    # (None when the extension is not loaded or the file uses what it does not take).
    python_decode: DecodeFn | None = None
    native: Any = None


# -- conversions: a captured text to a field value, or None (the field is then not set) -------


def _as_int(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def _as_port(value: str) -> int | None:
    n = _as_int(value)
    return n if n is not None and n <= 65535 else None


def _ip_port(value: str) -> str | None:
    """``203.0.113.7:51234:X1`` / ``[2001:db8::1]:443`` / a bare address → the address."""
    ip = canonical_ip(value)
    if ip is not None:
        return ip
    if value.startswith("["):
        return canonical_ip(value[1 : value.find("]")])
    return canonical_ip(value.split(":", 1)[0])


def _ip_port_port(value: str) -> int | None:
    """The port of ``address:port[:interface]`` (IPv6 in brackets)."""
    if canonical_ip(value) is not None:
        return None
    rest = value[value.find("]") + 2 :] if value.startswith("[") else value.partition(":")[2]
    return _as_port(rest.split(":", 1)[0])


CONVERSIONS: dict[str, Convert] = {
    "string": lambda v: v,
    "lower": str.lower,
    "upper": str.upper,
    "int": _as_int,
    "port": _as_port,
    "ip": canonical_ip,
    "ip_port.ip": _ip_port,
    "ip_port.port": _ip_port_port,
    "transport": transport,
    "epoch": epoch_digits,
    "list": lambda v: [v],
}

CONTRACTS = ("firewall", "authentication", "config_change", "intrusion_alert", "malware")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")


class _Spec:
    """Reads one file's TOML with errors that name the file and the key path."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, why: str) -> DecoderFileError:
        return DecoderFileError(f"{self.path}: {key}: {why}")

    def table(self, parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        return value

    def strings(self, parent: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = parent.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(where, "must be a list of non-empty strings")
        return tuple(value)

    def known(self, table: dict[str, Any], allowed: Iterable[str], where: str) -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.fail(f"{where}.{extra[0]}" if where else extra[0], "unknown key")

    def regex(self, pattern: Any, where: str) -> re.Pattern[str]:
        if not isinstance(pattern, str) or not pattern:
            raise self.fail(where, "must be a non-empty regular expression")
        try:
            re2.compile(pattern)  # the syntax the native interpreter shares: no backreferences
        except re2.error as exc:
            raise self.fail(where, f"not an RE2 expression ({exc})") from None
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise self.fail(where, f"invalid regular expression ({exc})") from None


# -- values: each field's spec becomes a few lines of one generated function -----------------
#
# The file is closed data, so generating Python from it is safe: the code is built only from
# fixed templates and names this module makes (c0, c1, ...); every string, number and table
# from the file is a constant the code refers to by such a name, never part of the source.
# Straight-line code measured 2-4x faster per line than a closure per field.


class _Code:
    """The generated decode function: its lines and the constants they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        # Captures read straight from a CSV row (name -> (column, always present)); the rest
        # live in the ``caps`` dict. A row is not copied into a dict: that cost more than the
        # whole hand-written decoder did for a 22-column pfSense line.
        self.columns: dict[str, tuple[str, int, bool]] = {}
        self.base = 0
        # Message-id tables: (variable holding the chosen case, the cases, their key path).
        self.tables: list[tuple[str, list[dict[str, Any]], str]] = []
        # Captures live in local variables (r0, r1, ...: a regex's groups unpacked at once),
        # unless a kv or json step makes names known only at run time: then in ``caps``.
        self.dynamic = False
        self.locals: dict[str, str] = {}
        self.defined: set[str] = set()  # names some step before this point may have set
        self.sure = False  # the step being emitted sets its captures on every path on from it
        self.assigned: set[str] = set()  # variables so set: they need no ``None`` first
        # A table's own variables start as None inside its block, so a line whose id no case
        # takes pays nothing for them; unless something outside the cases reads them.
        self.table_vars: list[str] | None = None
        self.table_inits: list[tuple[int, str, list[str]]] = []  # (line, indent, variables)
        self.in_case = False
        self.read_outside: set[str] = set()
        self.fields_set: set[str] = set()  # [fields] keys emitted so far (requires_field)
        self.dead = False  # emitting a value inside "if False" (captures this copy lacks)

    def const(self, value: Any) -> str:
        name = f"c{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("    " * (indent + self.base) + line)

    def cap(self, name: str) -> str:
        """An expression for the capture's text, ``None`` when it is missing."""
        col = self.columns.get(name)
        if col is None:
            if self.dynamic:
                return f"caps.get({self.const(name)})"
            var = self.locals.get(name)
            if var is None:
                return "None"
            if not self.in_case:
                self.read_outside.add(var)
            return var
        row, i, always = col
        return f"{row}[{i}]" if always else f"({row}[{i}] if len({row}) > {i} else None)"

    def has(self, name: str) -> str:
        """An expression: the capture exists (possibly empty)."""
        col = self.columns.get(name)
        if col is None:
            if self.dynamic:
                return f"{self.const(name)} in caps"
            var = self.locals.get(name)
            if var is None:
                return "False"
            if not self.in_case:
                self.read_outside.add(var)
            return f"{var} is not None"
        row, i, always = col
        return "True" if always else f"len({row}) > {i}"

    def local(self, name: str) -> tuple[str, bool]:
        """The local variable holding a capture, and whether an earlier step may have set it."""
        if name not in self.locals and self.sure:
            self.assigned.add(f"r{len(self.locals)}")
        var = self.locals.setdefault(name, f"r{len(self.locals)}")
        # First set inside a table: it starts as None there (also when a CSV step emits the
        # rest once per column list, each copy with its own table).
        if self.table_vars is not None and name not in self.defined and var not in self.table_vars:
            self.table_vars.append(var)
        earlier = name in self.defined
        self.defined.add(name)
        return var, earlier

    def store(self, name: str, expr: str, indent: int) -> None:
        """Lines that keep ``expr`` (text or None) as the capture unless it has one (an earlier
        capture wins)."""
        if self.dynamic:
            self.emit(f"g = {expr}", indent)
            self.emit(f"if g is not None: caps.setdefault({self.const(name)}, g)", indent)
            return
        var, earlier = self.local(name)
        self.emit(f"if {var} is None: {var} = {expr}" if earlier else f"{var} = {expr}", indent)

    def groups(self, pattern: re.Pattern[str], indent: int) -> None:
        """Lines that keep the named groups of match ``m`` as captures: one ``m.groups()``
        unpacking for the names no earlier step set (the common case), a test for the rest."""
        if self.dynamic:
            for name, index in pattern.groupindex.items():
                self.store(name, f"m.group({index})", indent)
            return
        targets = ["_"] * pattern.groups
        again: list[tuple[str, int]] = []
        for name, index in pattern.groupindex.items():
            var, earlier = self.local(name)
            if earlier:
                again.append((var, index))
            else:
                targets[index - 1] = var
        if any(t != "_" for t in targets):
            lhs = targets[0] if len(targets) == 1 else ", ".join(targets)
            self.emit(f"{lhs} = m.group(1)" if len(targets) == 1 else f"{lhs} = m.groups()",
                      indent)  # fmt: skip
        for var, index in again:
            self.emit(f"if {var} is None: {var} = m.group({index})", indent)


# -- parse steps: message (or a capture) → more captures; "return False" = not ours ----------


def _source(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """Lines that put the step's input in ``s`` (``None``: the capture is missing)."""
    src = step.get("from", "message")
    if not isinstance(src, str) or not src:
        raise spec.fail(f"{where}.from", "must be a capture name or 'message'")
    code.emit("s = text" if src == "message" else f"s = {code.cap(src)}")


def _finder(pattern: re.Pattern[str]) -> Callable[[str], re.Match[str] | None]:
    """``pattern.search``, or ``pattern.match`` when every way to match starts at ``^`` (the
    same matches; CPython's search measured ~150 ns slower on an anchored pattern)."""
    try:
        parsed = re_parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # a private parser: any surprise keeps the plain search
        return pattern.search
    data = getattr(parsed, "data", None)
    if (
        data
        and data[0] == (re_constants.AT, re_constants.AT_BEGINNING)
        and not (pattern.flags & re.MULTILINE)
    ):
        return pattern.match
    return pattern.search


def _guard(spec: _Spec, step: dict[str, Any], where: str) -> str:
    """`` and LITERAL in s`` for a step's ``contains``: the cheap test before the regex."""
    lit = step.get("contains")
    if lit is None:
        return ""
    if not isinstance(lit, str) or not lit:
        raise spec.fail(f"{where}.contains", "must be a non-empty string")
    return lit


def _emit_regex(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    spec.known(step, ("regex", "from", "optional", "contains", "within"), where)
    pattern = spec.regex(step["regex"], f"{where}.regex")
    if not pattern.groupindex:
        raise spec.fail(f"{where}.regex", "needs at least one named group (?P<name>...)")
    search = code.const(_finder(pattern))
    lit = _guard(spec, step, where)
    within = step.get("within")
    if within is not None and (not isinstance(within, int) or isinstance(within, bool)
                               or within < 1):  # fmt: skip
        raise spec.fail(f"{where}.within", "must be a positive number of characters")
    args = f"(s, 0, {within})" if within else "(s)"
    test = f" if {code.const(lit)} in s else None" if lit else ""
    if step.get("from", "message") == "message" and not lit and not within:
        code.emit(f"m = {search}(text)")
    elif step.get("from", "message") == "message":
        code.emit("s = text")
        code.emit(f"m = {search}{args}{test}")
    else:
        _source(code, spec, step, where)
        guard = f" and {code.const(lit)} in s" if lit else ""
        code.emit(f"m = {search}{args} if s is not None{guard} else None")
    indent = 1
    if step.get("optional", False):
        code.emit("if m is not None:")
        indent = 2
    else:
        code.emit("if m is None: return False")
        # Set on every path that goes on: no need to start as None.
        code.sure = code.base == 0
    code.groups(pattern, indent)
    code.sure = False


def _kv_pairs_split(value: str, limit: int) -> dict[str, str]:
    """One space between pairs, no quoting (netfilter, many kernels and switches); the first of
    a repeated key wins, at most ``limit`` keys. (A plain loop measured faster here than
    comprehensions or a regex over 20-pair lines.)"""
    pairs: dict[str, str] = {}
    for token in value.split(" "):
        key, eq, val = token.partition("=")
        if eq and key not in pairs:
            pairs[key] = val
            if len(pairs) == limit:
                break
    return pairs


def _emit_kv(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    opts = step["kv"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.kv", "must be a table")
    spec.known(opts, ("style", "start", "within", "min_pairs", "max_pairs", "lowercase_keys"),
               f"{where}.kv")  # fmt: skip
    spec.known(step, ("kv", "from"), where)
    style = opts.get("style", "quoted")
    if style not in ("quoted", "split"):
        raise spec.fail(f"{where}.kv.style", "must be 'quoted' or 'split'")
    start = opts.get("start", "")
    numbers = [opts.get("min_pairs", 1), opts.get("max_pairs", 256)]
    if not all(isinstance(n, int) and n >= 0 for n in numbers) or not isinstance(start, str):
        raise spec.fail(f"{where}.kv", "min_pairs/max_pairs are integers, start a string")
    within = opts.get("within")
    if within is not None and (not _positive(within) or not start):
        raise spec.fail(f"{where}.kv.within", "a positive number of characters, with start")
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    if start:
        bound = f", 0, {within}" if within else ""
        code.emit(f"at = s.find({code.const(start)}{bound})")
        code.emit("if at < 0: return False")
        code.emit("s = s[at:]")
    split = code.const(kv_pairs if style == "quoted" else _kv_pairs_split)
    code.emit(f"pairs = {split}(s, {numbers[1]})")
    code.emit(f"if len(pairs) < {numbers[0]}: return False")
    if opts.get("lowercase_keys", False):
        code.emit("pairs = {k.lower(): x for k, x in reversed(pairs.items())}")
    code.emit("if caps: pairs.update(caps)")  # what earlier steps captured wins
    code.emit("caps = pairs")


def _emit_csv(
    code: _Code, spec: _Spec, step: dict[str, Any], where: str, rest: Callable[[], None]
) -> None:
    """Split the input; the rest of the decoder reads the columns where they are (one copy of
    the rest per table, each knowing its own column positions)."""
    opts = step["csv"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.csv", "must be a table")
    spec.known(opts, ("separator", "quoted", "columns", "key", "tables"), f"{where}.csv")
    spec.known(step, ("csv", "from"), where)
    sep = opts.get("separator", ",")
    if not isinstance(sep, str) or len(sep) != 1:
        raise spec.fail(f"{where}.csv.separator", "must be one character")
    row = f"row{len(code.lines)}"
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    quoted = opts.get("quoted", False)
    if not isinstance(quoted, bool):
        raise spec.fail(f"{where}.csv.quoted", "must be true or false")
    if quoted:
        code.emit(f"{row} = {code.const(_quoted_row)}(s, {code.const(sep)})")
    else:
        code.emit(f"{row} = s.split({code.const(sep)})")

    def with_columns(names: tuple[str, ...], always: int, twhere: str) -> None:
        # "_" names a column nobody reads; a short row simply lacks its last captures (fields
        # that need them say so with ``requires``).
        saved, tables, defined = dict(code.columns), list(code.tables), set(code.defined)
        for i, name in enumerate(names):
            if name == "_":
                continue
            if names.index(name) != i:
                raise spec.fail(twhere, f"column name {name!r} repeated")
            code.columns[name] = (row, i, i <= always)
        rest()
        code.columns, code.tables, code.defined = saved, tables, defined

    if "tables" in opts:
        key = opts.get("key")
        if not isinstance(key, int) or key < 0:
            raise spec.fail(f"{where}.csv.key", "a column index (from 0) is needed with tables")
        code.emit(f"if len({row}) <= {key}: return False")
        code.emit(f"k = {row}[{key}]")
        for name in spec.table(opts, "tables", f"{where}.csv.tables"):
            twhere = f"{where}.csv.tables.{name}"
            code.emit(f"if k == {code.const(name)}:")
            code.base += 1
            with_columns(spec.strings(opts["tables"], name, twhere), key, twhere)
            code.base -= 1
        code.emit("return False")  # a key no table names: not this decoder's line
    else:
        cwhere = f"{where}.csv.columns"
        with_columns(spec.strings(opts, "columns", cwhere), -1, cwhere)


def _quoted_row(text: str, sep: str) -> list[str]:
    """A CSV row whose fields may be quoted (``"a,b"``, ``""`` for a quote), as Python's csv
    module reads one line; unquoted text, or text it refuses (a stray line break), is split."""
    if '"' not in text:
        return text.split(sep)
    try:
        return next(csv.reader([text], delimiter=sep))
    except (csv.Error, StopIteration):
        return text.split(sep)


def _emit_cut(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """Split the input at the first occurrence of a literal: what is before and after it."""
    opts = step["cut"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.cut", "must be a table")
    spec.known(opts, ("at", "before", "after"), f"{where}.cut")
    spec.known(step, ("cut", "from"), where)
    at = opts.get("at")
    if not isinstance(at, str) or not at:
        raise spec.fail(f"{where}.cut.at", "must be a non-empty string")
    names = [opts.get(k) for k in ("before", "after")]
    if not any(names) or not all(n is None or (isinstance(n, str) and n) for n in names):
        raise spec.fail(f"{where}.cut", "needs before and/or after: capture names")
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    code.emit(f"at = s.find({code.const(at)})")
    code.emit("if at < 0: return False")
    if names[0]:
        code.store(names[0], "s[:at]", 1)
    if names[1]:
        code.store(names[1], f"s[at + {len(at)}:]", 1)


MAX_JSON_KEYS = 256


def _json_flatten(doc: dict[str, Any], prefix: str, out: Captures, depth: int) -> None:
    for key, value in doc.items():
        if len(out) >= MAX_JSON_KEYS:
            return
        name = prefix + key
        if isinstance(value, str):
            out.setdefault(name, value)
        elif isinstance(value, bool):
            out.setdefault(name, "true" if value else "false")
        elif isinstance(value, int | float):
            out.setdefault(name, str(value))
        elif isinstance(value, dict) and depth > 1:
            _json_flatten(value, name + ".", out, depth - 1)
        # lists and null: no capture


def _json_captures(value: str, depth: int) -> Captures | None:
    """A JSON object's scalars as captures named by their dotted path (``a.b``), strings as
    they are, numbers as JSON writes them, booleans ``true``/``false``; ``None`` when the input
    is not one JSON object (a leading UTF-8 byte order mark is skipped)."""
    if value.startswith("\ufeff"):
        value = value[1:]
    if not value.startswith("{"):
        return None
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return None
    if not isinstance(doc, dict):
        return None
    out: Captures = {}
    _json_flatten(doc, "", out, depth)
    return out


def _emit_json(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """Read one JSON object: its scalar members become captures (what earlier steps captured
    wins); input that is not a JSON object makes the line not this decoder's."""
    opts = step["json"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.json", "must be a table")
    spec.known(opts, ("max_depth",), f"{where}.json")
    spec.known(step, ("json", "from"), where)
    depth = opts.get("max_depth", 3)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 8:
        raise spec.fail(f"{where}.json.max_depth", "must be an integer from 1 to 8")
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    code.emit(f"pairs = {code.const(_json_captures)}(s, {depth})")
    code.emit("if pairs is None: return False")
    code.emit("if caps: pairs.update(caps)")
    code.emit("caps = pairs")


TABLE_CASE_KEYS = ("ids", "prefixes", "default", "regex", "from", "optional", "also", "when",
                   "is", "is_not", "when_not", "requires", "unless", "numbers", "contract",
                   "fields")  # fmt: skip


def _emit_table(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """A message-id table: the value of capture ``key`` picks the first case naming it (in
    ``ids``, or starting with one of its ``prefixes``) whose ``regex`` matches the input (or
    that has none, or says ``optional``); the case's captures join the others and its
    ``contract`` and ``fields`` are set after the file's. No case: no more captures, and the
    line is still ours (an unknown id keeps what the file's own fields give)."""
    opts = step["table"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.table", "must be a table")
    spec.known(opts, ("key", "cases"), f"{where}.table")
    spec.known(step, ("table", "from"), where)
    key = opts.get("key")
    if not isinstance(key, str) or not key:
        raise spec.fail(f"{where}.table.key", "must be the capture whose value selects a case")
    cases = opts.get("cases")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
        raise spec.fail(f"{where}.table.cases", "must be an array of tables ([[...cases]])")
    var = f"t{len(code.tables)}"
    code.tables.append((var, cases, f"{where}.table.cases"))
    if any(isinstance(c, dict) and "regex" in c for c in cases):
        _source(code, spec, step, where)
    code.emit(f"k = {code.cap(key)}")
    code.emit(f"{var} = -1")
    every: set[str] = set()
    starts: list[str] = []
    anyid = False
    for i, case in enumerate(cases):
        cwhere = f"{where}.table.cases[{i}]"
        spec.known(case, TABLE_CASE_KEYS, cwhere)
        every.update(spec.strings(case, "ids", f"{cwhere}.ids"))
        starts.extend(spec.strings(case, "prefixes", f"{cwhere}.prefixes"))
        if not isinstance(case.get("default", False), bool):
            raise spec.fail(f"{cwhere}.default", "must be true or false")
        anyid = anyid or case.get("default", False)
    # One set lookup passes over the ids no case names (most lines of a big family).
    test = " or ".join(
        ([f"k in {code.const(frozenset(every))}"] if every else [])
        + ([f"k.startswith({code.const(tuple(starts))})"] if starts else [])
    )
    if anyid:
        code.emit("if k is not None:")
    elif starts:
        code.emit(f"if k is not None and ({test}):")
    else:  # None is in no set of ids
        code.emit(f"if {test}:")
    code.table_vars = []
    code.table_inits.append((len(code.lines), "    " * (2 + code.base), code.table_vars))
    # Consecutive cases taking the same ids form a group: one set test per group, then its
    # cases in order (a family's "pattern, else another pattern, else none" costs one lookup).
    groups: list[tuple[str, list[int]]] = []
    tests_of: dict[int, str] = {}
    for i, case in enumerate(cases):
        cwhere = f"{where}.table.cases[{i}]"
        ids = frozenset(spec.strings(case, "ids", f"{cwhere}.ids"))
        prefixes = spec.strings(case, "prefixes", f"{cwhere}.prefixes")
        if case.get("default", False):
            test = "True"
        elif not ids and not prefixes:
            raise spec.fail(cwhere, "needs ids and/or prefixes (or default = true)")
        else:
            test = " or ".join(
                ([f"k in {code.const(ids)}"] if ids else [])
                + ([f"k.startswith({code.const(prefixes)})"] if prefixes else [])
            )
        key = repr((sorted(ids), prefixes, case.get("default", False)))
        if groups and groups[-1][0] == key:
            groups[-1][1].append(i)
        else:
            groups.append((key, [i]))
            tests_of[i] = test
    # When a case's regex runs, no earlier case of this table has captured anything (it was
    # not chosen): its groups are first definitions unless a step before the table set them.
    before, after = set(code.defined), set(code.defined)
    for g, (_, members) in enumerate(groups):
        test = tests_of[members[0]]
        code.emit(f"if {var} < 0 and ({test}):" if g else f"if {test}:", 2)
        for n, i in enumerate(members):
            case = cases[i]
            ind = 3
            if n:
                code.emit(f"if {var} < 0:", 3)
                ind = 4
            # A case's own conditions (captures besides the id), then its regex.
            ind = _emit_conditions(code, spec, case, f"{where}.table.cases[{i}]", ind)
            if "regex" not in case:
                code.emit(f"{var} = {i}", ind)
                continue
            pattern = spec.regex(case["regex"], f"{where}.table.cases[{i}].regex")
            src = "s"
            if "from" in case:
                if not isinstance(case["from"], str) or not case["from"]:
                    raise spec.fail(f"{where}.table.cases[{i}].from", "must be a capture name")
                code.emit(f"cs = {code.cap(case['from'])}", ind)
                src = "cs"
            code.emit(f"m = {code.const(_finder(pattern))}({src}) if {src} is not None else None",
                      ind)  # fmt: skip
            code.emit("if m is not None:", ind)
            code.emit(f"{var} = {i}", ind + 1)
            code.defined = set(before)
            code.groups(pattern, ind + 1)
            after |= code.defined
            if case.get("optional", False):
                code.emit(f"else: {var} = {i}", ind)
    code.defined = after
    # A case's further searches ("also"), only when it was chosen.
    for i, case in enumerate(cases):
        also = case.get("also")
        if also is None:
            continue
        awhere = f"{where}.table.cases[{i}].also"
        if not isinstance(also, list) or not all(isinstance(a, dict) for a in also):
            raise spec.fail(awhere, "must be an array of tables ({ regex = ..., from = ... })")
        code.emit(f"if {var} == {i}:", 2)
        code.base += 2
        for j, a in enumerate(also):
            if "kv" in a:  # key=value pairs read only for this case's lines
                _emit_also_kv(code, spec, a, f"{awhere}[{j}]")
                continue
            spec.known(a, ("regex", "from", "contains", "within"), f"{awhere}[{j}]")
            _emit_regex(code, spec, {**a, "optional": True}, f"{awhere}[{j}]")
        code.base -= 2
    code.table_vars = None


def _emit_also_kv(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """A case's ``{ kv = { ... }, from = "body" }``: the pairs join the captures (what is
    captured wins); a missing input or too few pairs adds nothing (the case holds)."""
    opts = step["kv"]
    if not isinstance(opts, dict):
        raise spec.fail(f"{where}.kv", "must be a table")
    spec.known(step, ("kv", "from"), where)
    spec.known(opts, ("style", "min_pairs", "max_pairs"), f"{where}.kv")
    style = opts.get("style", "quoted")
    if style not in ("quoted", "split"):
        raise spec.fail(f"{where}.kv.style", "must be 'quoted' or 'split'")
    numbers = [opts.get("min_pairs", 1), opts.get("max_pairs", 256)]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise spec.fail(f"{where}.kv", "min_pairs/max_pairs are integers")
    _source(code, spec, step, where)
    split = code.const(kv_pairs if style == "quoted" else _kv_pairs_split)
    code.emit("if s is not None:")
    code.emit(f"pairs = {split}(s, {numbers[1]})", 2)
    code.emit(f"if len(pairs) >= {numbers[0]}:", 2)
    code.emit("if caps: pairs.update(caps)", 3)
    code.emit("caps = pairs", 3)


def _emit_table_fields(code: _Code, spec: _Spec) -> None:
    """Each table's chosen case: its contract, then its fields (after the file's)."""
    code.in_case = True
    for var, cases, where in code.tables:
        code.emit(f"if {var} >= 0:")  # one test when no case was chosen
        code.base += 1
        chosen = [i for i, c in enumerate(cases) if "contract" in c or "fields" in c]
        _emit_case_outputs(code, spec, var, cases, where, chosen)
        code.base -= 1
    code.in_case = False


def _emit_case_outputs(
    code: _Code, spec: _Spec, var: str, cases: list[dict[str, Any]], where: str, chosen: list[int]
) -> None:
    """The outputs of the case ``var`` holds, found by halving (a few tests, not one per case
    before it)."""
    if len(chosen) > 3:
        mid = len(chosen) // 2
        code.emit(f"if {var} < {chosen[mid]}:")
        code.base += 1
        _emit_case_outputs(code, spec, var, cases, where, chosen[:mid])
        code.base -= 1
        code.emit("else:")
        code.base += 1
        _emit_case_outputs(code, spec, var, cases, where, chosen[mid:])
        code.base -= 1
        return
    if not chosen:
        code.emit("pass")
    for n, i in enumerate(chosen):
        code.emit(f"{'if' if n == 0 else 'elif'} {var} == {i}:")
        code.base += 1
        _emit_contract(code, spec, cases[i], f"{where}[{i}].")
        _emit_fields(code, spec, cases[i], f"{where}[{i}].")
        code.base -= 1


def _emit_cef(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """ArcSight CEF: the header fields as ``cef.version`` ... ``cef.severity`` and every
    extension key as a capture of its own name (what earlier steps captured wins); input
    without a CEF header among its first 40 characters is not this decoder's."""
    opts = step["cef"]
    if not isinstance(opts, dict) or opts:
        raise spec.fail(f"{where}.cef", "takes no options: cef = {}")
    spec.known(step, ("cef", "from"), where)
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    code.emit(f"pairs = {code.const(cef_captures)}(s)")
    code.emit("if pairs is None: return False")
    code.emit("if caps: pairs.update(caps)")
    code.emit("caps = pairs")


def _emit_leef(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """IBM LEEF 1.0/2.0: the header as ``leef.version`` ... ``leef.event_id`` and every
    attribute key as a capture of its own name (what earlier steps captured wins); input
    without a LEEF header among its first 40 characters is not this decoder's."""
    opts = step["leef"]
    if not isinstance(opts, dict) or opts:
        raise spec.fail(f"{where}.leef", "takes no options: leef = {}")
    spec.known(step, ("leef", "from"), where)
    _source(code, spec, step, where)
    code.emit("if s is None: return False")
    code.emit(f"pairs = {code.const(leef_captures)}(s)")
    code.emit("if pairs is None: return False")
    code.emit("if caps: pairs.update(caps)")
    code.emit("caps = pairs")


def _positive(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


def _emit_pick(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """New captures, each the first non-empty of some others (``action`` else ``status``):
    what later conditions, tables and fields then read under one name."""
    opts = step["pick"]
    if not isinstance(opts, dict) or not opts:
        raise spec.fail(f"{where}.pick", "must be a table: new capture = [captures]")
    spec.known(step, ("pick",), where)
    for name in opts:
        names = spec.strings(opts, name, f"{where}.pick.{name}")
        if not names:
            raise spec.fail(f"{where}.pick.{name}", "names at least one capture")
        # As a value's list: the first non-empty, else the last one's value (``a or b``).
        code.store(name, " or ".join(code.cap(n) for n in names), 1)


def _emit_require(code: _Code, spec: _Spec, step: dict[str, Any], where: str) -> None:
    """The line is not this decoder's unless these captures exist (``all``) and at least one
    of ``any`` does: a key=value line is a product's only when its marker keys are there."""
    opts = step["require"]
    if not isinstance(opts, dict) or not opts:
        raise spec.fail(f"{where}.require", "must be a table with all and/or any")
    spec.known(opts, ("all", "any"), f"{where}.require")
    spec.known(step, ("require",), where)
    for name in spec.strings(opts, "all", f"{where}.require.all"):
        code.emit(f"if not ({code.has(name)}): return False")
    anyof = spec.strings(opts, "any", f"{where}.require.any")
    if anyof:
        code.emit("if not (" + " or ".join(code.has(n) for n in anyof) + "): return False")


def _emit_steps(code: _Code, spec: _Spec, tail: Callable[[], None], first: int = 0) -> None:
    """The parse steps from ``first`` on, then ``tail`` (what the decoder sets)."""
    steps = spec.data.get("parse", [])
    if not isinstance(steps, list):
        raise spec.fail("parse", "must be an array of tables ([[parse]])")
    for i in range(first, len(steps)):
        step, where = steps[i], f"parse[{i}]"
        if not isinstance(step, dict):
            raise spec.fail(where, "must be a table")
        kinds = [k for k in STEP_KINDS if k in step]
        if len(kinds) != 1:
            raise spec.fail(where, f"needs exactly one of {', '.join(STEP_KINDS)}")
        if kinds[0] == "csv":
            rest = functools.partial(_emit_steps, code, spec, tail, i + 1)
            _emit_csv(code, spec, step, where, rest)
            return
        STEPS[kinds[0]](code, spec, step, where)
    tail()


STEPS: dict[str, Callable[[_Code, _Spec, dict[str, Any], str], None]] = {
    "regex": _emit_regex,
    "kv": _emit_kv,
    "cut": _emit_cut,
    "json": _emit_json,
    "table": _emit_table,
    "cef": _emit_cef,
    "leef": _emit_leef,
    "pick": _emit_pick,
    "require": _emit_require,
}
STEP_KINDS = ("regex", "kv", "csv", "cut", "json", "table", "cef", "leef", "pick", "require")


def _small_contains_map(table: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]] | None:
    """A validated ``contains`` map of at most 8 entries: (str method to apply or "", the
    normalized needles with their values, first listed first); ``None`` otherwise."""
    if table.get("match", "exact") != "contains":
        return None
    values = table.get("values", {})
    pairs = list(values.items()) if isinstance(values, dict) else [(str(a), b) for a, b in values]
    if len(pairs) > 8:
        return None
    case = table.get("case", "none")
    norm = {"lower": "lower", "upper": "upper"}.get(case, "")
    fold = str.lower if norm == "lower" else str.upper if norm == "upper" else str
    return norm, [(fold(a), b) for a, b in pairs]


def _map_of(spec: _Spec, name: str, where: str) -> Callable[[str], Any]:
    maps = spec.table(spec.data, "maps", "maps")
    table = maps.get(name)
    if not isinstance(table, dict):
        raise spec.fail(where, f"no map named {name!r} in [maps]")
    mwhere = f"maps.{name}"
    spec.known(table, ("match", "case", "values"), mwhere)
    match = table.get("match", "exact")
    case = table.get("case", "none")
    if match not in ("exact", "contains") or case not in ("none", "lower", "upper"):
        raise spec.fail(mwhere, "match must be exact|contains, case none|lower|upper")
    values = table.get("values", {})
    if isinstance(values, dict):
        pairs = list(values.items())
    elif isinstance(values, list) and all(isinstance(p, list) and len(p) == 2 for p in values):
        pairs = [(str(a), b) for a, b in values]
    else:
        raise spec.fail(f"{mwhere}.values", "must be a table or a list of [from, to] pairs")
    if match == "exact" and case == "none":
        return dict(pairs).get
    norm: Callable[[str], str] = (
        str.lower if case == "lower" else str.upper if case == "upper" else str
    )
    if match == "exact":
        exact = {norm(a): b for a, b in pairs}
        return lambda v: exact.get(norm(v))
    ordered = [(norm(a), b) for a, b in pairs]

    def contains(v: str) -> Any:
        v = norm(v)
        for needle, out in ordered:
            if needle in v:
                return out
        return None

    return contains


CONDITION_KEYS = ("when", "when_not", "is", "is_not", "requires", "unless", "numbers",
                  "requires_field")  # fmt: skip
VALUE_KEYS = ("from", "value", "sum", "as", "map", "else", "strip", "keep_empty", "skip",
              "first", *CONDITION_KEYS)  # fmt: skip


def _sum_ints(*values: str | None) -> int | None:
    total = 0
    for value in values:
        n = small_int(value)
        if n is None:
            return None
        total += n
    return total


def _emit_value(code: _Code, spec: _Spec, raw: Any, where: str) -> int:
    """Lines that compute the field's value into ``v``; returns the indentation at which ``v``
    holds a value to set (each test that can fail nests one level, so a missing capture costs
    one test, not one per stage)."""
    if isinstance(raw, str):
        got = code.cap(raw)
        if got == "None":  # a capture this copy of the code never has
            code.emit("if False:")  # (compiled away)
            return 2
        code.emit(f"v = {got}")
        code.emit("if v:")
        return 2
    if not isinstance(raw, dict):
        raise spec.fail(where, "must be a capture name or a table")
    spec.known(raw, VALUE_KEYS, where)
    if "sum" in raw:
        # Numbers added (bytes = sent + received): every capture an ASCII decimal of at most
        # 18 digits, or no value (at most 8 of them: the sum fits 64 bits).
        addends = spec.strings(raw, "sum", f"{where}.sum")
        if not 2 <= len(addends) <= 8:
            raise spec.fail(f"{where}.sum", "adds 2 to 8 captures")
        extra = sorted(set(raw) - set(CONDITION_KEYS) - {"sum"})
        if extra:
            raise spec.fail(f"{where}.{extra[0]}", "does not go with sum")
        if "None" in (code.cap(n) for n in addends):  # a capture this copy never has
            code.emit("if False:")  # compiled away, with the conditions it holds (validated)
            return _emit_conditions(code, spec, raw, where, 2)
        ind = _emit_conditions(code, spec, raw, where, 1)
        args = ", ".join(code.cap(n) for n in addends)
        code.emit(f"v = {code.const(_sum_ints)}({args})", ind)
        code.emit("if v is not None:", ind)
        return ind + 1
    if "value" in raw:
        # A constant honours requires/when as a capture does ("event.category" only for the
        # lines whose optional step matched).
        ind = _emit_conditions(code, spec, raw, where, 1)
        const = code.const(raw["value"])
        # A fresh list per event, as the contracts do: later stages may extend a field.
        code.emit(f"v = list({const})" if isinstance(raw["value"], list) else f"v = {const}", ind)
        return ind
    src = raw.get("from")
    names = [src] if isinstance(src, str) else src if isinstance(src, list) else []
    if not names or not all(isinstance(n, str) and n for n in names):
        raise spec.fail(f"{where}.from", "must be a capture name or a list of them")
    as_ = raw.get("as", "string")
    if as_ not in CONVERSIONS:
        raise spec.fail(f"{where}.as", f"must be one of {', '.join(CONVERSIONS)}")
    otherwise = raw.get("else")
    if otherwise is not None and not isinstance(otherwise, str):
        raise spec.fail(f"{where}.else", "must be 'raw' or a string")
    strip = raw.get("strip")
    if strip is not None and (not isinstance(strip, str) or not strip):
        raise spec.fail(f"{where}.strip", "must be the characters to strip from the right")
    if all(code.cap(n) == "None" for n in names) and not code.dead:
        # Captures this copy of the code never has (another CSV column list's): no value.
        # The lines are still made (so validated), inside an "if False" Python compiles away.
        code.emit("if False:")
        code.base += 1
        code.dead = True
        try:
            return _emit_value(code, spec, raw, where) + 1
        finally:
            code.base -= 1
            code.dead = False
    skip = spec.strings(raw, "skip", f"{where}.skip")
    if skip and raw.get("keep_empty", False):
        raise spec.fail(f"{where}.skip", "does not go with keep_empty")
    if skip and len(names) > 1:
        # The first capture that is neither empty nor one of the placeholders ("N/A").
        skipped = code.const(frozenset(skip))
        code.emit(f"v = {code.cap(names[0])}")
        for n in names[1:]:
            code.emit(f"if not v or v in {skipped}: v = {code.cap(n)}")
        code.emit(f"if v and v not in {skipped}:")
    elif skip:
        code.emit(f"v = {code.cap(names[0])}")
        code.emit(f"if v and v not in {code.const(frozenset(skip))}:")
    else:
        # The first non-empty capture, else the last one's value (as Python's ``a or b``).
        code.emit("v = " + " or ".join(code.cap(n) for n in names))
        code.emit("if v is not None:" if raw.get("keep_empty", False) else "if v:")
    ind = _emit_conditions(code, spec, raw, where, 2)
    first = raw.get("first")
    if first is not None:
        if not isinstance(first, int) or isinstance(first, bool) or first < 1:
            raise spec.fail(f"{where}.first", "must be a positive number of characters")
        code.emit(f"v = v[:{first}]", ind)
    if strip:
        code.emit(f"v = v.rstrip({code.const(strip)})", ind)
    if "map" in raw:
        mapped = code.const(_map_of(spec, raw["map"], f"{where}.map"))
        inline = _small_contains_map(spec.data["maps"][raw["map"]])
        if inline is None:
            code.emit(f"w = {mapped}(v)", ind)
        else:  # a few substring tests, written out: a call cost more than they do
            norm, pairs = inline
            code.emit(f"lv = v.{norm}()" if norm else "lv = v", ind)
            for n, (needle, out) in enumerate(pairs):
                test = f"{code.const(needle)} in lv"
                code.emit(f"{'if' if n == 0 else 'elif'} {test}: w = {code.const(out)}", ind)
            code.emit("else: w = None" if pairs else "w = None", ind)
        if otherwise == "raw":
            code.emit("if w is not None: v = w", ind)
        elif otherwise is None:
            code.emit("if w is not None:", ind)
            ind += 1
            code.emit("v = w", ind)
        else:
            code.emit(f"v = w if w is not None else {code.const(otherwise)}", ind)
    if as_ in ("int", "port"):  # written out (as _as_int): a call cost more than the test
        code.emit("if v.isdigit() and v.isascii() and len(v) < 19:", ind)
        code.emit("v = int(v)", ind + 1)
        ind += 1
        if as_ == "port":
            code.emit("if v <= 65535:", ind)
            ind += 1
    elif as_ in ("lower", "upper"):
        code.emit(f"v = v.{as_}()", ind)
    elif as_ != "string":
        code.emit(f"v = {code.const(CONVERSIONS[as_])}(v)", ind)
        code.emit("if v is not None:", ind)
        ind += 1
    return ind


def _emit_conditions(code: _Code, spec: _Spec, raw: dict[str, Any], where: str, ind: int) -> int:
    """``requires`` and ``when`` as nested ifs from ``ind``; the indentation inside them."""
    for r in spec.strings(raw, "requires", f"{where}.requires"):
        code.emit(f"if {code.has(r)}:", ind)
        ind += 1
    for r in spec.strings(raw, "unless", f"{where}.unless"):
        code.emit(f"if not ({code.has(r)}):", ind)
        ind += 1
    for r in spec.strings(raw, "numbers", f"{where}.numbers"):  # as the int conversion reads
        code.emit(f"if (n := {code.cap(r)}) is not None and n.isdigit() and n.isascii() "
                  "and len(n) < 19:", ind)  # fmt: skip
        ind += 1
    tests = (("when", "({} or '').lower() in {}"), ("when_not", "({} or '').lower() not in {}"),
             ("is", "{} in {}"), ("is_not", "{} not in {}"))  # fmt: skip
    for key, test in tests:
        table = raw.get(key)
        if table is None:
            continue
        if not isinstance(table, dict) or not table:
            raise spec.fail(f"{where}.{key}", "must be a table of capture = [values]")
        for k in table:
            values = spec.strings(table, k, f"{where}.{key}.{k}")
            # when/when_not: any case; is/is_not: exactly these values
            chosen = frozenset(values if key.startswith("is") else (x.lower() for x in values))
            code.emit(f"if {test.format(code.cap(k), code.const(chosen))}:", ind)
            ind += 1
    for r in spec.strings(raw, "requires_field", f"{where}.requires_field"):
        if r not in code.fields_set:
            raise spec.fail(
                f"{where}.requires_field", f"{r!r} is not a field this file sets before"
            )
        code.emit(f"if {code.const(r)} in fields:", ind)
        ind += 1
    return ind


def _emit_assign(code: _Code, spec: _Spec, raw: Any, where: str, target: str) -> None:
    """Lines that run ``target`` (which reads ``v``) when the value spec gives a value; a list
    of specs gives the first one's that does (``[{ from = "act", map = "verdicts" },
    { value = "allow" }]``)."""
    if not isinstance(raw, list):
        code.emit(target, _emit_value(code, spec, raw, where))
        return
    if not raw or not all(isinstance(alt, str | dict) for alt in raw):
        raise spec.fail(where, "a list of value specs must hold capture names or tables")
    code.emit("ok = False")
    for j, alt in enumerate(raw):
        if j:
            code.emit("if not ok:")
            code.base += 1
        ind = _emit_value(code, spec, alt, f"{where}[{j}]")
        code.emit(target, ind)
        if j < len(raw) - 1:
            code.emit("ok = True", ind)
        if j:
            code.base -= 1


def _emit_fields(code: _Code, spec: _Spec, parent: dict[str, Any], where: str = "") -> None:
    for key, raw in spec.table(parent, "fields", f"{where}fields").items():
        _emit_assign(code, spec, raw, f"{where}fields.{key}", f"fields[{code.const(key)}] = v")
        code.fields_set.add(key)


def _emit_contract(code: _Code, spec: _Spec, parent: dict[str, Any], where: str = "") -> None:
    raw = parent.get("contract")
    if raw is None:
        return
    where += "contract"
    if not isinstance(raw, dict):
        raise spec.fail(where, "must be a table")
    spec.known(raw, ("kind", "action", "outcome", "user", "type", "default_action"), where)
    kind = raw.get("kind")
    if kind not in CONTRACTS:
        raise spec.fail(f"{where}.kind", f"must be one of {', '.join(CONTRACTS)}")

    def part(name: str, var: str) -> None:
        code.emit(f"{var} = None")
        if name in raw:
            _emit_assign(code, spec, raw[name], f"{where}.{name}", f"{var} = v")

    if kind == "firewall":
        if "action" not in raw:
            raise spec.fail(f"{where}.action", "the firewall contract needs an action")
        part("action", "a")
        code.emit(f"if a is not None: {code.const(network_verdict)}(fields, a)")
        default = raw.get("default_action")
        if default:
            if not isinstance(default, str):
                raise spec.fail(f"{where}.default_action", "must be a string")
            code.emit("else:")
            for key, value in (
                ("event.category", ["network"]),
                ("event.type", ["connection"]),
                ("event.action", default),
            ):
                # A fresh list per event: fields are mutable and later stages may extend them.
                const = code.const(value)
                rhs = f"list({const})" if isinstance(value, list) else const
                code.emit(f"fields[{code.const(key)}] = {rhs}", 2)
    elif kind == "authentication":
        if "action" not in raw or "outcome" not in raw:
            raise spec.fail(where, "the authentication contract needs action and outcome")
        part("action", "a")
        part("outcome", "o")
        part("user", "u")
        kind_type = code.const(raw.get("type", "start"))
        code.emit("if a is not None and o is not None:")
        code.emit(f"{code.const(authentication)}(fields, a, o, u, {kind_type})", 2)
    elif kind == "config_change":
        part("user", "u")
        code.emit(f"{code.const(config_change)}(fields, u)")
    elif kind == "malware":
        if "action" not in raw:
            raise spec.fail(f"{where}.action", "the malware contract needs an action")
        part("action", "a")
        part("outcome", "o")
        code.emit(f"if a is not None: {code.const(malware)}(fields, a, o)")
    else:
        code.emit(f"{code.const(intrusion_alert)}(fields)")


def _emit_match(code: _Code, spec: _Spec) -> None:
    raw = spec.table(spec.data, "match", "match")
    spec.known(raw, ("contains", "contains_any", "not_contains"), "match")
    for needle in spec.strings(raw, "contains", "match.contains"):
        code.emit(f"if {code.const(needle)} not in text: return False")
    anyof = spec.strings(raw, "contains_any", "match.contains_any")
    if anyof:
        code.emit(" and ".join(f"{code.const(n)} not in text" for n in anyof).join(
            ("if ", ": return False")))  # fmt: skip
    for needle in spec.strings(raw, "not_contains", "match.not_contains"):
        code.emit(f"if {code.const(needle)} in text: return False")


TOP = ("name", "description", "provenance", "select", "match", "parse", "observer", "contract",
       "fields", "maps", "time", "tests")  # fmt: skip

# -- the device's time: [[time]] alternatives, the first that reads is the message's -----------

# strptime directives a time format may use (no locale-dependent names beyond %b/%B/%a/%A/%p).
TIME_DIRECTIVES = frozenset("YmdHMSfbBaAyjpIz%")
TimeAlt = tuple[tuple[int, ...], bool, str, str, int | None]  # (inputs, join, as, format, zone)


def _zone_offset(tz: str | None) -> bool:
    """A ``+HHMM`` / ``-HHMM`` offset (FortiOS ``tz=``): the time is read in it."""
    return tz is not None and len(tz) == 5 and tz[0] in "+-" and tz[1:].isdigit()


def _time_of(alts: list[TimeAlt]) -> Callable[..., float | datetime | None]:
    """The device time of one message from the captures the alternatives read (in the order
    of the plan's ``time`` names): epoch seconds when the text says its zone, a naive datetime
    (the sender's zone applies) when not, ``None`` when no alternative reads."""

    def device_time(*values: str | None) -> float | datetime | None:
        for inputs, join, kind, fmt, zone in alts:
            if join:
                parts = [values[i] for i in inputs]
                if not all(parts):
                    continue
                text = " ".join(parts)  # type: ignore[arg-type]
            else:
                text = None
                for i in inputs:  # the first non-empty (``a or b``)
                    text = values[i]
                    if text:
                        break
                if not text:
                    continue
            got: float | datetime | None
            if kind == "epoch":
                got = epoch_digits(text)
            elif kind == "iso":
                got = iso_time(text)
            else:
                tz = values[zone] if zone is not None else None
                if _zone_offset(tz):
                    zoned = local_time(f"{text} {tz}", f"{fmt} %z")
                    got = zoned.timestamp() if zoned is not None else None
                else:
                    got = local_time(text, fmt)
            if got is not None:
                return got
        return None

    return device_time


def _emit_time(code: _Code, names: list[str], alts: list[TimeAlt]) -> None:
    """Lines that set ``msg.payload_time`` as :func:`_time_of` computes it (written out: a
    call and its loop cost more than these tests on the lines that carry a time)."""
    code.emit("t = None")
    for n, (inputs, join, kind, fmt, zone) in enumerate(alts):
        ind = 1
        if n:
            code.emit("if t is None:")
            ind = 2
        caps = [code.cap(names[i]) for i in inputs]
        if join:
            for j, expr in enumerate(caps):
                code.emit(f"j{j} = {expr}", ind)
            code.emit("if " + " and ".join(f"j{j}" for j in range(len(caps))) + ":", ind)
            text = " + ' ' + ".join(f"j{j}" for j in range(len(caps)))
        else:
            code.emit("tv = " + " or ".join(caps), ind)
            code.emit("if tv:", ind)
            text = "tv"
        ind += 1
        if kind == "epoch":
            code.emit(f"t = {code.const(epoch_digits)}({text})", ind)
        elif kind == "iso":
            code.emit(f"t = {code.const(iso_time)}({text})", ind)
        else:
            local = code.const(local_time)
            if zone is not None:
                code.emit(f"tz = {code.cap(names[zone])}", ind)
                code.emit("if tz is not None and len(tz) == 5 and tz[0] in '+-' and "
                          "tz[1:].isdigit():", ind)  # fmt: skip
                code.emit(f"t = {local}({text} + ' ' + tz, {code.const(fmt + ' %z')})", ind + 1)
                code.emit("if t is not None: t = t.timestamp()", ind + 1)
                code.emit("else:", ind)
                ind += 1
            code.emit(f"t = {local}({text}, {code.const(fmt)})", ind)
    code.emit("if t is not None: msg.payload_time = t")


def _time_spec(spec: _Spec) -> tuple[list[str], list[TimeAlt]] | None:
    """The validated ``[[time]]`` alternatives: the captures they read, and each alternative
    by index into them; ``None`` when the file has none."""
    raw = spec.data.get("time")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise spec.fail("time", "must be an array of tables ([[time]])")
    names: list[str] = []

    def index(name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    alts: list[TimeAlt] = []
    for i, t in enumerate(raw):
        where = f"time[{i}]"
        spec.known(t, ("from", "join", "as", "format", "zone"), where)
        if ("from" in t) == ("join" in t):
            raise spec.fail(where, "needs from (the first non-empty capture) or join")
        key = "from" if "from" in t else "join"
        inputs = spec.strings(t, key, f"{where}.{key}")
        if not inputs:
            raise spec.fail(f"{where}.{key}", "names at least one capture")
        if ("as" in t) == ("format" in t):
            raise spec.fail(where, "needs as (epoch or iso) or format (strptime)")
        kind, fmt = t.get("as", "format"), t.get("format", "")
        if "as" in t and kind not in ("epoch", "iso"):
            raise spec.fail(f"{where}.as", "must be epoch or iso")
        if "format" in t:
            if not isinstance(fmt, str) or "%" not in fmt:
                raise spec.fail(f"{where}.format", "must be a strptime format (%Y-%m-%d ...)")
            bad = [d for d in re.findall(r"%(.?)", fmt) if d not in TIME_DIRECTIVES]
            if bad:
                raise spec.fail(f"{where}.format", f"%{bad[0]} is not a directive files may use")
        zone = t.get("zone")
        if zone is not None and (not isinstance(zone, str) or not zone or "format" not in t):
            raise spec.fail(f"{where}.zone", "a capture name, with format")
        alts.append((tuple(index(n) for n in inputs), key == "join", kind, fmt,
                     index(zone) if zone else None))  # fmt: skip
    return names, alts


def compile_decoder(path: Path, data: dict[str, Any]) -> DecoderFile:
    """Compile one parsed decoder file; raises :class:`DecoderFileError` naming the key."""
    spec = _Spec(path, data)
    spec.known(data, TOP, "")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise spec.fail("name", "must be lower-case letters, digits and _ (at most 48)")
    select = spec.table(data, "select", "select")
    spec.known(select, ("programs", "prefixes", "fallback", "needle", "order"), "select")
    fallback = bool(select.get("fallback", False))
    needle = select.get("needle", "")
    if fallback and (not isinstance(needle, str) or not needle):
        raise spec.fail("select.needle", "a fallback decoder needs a needle")
    programs = spec.strings(select, "programs", "select.programs")
    prefixes = spec.strings(select, "prefixes", "select.prefixes")
    if not (programs or prefixes or fallback):
        raise spec.fail("select", "needs programs, prefixes or fallback (or it is never tried)")
    order = select.get("order", 50)
    if not isinstance(order, int):
        raise spec.fail("select.order", "must be an integer")
    obs = spec.table(data, "observer", "observer")
    spec.known(obs, ("vendor", "product", "type"), "observer")
    if obs and not (isinstance(obs.get("vendor"), str) and isinstance(obs.get("product"), str)):
        raise spec.fail("observer", "needs vendor and product")
    tests = data.get("tests", [])
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise spec.fail("tests", "must be an array of tables ([[tests]])")
    for i, t in enumerate(tests):
        spec.known(t, ("line", "expect", "absent", "claims", "vendor_hint", "time"), f"tests[{i}]")
        if not isinstance(t.get("line"), str):
            raise spec.fail(f"tests[{i}].line", "must be a string (the whole syslog line)")
        if "time" in t and iso_time(t["time"] if isinstance(t["time"], str) else None) is None:
            raise spec.fail(f"tests[{i}].time", "must be an ISO 8601 time (the device time)")
    code = _Code()
    code.emit("def decode(msg, fields):", 0)
    code.emit("text = msg.message")
    _emit_match(code, spec)
    steps = data.get("parse")
    code.dynamic = isinstance(steps, list) and any(
        isinstance(st, dict)
        and (
            any(k in st for k in ("kv", "json", "cef", "leef"))
            or any(  # a table case's kv
                isinstance(a, dict) and "kv" in a
                for c in (st.get("table") or {}).get("cases", [])
                if isinstance(c, dict) and isinstance(c.get("also"), list)
                for a in c["also"]
            )
        )
        for st in steps
    )
    if code.dynamic:
        code.emit("caps = {}")
    init = len(code.lines)
    timed = _time_spec(spec)

    def tail() -> None:
        for key in ("vendor", "product", "type"):
            if obs.get(key):
                code.emit(f"fields[{code.const('observer.' + key)}] = {code.const(obs[key])}")
        _emit_contract(code, spec, spec.data)
        _emit_fields(code, spec, spec.data)
        _emit_table_fields(code, spec)
        if timed is not None:
            _emit_time(code, *timed)
        code.emit("return True")

    _emit_steps(code, spec, tail)
    # Every capture variable exists on every path that reads it (None: not captured).
    top = set(code.locals.values()) - code.assigned
    for at, indent, names in sorted(code.table_inits, reverse=True):
        inner = [v for v in names if v not in code.read_outside]
        if inner:
            code.lines.insert(at, indent + " = ".join([*inner, "None"]))
        top.difference_update(inner)
    unset = [v for v in code.locals.values() if v in top]
    if unset:
        code.lines.insert(init, "    " + " = ".join([*unset, "None"]))
    # Constants as closure cells of a factory's inner function: read nearly as fast as locals
    # (globals are dict lookups), and, unlike keyword defaults, free at the call (a hundred
    # defaults measured ~100 ns per call on a message-id table).
    source = ["def make(" + ", ".join(code.consts) + "):", *("    " + ln for ln in code.lines)]
    source.append("    return decode")
    text = "\n".join(source)

    def build() -> DecodeFn:
        namespace: dict[str, Any] = {}
        exec(compile(text, f"<decoder {path}>", "exec"), namespace)  # noqa: S102
        made: DecodeFn = namespace["make"](**code.consts)
        return made

    native = _native_decoder(path, data, _time_of(timed[1]) if timed is not None else None)
    # With the native interpreter the generated Python runs only for the lines it defers
    # (non-ASCII text, escapes): it is byte-compiled on first use, which keeps ~80 ms of
    # compile() out of every start (the file was validated while its source was made).
    compiled: DecodeFn | None = build() if native is None else None

    def python_decode(msg: SyslogMessage, fields: Fields) -> bool:
        """The generated Python decoder (compiled on first use when ``native`` runs the file)."""
        nonlocal compiled
        if compiled is None:
            compiled = build()
        return compiled(msg, fields)

    def decode(msg: SyslogMessage, fields: Fields) -> bool:
        """The native interpreter when loaded (it leaves non-ASCII text to the Python one)."""
        if native is not None and dataplane.native is not None:
            got: bool | None = native.decode(msg, fields)
            if got is not None:
                return got
        if compiled is None:
            return python_decode(msg, fields)
        return compiled(msg, fields)

    decoder = VendorDecoder(name=name, decode=decode, programs=programs, prefixes=prefixes,
                            fallback=fallback, order=order, needle=needle,
                            native=native)  # fmt: skip
    return DecoderFile(
        decoder,
        path,
        description=str(data.get("description", "")),
        provenance=str(data.get("provenance", "")),
        tests=tests,
        python_decode=python_decode,
        native=native,
    )


MAX_FILE_BYTES = 1 << 20


def load_file(path: Path) -> DecoderFile:
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise DecoderFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DecoderFileError(f"{path}: {exc}") from None  # tomllib names line and column
    except UnicodeDecodeError:
        raise DecoderFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DecoderFileError(f"{path}: cannot read ({exc.strerror})") from None
    compiled = compile_decoder(path, data)
    compiled.digest = hashlib.sha256(raw).hexdigest()
    return compiled


BUILTIN_DIR = Path(__file__).with_name("files")


def builtin_files() -> list[DecoderFile]:
    """The shipped decoder files; a broken one is a bug in the package, so it raises."""
    return [load_file(p) for p in sorted(BUILTIN_DIR.glob("*.toml"))]


def load_paths(paths: Iterable[Path]) -> tuple[list[DecoderFile], list[str]]:
    """Site decoder files from files and folders (``*.toml``): the good ones, and one error
    line per bad one; a bad file never stops the others."""
    found: list[DecoderFile] = []
    errors: list[str] = []
    for root in paths:
        files = sorted(root.glob("*.toml")) if root.is_dir() else [root]
        if not root.exists():
            errors.append(f"{root}: no such file or folder")
            continue
        for path in files:
            try:
                found.append(load_file(path))
            except DecoderFileError as exc:
                errors.append(str(exc))
    return found, errors


# -- the plan: the same decoder as data for the native interpreter ----------------------------
#
# A validated file, normalized (shorthands expanded, maps resolved, every non-text constant an
# index into ``consts``) as JSON for ``appliance._dataplane.FileDecoder``. ``None`` when the
# file uses something the native interpreter does not take (a map to a non-text value): the
# Python decoder then runs alone.

NATIVE_CONVERSIONS = frozenset(CONVERSIONS)
NATIVE_CONTRACTS = frozenset({"firewall", "authentication", "config_change", "intrusion_alert"})


def _conditions_plan(raw: dict[str, Any]) -> dict[str, Any]:
    def values(key: str, fold: bool) -> list[list[Any]]:
        return [[k, sorted({v.lower() if fold else v for v in _listed(vs)})]
                for k, vs in (raw.get(key) or {}).items()]  # fmt: skip

    return {
        "requires": _listed(raw.get("requires")),
        "unless": _listed(raw.get("unless")),
        "when": values("when", True),
        "when_not": values("when_not", True),
        "is": values("is", False),
        "is_not": values("is_not", False),
        "requires_field": _listed(raw.get("requires_field")),
        "numbers": _listed(raw.get("numbers")),
    }


def _value_plan(raw: Any, data: dict[str, Any], consts: list[Any]) -> dict[str, Any] | None:
    if isinstance(raw, str):
        return {"names": [raw], "as": "string", "keep_empty": False}
    if isinstance(raw, list):
        alts = [_value_plan(alt, data, consts) for alt in raw]
        return None if any(a is None for a in alts) else {"alts": alts}
    conditions = _conditions_plan(raw)
    if "sum" in raw:
        return {"sum": _listed(raw["sum"]), **conditions}
    if "value" in raw:
        if isinstance(raw["value"], str):  # text the interpreter hands back itself
            return {"text": raw["value"], **conditions}
        consts.append(raw["value"])
        return {"const": len(consts) - 1, **conditions}
    names = [raw["from"]] if isinstance(raw["from"], str) else list(raw["from"])
    plan: dict[str, Any] = {
        "names": names,
        "as": raw.get("as", "string"),
        "keep_empty": bool(raw.get("keep_empty", False)),
        **conditions,
        "strip": raw.get("strip"),
        "first": raw.get("first"),
        "skip": _listed(raw.get("skip")),
    }
    if plan["as"] not in NATIVE_CONVERSIONS:
        return None
    if "map" in raw:
        table = data["maps"][raw["map"]]
        values = table.get("values", {})
        pairs = list(values.items()) if isinstance(values, dict) else [tuple(p) for p in values]
        if not all(isinstance(b, str) for _, b in pairs):
            return None
        plan["map"] = {
            "match": table.get("match", "exact"),
            "case": table.get("case", "none"),
            "pairs": [[str(a), b] for a, b in pairs],
        }
        plan["else"] = raw.get("else")
    return plan


def native_plan(data: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """``(plan JSON, constants)`` of an already compiled (so validated) file, or ``None``."""
    consts: list[Any] = []
    match = data.get("match", {})
    obs = data.get("observer", {})
    steps: list[dict[str, Any]] = []
    for step in data.get("parse", []):
        src = step.get("from", "message")
        base = {"from": None if src == "message" else src}
        if "regex" in step:
            steps.append({**base, "kind": "regex", "pattern": step["regex"],
                          "optional": bool(step.get("optional", False)),
                          "contains": step.get("contains"),
                          "within": step.get("within")})  # fmt: skip
        elif "cut" in step:
            c = step["cut"]
            steps.append({**base, "kind": "cut", "at": c["at"], "before": c.get("before"),
                          "after": c.get("after")})  # fmt: skip
        elif "kv" in step:
            k = step["kv"]
            steps.append({**base, "kind": "kv", "style": k.get("style", "quoted"),
                          "start": k.get("start", ""), "within": k.get("within"),
                          "min": k.get("min_pairs", 1),
                          "max": k.get("max_pairs", 256),
                          "lower": bool(k.get("lowercase_keys", False))})  # fmt: skip
        elif "csv" in step:
            c = step["csv"]
            tables = c.get("tables")
            steps.append({**base, "kind": "csv", "sep": c.get("separator", ","),
                          "quoted": bool(c.get("quoted", False)),
                          "key": c.get("key") if tables else None,
                          "tables": tables or {"": c["columns"]}})  # fmt: skip
        elif "cef" in step:
            steps.append({**base, "kind": "cef"})
        elif "leef" in step:
            steps.append({**base, "kind": "leef"})
        elif "pick" in step:
            steps.append({"kind": "pick", "from": None,
                          "names": [[k, _listed(v)] for k, v in step["pick"].items()]})  # fmt: skip
        elif "require" in step:
            r = step["require"]
            steps.append({"kind": "require", "from": None, "all": _listed(r.get("all")),
                          "any": _listed(r.get("any"))})  # fmt: skip
        elif "table" in step:
            cases = []
            for case in step["table"]["cases"]:
                got = _case_plan(case, data, consts)
                if got is None:
                    return None
                cases.append(got)
            steps.append({**base, "kind": "table", "key": step["table"]["key"], "cases": cases})
        else:
            return None  # a step the native interpreter does not take (json): Python alone
    plan: dict[str, Any] = {
        "match": {"all": _listed(match.get("contains")), "any": _listed(match.get("contains_any")),
                  "none": _listed(match.get("not_contains"))},
        "steps": steps,
        "observer": [[f"observer.{k}", obs[k]] for k in ("vendor", "product", "type")
                     if obs.get(k)],
        "contract": None,
        "fields": [],
        "time": [],
    }  # fmt: skip
    for t in data.get("time", []):  # the captures the reference's device_time reads, in order
        for n in [*_listed(t.get("from") or t.get("join")), *_listed(t.get("zone"))]:
            if n not in plan["time"]:
                plan["time"].append(n)
    parts = _outputs_plan(data, data, consts)
    if parts is None:
        return None
    plan["contract"], plan["fields"] = parts
    return json.dumps(plan), consts


def _outputs_plan(
    parent: dict[str, Any], data: dict[str, Any], consts: list[Any]
) -> tuple[dict[str, Any] | None, list[Any]] | None:
    """A file's (or a table case's) contract and fields as plans; ``None``: not native."""
    contract = parent.get("contract")
    out: dict[str, Any] | None = None
    if contract is not None:
        if contract["kind"] not in NATIVE_CONTRACTS:
            return None
        out = {"kind": contract["kind"], "type": contract.get("type", "start"),
               "default_action": contract.get("default_action")}  # fmt: skip
        for part in ("action", "outcome", "user"):
            if part in contract:
                got = _value_plan(contract[part], data, consts)
                if got is None:
                    return None
                out[part] = got
    fields: list[Any] = []
    for key, raw in parent.get("fields", {}).items():
        got = _value_plan(raw, data, consts)
        if got is None:
            return None
        fields.append([key, got])
    return out, fields


def _case_plan(case: dict[str, Any], data: dict[str, Any], consts: list[Any]) -> Any:
    parts = _outputs_plan(case, data, consts)
    if parts is None:
        return None
    also = [{"kind": "regex", "from": a.get("from") if a.get("from", "message") != "message"
             else None, "pattern": a["regex"], "optional": True, "contains": a.get("contains"),
             "within": a.get("within")} if "kv" not in a else
            {"kind": "kv", "from": a.get("from") if a.get("from", "message") != "message"
             else None, "style": a["kv"].get("style", "quoted"), "start": "", "within": None,
             "min": a["kv"].get("min_pairs", 1), "max": a["kv"].get("max_pairs", 256),
             "lower": False}
            for a in case.get("also", [])]  # fmt: skip
    return {"ids": _listed(case.get("ids")), "prefixes": _listed(case.get("prefixes")),
            "also": also, "input": case.get("from"), **_conditions_plan(case),
            "default": bool(case.get("default", False)), "pattern": case.get("regex"),
            "optional": bool(case.get("optional", False)),
            "contract": parts[0], "fields": parts[1]}  # fmt: skip


def _convert(name: str, value: str) -> Any:
    """The conversions the native interpreter leaves to the reference (addresses, epochs)."""
    return CONVERSIONS[name](value)


def _native_decoder(
    path: Path, data: dict[str, Any], device_time: Callable[..., Any] | None
) -> Any:
    if dataplane.native is None:
        return None
    plan = native_plan(data)
    if plan is None:
        return None
    try:
        return dataplane.native.FileDecoder(plan[0], plan[1], _convert, device_time)
    except ValueError as exc:  # a regex RE2 takes and Rust's regex does not
        log.info("decoder %s: Python interpreter only (%s)", path, exc)
        return None


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])
