"""Deterministic TranSapp workload generator for the sender database.

- ``seed_reference``: one GTFS version's stops, services, routes, plus events, buses, users.
- ``Workload``: live traffic with the app's write patterns (votes that update events,
  reports with images, trips, purges, bulk updates, late-committing transactions).
- ``build_scale`` / ``build_event_window``: set-based bulk volume for benchmarks.

Same seed, same reference rows and same sequence of operations.
"""

from arb_pipeline.dev.generator.common import GeneratorError
from arb_pipeline.dev.generator.reference import ReferenceCounts, seed_reference
from arb_pipeline.dev.generator.scale import ScaleResult, build_event_window, build_scale, database_size
from arb_pipeline.dev.generator.votes import LateVote, Vote, VoteResult
from arb_pipeline.dev.generator.workload import DEFAULT_WEIGHTS, Op, Workload

__all__ = [
    "DEFAULT_WEIGHTS",
    "GeneratorError",
    "LateVote",
    "Op",
    "ReferenceCounts",
    "ScaleResult",
    "Vote",
    "VoteResult",
    "Workload",
    "build_event_window",
    "build_scale",
    "database_size",
    "seed_reference",
]
