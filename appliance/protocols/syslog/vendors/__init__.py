"""Vendor decoders: declarative files (``files/*.toml``, docs/decoders.md) and, where a format
needs code, one module per vendor defining ``DECODER`` (a :class:`~.base.VendorDecoder`). Sites
add their own files (``[decoders] paths``); a site file named like a built-in replaces it.

Selection, cheapest first:
the sender's configured vendor; the syslog program name (``sshd``, ``filterlog``); the first
characters of the message (``%ASA-``, ``CEF:``, ``date=``); then the few content fallbacks
(JSON, key=value). A message nobody claims keeps its syslog fields and raw text.
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import Fields, VendorDecoder
from appliance.protocols.syslog.vendors.declarative import (
    DecoderFile,
    DecoderFileError,
    builtin_files,
    load_paths,
)

log = logging.getLogger(__name__)


class VendorRegistry:
    def __init__(self, decoders: list[VendorDecoder]) -> None:
        self.by_name: dict[str, VendorDecoder] = {}
        self.by_program: dict[str, list[VendorDecoder]] = {}
        self.by_first: dict[str, list[tuple[str, VendorDecoder]]] = {}
        self.fallbacks: list[VendorDecoder] = []
        self.last_resort: list[VendorDecoder] = []
        for d in sorted(decoders, key=lambda d: (d.order, d.name)):
            if d.name in self.by_name:
                raise ValueError(f"two vendor decoders named {d.name!r}")
            self.by_name[d.name] = d
            for prog in d.programs:
                self.by_program.setdefault(prog, []).append(d)
            for prefix in d.prefixes:
                self.by_first.setdefault(prefix[0], []).append((prefix, d))
            if d.last_resort:
                self.last_resort.append(d)
            if d.fallback:
                if not d.needle:
                    raise ValueError(f"fallback decoder {d.name!r} needs a needle")
                self.fallbacks.append(d)
        self._needles = tuple(dict.fromkeys(d.needle for d in self.fallbacks))

    def decode(self, msg: SyslogMessage, fields: Fields, hint: VendorDecoder | None = None) -> str:
        """Add vendor fields; return the decoder's name, or ``""`` when none claimed it."""
        sd = msg.structured_data
        if hint is not None and (sd or not hint.structured_only) and hint.decode(msg, fields):
            return hint.name
        app = msg.app_name
        if app is not None:
            cands = self.by_program.get(app)
            if cands is None and "(" in app:  # "su(pam_unix)" → "su"
                cands = self.by_program.get(app[: app.index("(")])
            if cands is not None:
                for d in cands:
                    if (sd or not d.structured_only) and d.decode(msg, fields):
                        return d.name
        text = msg.message
        if text:
            for prefix, d in self.by_first.get(text[0], ()):
                if (
                    text.startswith(prefix)
                    and (not d.prefix_needle or d.prefix_needle in text)
                    and (sd or not d.structured_only)
                    and d.decode(msg, fields)
                ):
                    return d.name
            for needle in self._needles:
                if needle in text:
                    for d in self.fallbacks:
                        if (sd or not d.structured_only) and d.decode(msg, fields):
                            return d.name
                    break
        for d in self.last_resort:
            if (sd or not d.structured_only) and d.decode(msg, fields):
                return d.name
        return ""


_NOT_DECODERS = frozenset(
    {"base", "declarative", "cli", "generic", "cef_format"}
)  # the machinery, not vendors


def _discover() -> list[VendorDecoder]:
    found: list[VendorDecoder] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_DECODERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        decoders = getattr(module, "DECODERS", None) or (getattr(module, "DECODER", None),)
        found.extend(d for d in decoders if isinstance(d, VendorDecoder))
    return found


# The built-ins are loaded on first use (module ``__getattr__``), not at import: compiling the
# shipped files and importing the vendor modules is ~0.1-0.2 s of CPU that a command line
# which decodes nothing (``appliance users``, ``tokens``, ``db``, ``version``) need not pay.
@dataclass(frozen=True, slots=True)
class _Builtins:
    files: list[DecoderFile]
    decoders: list[VendorDecoder]
    registry: VendorRegistry


@functools.cache
def _builtins() -> _Builtins:
    files = builtin_files()
    decoders = _discover() + [f.decoder for f in files]
    return _Builtins(files, decoders, VendorRegistry(decoders))


_LAZY = {"BUILTIN_FILES": "files", "BUILTIN": "decoders", "REGISTRY": "registry"}


def __getattr__(name: str) -> object:
    """``BUILTIN_FILES``, ``BUILTIN`` and ``REGISTRY``, loaded on first access."""
    if name in _LAZY:
        value = getattr(_builtins(), _LAZY[name])
        globals()[name] = value  # later reads skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    BUILTIN_FILES: list[DecoderFile]
    BUILTIN: list[VendorDecoder]
    REGISTRY: VendorRegistry


@dataclass(slots=True)
class Decoders:
    """The decoders one appliance runs: built-ins plus its site files, and what failed."""

    registry: VendorRegistry
    files: list[DecoderFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def build_registry(site_paths: Iterable[Path] = ()) -> Decoders:
    """Built-in decoders plus the site files under ``site_paths``; a site file whose name is a
    built-in's replaces it (a site's fix for a firmware's format change, say)."""
    builtins = _builtins()
    site, errors = load_paths(site_paths)
    if not site and not errors:
        return Decoders(builtins.registry, list(builtins.files))
    chosen: dict[str, VendorDecoder] = {d.name: d for d in builtins.decoders}
    files = {f.decoder.name: f for f in builtins.files}
    seen: dict[str, Path] = {}
    for f in site:
        name = f.decoder.name
        if name in seen:
            errors.append(f"{f.path}: name: {name!r} is already {seen[name]}; file skipped")
            continue
        seen[name] = f.path
        if name in chosen:
            log.info("decoder %s: the site file %s replaces the built-in", name, f.path)
        chosen[name] = f.decoder
        files[name] = f
    return Decoders(VendorRegistry(list(chosen.values())), list(files.values()), errors)


__all__ = [
    "REGISTRY",
    "DecoderFileError",
    "Decoders",
    "VendorDecoder",
    "VendorRegistry",
    "build_registry",
]
