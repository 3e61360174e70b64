"""SQLite storage: one writer connection (batched transactions), one reader connection.

:class:`Store` (``db``) owns the connections; ``schema``, ``events``, ``retention``,
``space`` and ``state`` are what is done over them, ``segments`` and ``search`` the event
format and its queries.
"""

from appliance.store.db import Store
from appliance.store.errors import StoreError

__all__ = ["Store", "StoreError"]
