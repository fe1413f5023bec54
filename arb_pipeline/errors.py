"""Errors that name the thing that is wrong and the fix (promise 6)."""


class ArbError(Exception):
    """Base for every error this package raises on purpose.

    Messages say what is wrong, with which setting or object, and what to do.
    """

    # True when the backup being received is itself bad (altered, malformed, rows the
    # database refuses), so every retry would fail the same way: the receiver quarantines
    # it. False: the fix is elsewhere (a setting, the receiver's schema, a server) and the
    # backup waits in the inbox for the next try.
    backup_at_fault: bool = False


class ConfigError(ArbError):
    """A setting is missing or wrong."""


class SchemaError(ArbError):
    """A database schema is not what this version of arb_pipeline expects."""
