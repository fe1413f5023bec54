"""TranSapp's table names, for the code written for TranSapp alone: the receiver's
derivations (postprocess/, run when the catalog says ``postprocess = "transapp"``) and the
TranSapp workload generator (dev/generator/). Which tables travel is the catalog file's
business (catalog.py), not this module's.
"""

from arb_pipeline.pg.quote import quote_ident

TRANSAPP_PREFIX = "AndroidRequests_"  # Django's app label of TranSapp


def app_table(short: str) -> str:
    """The full name of the TranSapp table ``short``: ``busv2`` -> ``AndroidRequests_busv2``."""
    return TRANSAPP_PREFIX + short


def app_table_sql(short: str) -> str:
    """``app_table(short)`` quoted, for SQL written as text."""
    return quote_ident(app_table(short))
