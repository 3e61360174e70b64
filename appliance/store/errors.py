"""The store's own exception, apart so every store module can raise it without importing the
connection owner."""


class StoreError(Exception):
    """The database could not be opened or written."""
