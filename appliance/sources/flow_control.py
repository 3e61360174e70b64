"""When a stream connection reads from its socket, sans I/O.

Two things hold reading back: backpressure (``paused``: the pipeline queue is full; TCP then
pushes back on the sender until the pipeline calls back with room) and a spent turn
(``yielding``: one connection handed ``FRAMES_PER_TURN`` frames over and continues on the next
loop turn, so a busy sender cannot starve the others). Either holds; reading resumes when
neither does. This object keeps the flags and says what the transport must do; the protocol
does it (tests/test_flow_control.py drives it in memory).
"""

from __future__ import annotations


class ReadFlow:
    __slots__ = ("paused", "reading_paused", "yielding")

    def __init__(self) -> None:
        self.paused = False
        self.yielding = False
        self.reading_paused = False  # what the transport was last told

    @property
    def holding(self) -> bool:
        """Frames are held back (by backpressure or a yield): the stream must not finish."""
        return self.paused or self.yielding

    def pause(self) -> bool:
        """Backpressure begins; ``True`` when it was not already on (count it, and ask the
        pipeline for a call when it has room)."""
        if self.paused:
            return False
        self.paused = True
        return True

    def resume(self) -> None:
        """The pipeline has room again."""
        self.paused = False

    def yield_turn(self) -> bool:
        """The turn's frame budget is spent; ``True`` when the continuation must be
        scheduled (it was not already)."""
        if self.yielding:
            return False
        self.yielding = True
        return True

    def next_turn(self) -> None:
        """The loop came back to this connection."""
        self.yielding = False

    def reading_change(self, closed: bool) -> bool | None:
        """``True``: pause reading, ``False``: resume it, ``None``: leave the transport as it
        is (no change, or the connection is closed)."""
        hold = self.holding
        if hold == self.reading_paused or closed:
            return None
        self.reading_paused = hold
        return hold
