"""Errors that name the thing that is wrong and the fix (promise 6)."""


class ArbError(Exception):
    """Base for every error this package raises on purpose.

    Messages say what is wrong, with which setting or object, and what to do.
    """


class ConfigError(ArbError):
    """A setting is missing or wrong."""


class SchemaError(ArbError):
    """A database schema is not what this version of arb_pipeline expects."""


class BackupDataError(ArbError):
    """A backup that passed verification (sizes, hashes, row counts) but whose rows the
    receiver's database can't take: the backup itself is bad, so it is quarantined with
    this message (it would fail the same way on every retry)."""
