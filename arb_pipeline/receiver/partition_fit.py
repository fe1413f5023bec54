"""Whether a backup in the inbox fits this receiver's partitions, checked before the inbox
sensor requests its run: Dagster refuses a run request for a partition key it doesn't know,
and it does so by failing the whole tick, so no backup would load at all.

Three causes, told apart from the manifest (no new field: its window says enough):

- **waits**: the key is on the receiver's grid but newer than its last partition (the window
  ends after the receiver's "now"): the receiver's clock is behind the sender's. The backup is
  requested on a later tick, once the partition exists.
- **refused**: the backup was made with other partitions: a window length other than the
  receiver's ``ARB_PARTIAL_MINUTES``, a key off its grid, or a key before its ``ARB_GO_LIVE``.
- **at fault**: no sender with any settings makes it: a key that is not a key, a window that
  doesn't start at its key or is off the grid its own length implies, or a partition that
  ends further ahead of the receiver's clock than ``ARB_MAX_CLOCK_AHEAD_SECONDS`` (the
  sender's clock is wrong). The sensor quarantines it with the reason.

"Now" is Dagster's own (the partitions definition's current time, which
``dg.partition_loading_context`` sets), so this agrees with the check Dagster makes next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL, SHARED
from arb_pipeline.receive.plausible import KEY_FORMATS, ahead_reason, clock_ahead, key_start
from arb_pipeline.settings import SharedSettings

OK, WAITS, REFUSED, AT_FAULT = "ok", "waits", "refused", "at fault"
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
    max_ahead: int | None = None,
) -> Fit:
    """The verdict for a backup of ``kind`` for ``partition_key`` with the manifest's ``window``
    (None when the manifest is unreadable and the key comes from the folder's name)."""
    partitions = partitions or (PARTIAL if kind == "partial" else COMPLETE)
    own = timedelta(minutes=shared.partial_minutes) if kind == "partial" else timedelta(days=1)
    start = key_start(kind, partition_key)
    if start is None:
        return Fit(
            AT_FAULT, f"partition key {partition_key!r} is not a {kind} key ({KEY_FORMATS[kind]}, UTC)"
        )
    if window is not None and window[0] != start:
        return Fit(
            AT_FAULT,
            f"its window starts at {window[0].isoformat()}, not where partition {partition_key} does",
        )
    if window is not None and window[1] - window[0] != own:
        if kind == "partial":
            return Fit(
                REFUSED,
                f"made with ARB_PARTIAL_MINUTES={_minutes(window[1] - window[0])} (its window "
                f"{window[0]:%H:%M}-{window[1]:%H:%M}); this receiver has "
                f"ARB_PARTIAL_MINUTES={shared.partial_minutes}: {FIX}",
            )
        return Fit(REFUSED, f"a complete whose window is {window[1] - window[0]}, not one day")
    first = partitions.get_first_partition_key()
    if first is not None and partition_key < first:  # keys of one format sort as times
        # A complete's partitions start the day before go-live (partitions.py).
        went_live = partition_key if kind == "partial" else (start + own).strftime("%Y-%m-%d")
        return Fit(
            REFUSED,
            f"partition {partition_key} is before this receiver's first partition {first}: the sender's "
            f"ARB_GO_LIVE is at or before {went_live}, this receiver has "
            f"ARB_GO_LIVE={shared.go_live:%Y-%m-%d-%H-%M}: {FIX}",
        )
    if partitions.get_partition_key_for_timestamp(start.timestamp()) != partition_key:
        if window is not None:  # made with this receiver's length, yet off its grid
            return Fit(
                AT_FAULT,
                f"partition {partition_key} is not on the {shared.partial_minutes}-minute grid its own "
                "window's length implies: the sender that wrote it is broken",
            )
        return Fit(
            REFUSED,
            f"partition {partition_key} is not on this receiver's {shared.partial_minutes}-minute grid: "
            f"the sender's ARB_PARTIAL_MINUTES differs from this receiver's "
            f"ARB_PARTIAL_MINUTES={shared.partial_minutes}: {FIX}",
        )
    if not partitions.has_partition_key(partition_key):
        with dg.partition_loading_context() as loading:  # Dagster's "now", as for the partitions
            now = loading.effective_dt
        ahead = clock_ahead(start + own, now, max_ahead)
        if ahead is not None:
            return Fit(AT_FAULT, ahead_reason(f"partition {partition_key}'s end", start + own, ahead, now))
        return Fit(
            WAITS,
            f"partition {partition_key} is not yet known to this receiver; "
            "its clock may be behind the sender's",
        )
    return Fit(OK)
