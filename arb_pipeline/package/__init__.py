"""The backup package format: a folder per backup, published with its manifest last.

```
<kind>/<backup_id>/
    tables/<table>.jsonl.zst     partial: one JSON object per line (row_to_json), zstd
    tables/<table>.copy.zst      complete: PostgreSQL COPY text format, zstd
    schema.sql, restore.sql      complete: for disaster recovery with psql (never run by the receiver)
    media.tar                    the media files the rows reference (tar, uncompressed: images are)
    manifest.json                written last: the commit marker the receiver waits for
```
Plain Python, no Dagster.
"""
