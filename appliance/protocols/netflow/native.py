"""The NetFlow decoder with its template state in the extension (``NetflowBatchDecoder``).

Why: the reference (:class:`~appliance.protocols.netflow.decoder.NetflowDecoder`) walks every
datagram and its sets in Python, so each datagram costs tens of µs before its first flow.
Here the walk, the state (exporters, templates, limits, sequences, sampling, held data) and
the records are native, and a whole ``recvmmsg`` batch is one call (:meth:`decode_batch`).
Same interface, limits, counters and saved state as the reference; which templates mean what
is still decided in Python (:func:`~appliance.protocols.netflow.template.native_plan`), once
per template. The Python decoder stays the reference and the fallback (``APPLIANCE_NATIVE=0``
or no extension); ``tests/test_netflow_native_state.py`` holds the two to the same output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance import dataplane
from appliance.event import Event
from appliance.protocols.netflow.decoder import NetflowDecoder, Record
from appliance.protocols.netflow.ie import LARGE_IES
from appliance.protocols.netflow.state import MAX_SAMPLERS, CountFn, DecoderLimits
from appliance.protocols.netflow.template import TRANSPORT, native_plan

# (payload, exporter address, exporter port, received at)
Datagram = tuple[bytes, str, int, float]


def _noop_count(family: str, reason: str, n: int) -> None:
    return None


def available() -> bool:
    return dataplane.native is not None and hasattr(dataplane.native, "NetflowBatchDecoder")


class NativeNetflowDecoder:
    """Decodes datagrams from many exporters; the state lives in the extension."""

    def __init__(self, limits: DecoderLimits | None = None, count: CountFn | None = None) -> None:
        assert dataplane.native is not None
        self.limits = lim = limits or DecoderLimits()
        self.counts: dict[tuple[str, str], int] = {}
        self._count_cb = count or _noop_count
        self._native = dataplane.native.NetflowBatchDecoder(
            (lim.max_exporters, lim.max_domains_per_exporter, lim.max_templates_per_exporter,
             lim.max_templates, lim.max_fields_per_template, lim.max_field_length,
             lim.template_lifetime, lim.pending_max_sets, lim.pending_max_age,
             lim.compiles_per_second),
            sorted(LARGE_IES),
            native_plan,
            TRANSPORT,
        )  # fmt: skip

    def _apply(self, rows: Iterable[tuple[str, str, int]]) -> None:
        counts, cb = self.counts, self._count_cb
        for family, reason, n in rows:
            key = (family, reason)
            counts[key] = counts.get(key, 0) + n
            cb(family, reason, n)

    def count(self, family: str, reason: str, n: int = 1) -> None:
        self._apply(((family, reason, n),))

    # ------------------------------------------------------------------------------ entry

    def decode(self, data: bytes, exporter: str, now: float, port: int = 0) -> list[Record]:
        """All flow records in one datagram; a caught panic raises (the caller counts it)."""
        records, rows = self._native.decode(data, exporter, now, port)
        self._apply(rows)
        if records is None:
            raise RuntimeError("native netflow decoder failed on a datagram")
        return records  # type: ignore[no-any-return]

    def decode_batch(self, batch: list[Datagram]) -> list[tuple[list[Record], Any] | None]:
        """Each datagram's records and their rollup columns (``FlowColumns``, for
        ``FlowRollup.add_columns``), in order; ``None``: that datagram failed and is lost."""
        out, rows = self._native.decode_batch(batch)
        self._apply(rows)
        return out  # type: ignore[no-any-return]

    def decode_flows(self, batch: list[Datagram], listener: str) -> list[tuple[Any, Any] | None]:
        """:meth:`decode_batch` with each datagram's flows kept native (a ``FlowEvents``: the
        sequence of the listener's events, module ``netflow``, created at the datagram's
        receive time, ``listener`` set, each made only when Python reads it; the native
        stages read the flows in place)."""
        out, rows = self._native.decode_flows(batch, Event, listener)
        self._apply(rows)
        return out  # type: ignore[no-any-return]

    # ---------------------------------------------------------------------- the state

    @property
    def template_count(self) -> int:
        return int(self._native.template_count)

    @property
    def domain_count(self) -> int:
        return int(self._native.domain_count)

    def templates_per_domain(self) -> list[int]:
        """Templates held per exporter (domain), least recently heard first."""
        return list(self._native.templates_per_domain())

    @property
    def dirty(self) -> bool:
        return bool(self._native.dirty)

    @property
    def refreshed(self) -> bool:
        return bool(self._native.refreshed)

    def expire(self, now: float) -> int:
        n, rows = self._native.expire(now)
        self._apply(rows)
        return int(n)

    def export_state(self) -> dict[str, Any]:
        return self._native.export_state()  # type: ignore[no-any-return]

    def import_state(self, state: dict[str, Any], now: float) -> int:
        """The reference's :meth:`NetflowDecoder.import_state`, step for step, on the native
        state. A value no wire field can hold (a version, domain, template id or field past
        its wire width, a rate past 128 bits: only a tampered row) counts ``bad_saved_state``
        and skips the rest of its domain, where the reference would keep it."""
        native = self._native
        loaded = 0
        if not isinstance(state, dict) or state.get("format") != 1:
            return 0
        for item in state.get("domains", []):
            try:
                key = (str(item["exporter"]), int(item["version"]), int(item["domain"]))
                native.import_domain(*key, now)
                native.set_default_rate(*key, max(1, int(item.get("default_rate", 1))))
                for k, v in item.get("sampler_rates", [])[:MAX_SAMPLERS]:
                    native.set_sampler_rate(*key, int(k), max(1, int(v)))
                init = item.get("init_time")
                native.set_init_time(*key, float(init) if init is not None else None)
                saved = sorted(item.get("templates", []), key=lambda t: float(t[3]))
                for tid, scope, fields, last_seen in saved:
                    if now - float(last_seen) > self.limits.template_lifetime:
                        continue
                    specs = [(int(a), int(b), int(c)) for a, b, c in fields]
                    before = native.template_count
                    native.import_template(*key, int(tid), specs, int(scope), float(last_seen))
                    loaded += native.template_count - before
            except (LookupError, TypeError, ValueError, OverflowError):
                self.count("error", "bad_saved_state")
        self._apply(native.take_counts())
        native.mark_saved()
        return loaded


def new_decoder(
    limits: DecoderLimits | None = None, count: CountFn | None = None
) -> NativeNetflowDecoder | NetflowDecoder:
    """The native decoder when the extension runs, else the Python reference."""
    if available():
        return NativeNetflowDecoder(limits, count)
    return NetflowDecoder(limits, count)
