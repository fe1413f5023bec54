"""The backup id, ``<kind>-<partition key>-<unique>``: a backup's folder name.

The sender builds it once per run (extract/build.py); the manifest parser accepts only
ids of this form, and the receiver reads the kind and partition back from an id (to say
which sender partition to re-run, or which run to request for an unreadable manifest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("partial", "complete")
UNIQUE_CHARS = 12  # of the run's id, lowercased: enough to tell two runs of one partition apart
# Partition keys: a partial's "YYYY-MM-DD-HH-MM", a complete's "YYYY-MM-DD" (UTC). \Z, not $:
# "$" also matches before a final newline.
_PATTERN = re.compile(
    r"^(partial|complete)-([0-9]{4}-[0-9]{2}-[0-9]{2}(?:-[0-9]{2}-[0-9]{2})?)-([0-9a-z]{1,32})\Z"
)


@dataclass(frozen=True)
class BackupId:
    kind: str
    partition_key: str
    unique: str

    def __str__(self) -> str:
        return f"{self.kind}-{self.partition_key}-{self.unique}"


def build_backup_id(kind: str, partition_key: str, unique: str) -> str:
    """The id of a new backup of ``kind`` for ``partition_key``; ``unique`` tells runs apart."""
    return str(BackupId(kind, partition_key, unique.lower()[:UNIQUE_CHARS]))


def parse_backup_id(backup_id: str) -> BackupId | None:
    """The parts of ``backup_id``, or None when it is not of the form this package builds."""
    match = _PATTERN.match(backup_id)
    return BackupId(*match.groups()) if match else None
