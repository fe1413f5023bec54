"""Change capture from PostgreSQL's logical decoding (issue 18): pgoutput decoding, the slot
and publication, per-table change sets. Plain Python: no Dagster here (docs/change-capture.md)."""
