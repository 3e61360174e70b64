"""What every channel takes and how it fails.

The engine renders one :class:`Message` per delivery (already grouped, escaped and cut to
size by the engine's renderer) and calls :meth:`Channel.send`; a channel never decides
routing or retries. It raises :class:`DeliveryError` with ``retryable`` set the way its
transport says (a 5xx, a timeout or a modem without registration: retry; a 4xx that names
the request as bad: give up and show the error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One notification as the engine rendered it.

    ``subject`` is one line; ``text`` the plain body (e-mail, chat); ``html`` the e-mail's
    HTML part when there is one; ``short`` the form for SMS (the channel splits or cuts it to
    its segment limits). ``incident_ids`` says which incidents it covers (one, or a group or
    digest), ``severity`` the highest among them, ``ack_url`` the signed acknowledgement
    link when the engine made one, and ``ack_code`` the code an SMS reply may carry.
    """

    subject: str
    text: str
    short: str
    severity: str = "low"
    html: str | None = None
    incident_ids: tuple[str, ...] = ()
    ack_url: str | None = None
    ack_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Files sent with the message where the transport carries files (e-mail): (file name,
    # MIME type, content). Chat and SMS channels send the text alone.
    attachments: tuple[tuple[str, str, bytes], ...] = ()
    # The channel's recipients this message goes to (``None``: all of its ``to``); the engine
    # narrows it when a recipient is past its rate limit. Never widens ``to``.
    recipients: tuple[str, ...] | None = None


class DeliveryError(Exception):
    """A delivery failed; ``retryable`` says whether trying again later can help, and
    ``retry_after`` (seconds) is the wait the far end asked for (HTTP ``Retry-After``)."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    """A configured channel, built once per config (see ``channels.build_channel``)."""

    name: str
    type: str

    async def send(self, message: Message) -> None:
        """Deliver ``message`` to every recipient of the channel, or raise DeliveryError."""
        ...

    async def close(self) -> None:
        """Release sessions, serial ports, connections."""
        ...
