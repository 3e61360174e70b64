"""SQLite storage: one writer connection (batched transactions), one reader connection."""

from appliance.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
