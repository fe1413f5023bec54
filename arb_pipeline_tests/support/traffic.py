"""App traffic on a sender database: the generator's Workload, in a chosen (closed) window."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from arb_pipeline.dev.generator.workload import DEFAULT_WEIGHTS, Workload

# Every operation but the app's cron "mark declined broken": it leaves timeStamp alone, so only a
# complete carries its changes, and partial-only parity would miss them.
BASELINE_OPS = {k: v for k, v in DEFAULT_WEIGHTS.items() if k != "mark_declined_broken"}
# Operations whose rows partials carry: a vote moves its event's timeStamp; reports are new
# rows. Purges and bulk updates are the complete's job.
PARTIAL_OPS = {"vote_bus": 30, "vote_stop": 20, "report": 10}


def traffic_at(dsn: str, media: Path, seed: int, app_time: datetime, weights: dict, steps: int) -> None:
    """``steps`` app requests with the app's clock set to ``app_time`` (a window that has closed)."""
    offset = app_time - datetime.now(timezone.utc)
    with Workload(dsn, media, seed=seed, clock_offset=offset, weights=weights) as work:
        for _ in range(steps):
            work.step()


def traffic(work: Workload, n: int = 120) -> None:
    """``n`` app requests on a running Workload."""
    for _ in range(n):
        work.step()
