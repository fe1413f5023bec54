"""arb_pipeline: backup and replication of a Django/PostgreSQL app between two servers."""

__version__ = "0.1.0"
