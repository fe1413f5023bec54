"""Is the capture slot hurting the sender's server? ``slot_health`` turns a ``SlotStatus`` into
problems and warnings, each with its fix, for ``arb check``, ``arb capture status`` and the
sender's alert sensor alike (issue 18, item 4).

A slot keeps every WAL segment from its restart position: one nobody reads fills the disk,
unless ``max_slot_wal_keep_size`` caps it, and then the server invalidates the slot ("lost")
and the changes after its last read are gone from the WAL. Only a complete recovers them.
"""

from __future__ import annotations

from dataclasses import dataclass

from arb_pipeline.capture.status import RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE, SlotStatus, slot_status

MB = 1 << 20
LOST_FIX = (
    "the slot was invalidated; run `arb capture setup` to recreate it and materialize a complete "
    "so nothing is skipped"
)
KEEP_SIZE_FIX = (
    f"as a superuser: ALTER SYSTEM SET max_slot_wal_keep_size = '{RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE}'; "
    "SELECT pg_reload_conf(); (size it for the longest pause you will ride out; past it the slot is "
    "lost and a complete resyncs)"
)
BEHIND_FIX = (
    "find why capture stopped reading (failed partial runs, the sender's Dagster down); if capture "
    "is off for good, run `arb capture drop` to free the WAL"
)


@dataclass(frozen=True)
class Finding:
    kind: str  # lost, unreserved, lag, retained, missing, keep_size: what an alert remembers
    problem: str
    fix: str


@dataclass(frozen=True)
class SlotHealth:
    status: SlotStatus
    publication_exists: bool
    problems: tuple[Finding, ...]  # the slot hurts or will hurt the server, or changes were missed
    warnings: tuple[Finding, ...]  # not yet harmful: max_slot_wal_keep_size unlimited

    @property
    def set_up(self) -> bool:
        """Capture was set up here (a slot or its publication exists): otherwise nothing to say."""
        return self.status.exists or self.publication_exists

    def figures(self) -> str:
        """One line: lag, retained WAL, wal_status, active, max_slot_wal_keep_size."""
        s = self.status
        if not s.exists:
            return f"replication slot {s.slot} does not exist"
        retained = "none (lost)" if s.retained_wal_bytes is None else mb(s.retained_wal_bytes)
        keep_bytes = s.max_slot_wal_keep_size_bytes
        keep = "-1 (unlimited)" if keep_bytes is None else mb(keep_bytes)
        return (
            f"replication slot {s.slot}: lag {mb(s.lag_bytes)}, retained WAL {retained}, "
            f"wal_status {s.wal_status}, {'active' if s.active else 'not active'}, "
            f"max_slot_wal_keep_size {keep}"
        )


def mb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / MB:,.1f} MB"


def read_slot_health(conn, slot: str, publication: str, max_lag_mb: float) -> SlotHealth:
    """Two catalog lookups, nothing decoded: cheap enough for every sensor tick."""
    status = slot_status(conn, slot)
    published = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    return slot_health(status, bool(published), max_lag_mb)


def slot_health(status: SlotStatus, publication_exists: bool, max_lag_mb: float) -> SlotHealth:
    slot, limit = status.slot, max_lag_mb * MB
    problems: list[Finding] = []
    warnings: list[Finding] = []
    if not status.exists:
        if publication_exists:  # set up once, then the slot was dropped (by hand?)
            problems.append(
                Finding(
                    "missing",
                    f"replication slot {slot} does not exist but its publication does: changes since it "
                    "went are not captured",
                    "run `arb capture setup` to recreate it and materialize a complete so nothing is "
                    "skipped, or `arb capture drop` if capture is off",
                )
            )
        return SlotHealth(status, publication_exists, tuple(problems), ())
    if status.lost:
        problems.append(
            Finding(
                "lost",
                f"replication slot {slot} is lost: the server removed WAL it still needed "
                "(past max_slot_wal_keep_size), so changes since its last read were not captured",
                LOST_FIX,
            )
        )
    elif status.wal_status == "unreserved":
        problems.append(
            Finding(
                "unreserved",
                f"replication slot {slot} is past max_slot_wal_keep_size (wal_status unreserved): the "
                "next checkpoint removes WAL it still needs and the slot is lost",
                BEHIND_FIX,
            )
        )
    for kind, what, size in (
        ("lag", "unread WAL (lag)", status.lag_bytes),
        ("retained", "retained WAL", status.retained_wal_bytes),
    ):
        if size is not None and size > limit and not status.lost:
            problems.append(
                Finding(
                    kind,
                    f"replication slot {slot} holds {mb(size)} of {what}, past "
                    f"ARB_CAPTURE_MAX_LAG_MB ({max_lag_mb:g} MB)",
                    BEHIND_FIX,
                )
            )
    if status.max_slot_wal_keep_size_bytes is None:
        warnings.append(
            Finding(
                "keep_size",
                "max_slot_wal_keep_size is -1: a slot nobody reads keeps WAL until the sender's disk fills",
                KEEP_SIZE_FIX,
            )
        )
    return SlotHealth(status, publication_exists, tuple(problems), tuple(warnings))
