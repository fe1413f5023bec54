"""Whether a backup in the inbox fits this receiver's partitions, checked before the inbox
sensor requests its run: Dagster refuses a run request for a partition key it doesn't know,
and it does so by failing the whole tick, so no backup would load at all.

Two causes, told apart from the manifest (no new field: its window says enough):

- **waits**: the key is on the receiver's grid but newer than its last partition (the window
  ends after the receiver's "now"): the receiver's clock is behind the sender's. The backup is
  requested on a later tick, once the partition exists.
- **refused**: the backup was made with other partitions: a window length other than the
  receiver's ``ARB_PARTIAL_MINUTES``, a key off its grid, or a key before its ``ARB_GO_LIVE``.

"Now" is Dagster's own (the partitions definition's current time, which
``dg.partition_loading_context`` sets), so this agrees with the check Dagster makes next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL, SHARED
from arb_pipeline.settings import SharedSettings

OK, WAITS, REFUSED = "ok", "waits", "refused"
FIX = "set the same value on both servers and restart the receiver's code location (docs/operations.md)"


@dataclass(frozen=True)
class Fit:
    verdict: str  # OK, WAITS or REFUSED
    reason: str = ""


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g}"


def fit(
    kind: str,
    partition_key: str,
    window: tuple[datetime, datetime] | None = None,
    *,
    shared: SharedSettings = SHARED,
    partitions: dg.TimeWindowPartitionsDefinition | None = None,
) -> Fit:
    """The verdict for a backup of ``kind`` for ``partition_key`` with the manifest's ``window``
    (None when the manifest is unreadable and the key comes from the folder's name)."""
    partitions = partitions or (PARTIAL if kind == "partial" else COMPLETE)
    own = timedelta(minutes=shared.partial_minutes) if kind == "partial" else timedelta(days=1)
    if window is not None and window[1] - window[0] != own:
        if kind == "partial":
            return Fit(
                REFUSED,
                f"made with ARB_PARTIAL_MINUTES={_minutes(window[1] - window[0])} (its window "
                f"{window[0]:%H:%M}-{window[1]:%H:%M}); this receiver has "
                f"ARB_PARTIAL_MINUTES={shared.partial_minutes}: {FIX}",
            )
        return Fit(REFUSED, f"a complete whose window is {window[1] - window[0]}, not one day")
    try:
        start = partitions.start_time_for_partition_key(partition_key)
    except ValueError:
        return Fit(REFUSED, f"partition key {partition_key!r} is not a {kind} key")
    if partitions.get_partition_key_for_timestamp(start.timestamp()) != partition_key:
        return Fit(
            REFUSED,
            f"partition {partition_key} is not on this receiver's {shared.partial_minutes}-minute grid: "
            f"the sender's ARB_PARTIAL_MINUTES differs from this receiver's "
            f"ARB_PARTIAL_MINUTES={shared.partial_minutes}: {FIX}",
        )
    first = partitions.get_first_partition_key()
    if first is not None and partition_key < first:
        return Fit(
            REFUSED,
            f"partition {partition_key} is before this receiver's first partition {first}: the sender's "
            f"ARB_GO_LIVE is at or before {partition_key}, this receiver has "
            f"ARB_GO_LIVE={shared.go_live:%Y-%m-%d-%H-%M}: {FIX}",
        )
    if not partitions.has_partition_key(partition_key):
        return Fit(
            WAITS,
            f"partition {partition_key} is not yet known to this receiver; "
            "its clock may be behind the sender's",
        )
    return Fit(OK)
