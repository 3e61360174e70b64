"""Telling people: incidents become notifications on channels (e-mail, SMS, chat).

Layout:

- :mod:`appliance.notify.channels`: one module per channel type; each turns a
  :class:`~appliance.notify.channels.base.Message` into a delivery on its transport and
  raises :class:`~appliance.notify.channels.base.DeliveryError` when it cannot.
- The engine (routing, grouping, digests, rate limits, quiet hours, silences, escalation,
  acknowledgement links) decides what to send where and keeps it in a durable outbox that is
  committed with the incident, like the upstream forwarder's.
"""
