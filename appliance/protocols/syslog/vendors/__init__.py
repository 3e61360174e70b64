"""Vendor decoders: one module per vendor, found here at import; a new vendor is one module.

Each module defines ``DECODER`` (a :class:`~.base.VendorDecoder`). Selection, cheapest first:
the sender's configured vendor; the syslog program name (``sshd``, ``filterlog``); the first
characters of the message (``%ASA-``, ``CEF:``, ``date=``); then the few content fallbacks
(JSON, key=value). A message nobody claims keeps its syslog fields and raw text.
"""

from __future__ import annotations

import importlib
import pkgutil

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import Fields, VendorDecoder


class VendorRegistry:
    def __init__(self, decoders: list[VendorDecoder]) -> None:
        self.by_name: dict[str, VendorDecoder] = {}
        self.by_program: dict[str, list[VendorDecoder]] = {}
        self.by_first: dict[str, list[tuple[str, VendorDecoder]]] = {}
        self.fallbacks: list[VendorDecoder] = []
        for d in sorted(decoders, key=lambda d: (d.order, d.name)):
            if d.name in self.by_name:
                raise ValueError(f"two vendor decoders named {d.name!r}")
            self.by_name[d.name] = d
            for prog in d.programs:
                self.by_program.setdefault(prog, []).append(d)
            for prefix in d.prefixes:
                self.by_first.setdefault(prefix[0], []).append((prefix, d))
            if d.fallback:
                if not d.needle:
                    raise ValueError(f"fallback decoder {d.name!r} needs a needle")
                self.fallbacks.append(d)
        self._needles = tuple(dict.fromkeys(d.needle for d in self.fallbacks))

    def decode(self, msg: SyslogMessage, fields: Fields, hint: VendorDecoder | None = None) -> str:
        """Add vendor fields; return the decoder's name, or ``""`` when none claimed it."""
        if hint is not None and hint.decode(msg, fields):
            return hint.name
        app = msg.app_name
        if app is not None:
            cands = self.by_program.get(app)
            if cands is None and "(" in app:  # "su(pam_unix)" → "su"
                cands = self.by_program.get(app[: app.index("(")])
            if cands is not None:
                for d in cands:
                    if d.decode(msg, fields):
                        return d.name
        text = msg.message
        if text:
            for prefix, d in self.by_first.get(text[0], ()):
                if text.startswith(prefix) and d.decode(msg, fields):
                    return d.name
            for needle in self._needles:
                if needle in text:
                    for d in self.fallbacks:
                        if d.decode(msg, fields):
                            return d.name
                    break
        return ""


def _discover() -> list[VendorDecoder]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        decoder = getattr(module, "DECODER", None)
        if isinstance(decoder, VendorDecoder):
            found.append(decoder)
    return found


REGISTRY = VendorRegistry(_discover())

__all__ = ["REGISTRY", "VendorDecoder", "VendorRegistry"]
