"""Running derivations incrementally: which rows, in what batches, written where TranSappViz reads.

Which rows a run computes, per derivation:

* **pending**: rows a load inserted or changed since the derivation last ran. Loads set
  ``arb_changed_at = clock_timestamp()`` on those rows (and the column's default on
  inserts). The search starts from ``done_through`` (an index range on
  ``arb_changed_at``), so a 5-minute window costs what its rows cost. ``done_through``
  is read under the loader's advisory lock: every row changed before it is committed,
  every row changed after it is found next time.
* **extra**: rows whose inputs in *other* tables changed (a new vote moves an event's
  location; a new trip pose can give it a direction; a new bus resolves a report's).
* **window**: every row whose cursor (``timeStamp``) lies in a window, changed or not,
  when asked (a run by hand for a past partition, a backfill).
* **everything**: the first run, or when the derivation's reference digest (zones,
  periods, stops, settings, code version) differs from the one of its last run.

Derivations run together table by table: the derivations of one source table compute
the union of their rows, batch by batch, each into its own ``arb_pp_out``, and those
writing the table's own columns share **one** UPDATE per batch (``update_from``), so a
row is rewritten once, not once per derivation. A row whose values are unchanged is not
rewritten. Each batch is one transaction, taken under the loader's lock so it never
interleaves with a load; a run that dies part-way leaves its batches done, and the next
run redoes only what is still pending. When every derivation of a table has passed a
row's change, the row gets ``transformed = true`` (TranSappViz's own marker). Two
connections work at once (``WORKERS``), on two tables, or on the two halves by id of a
table a derivation recomputes whole (a full run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from psycopg import sql

from arb_pipeline.pg.connect import connect
from arb_pipeline.postprocess.batches import (
    ALL,
    Member,
    Plan,
    collect,
    create_out,
    record_problems,
    sweep_problems,
    todo_table,
    todo_tables,
)
from arb_pipeline.postprocess.engine import (
    BATCH_ROWS,
    CLOCK_MARGIN,
    LOAD_LOCK,
    OUT,
    SAMPLE_PROBLEMS,
    TODO,
    Derivation,
    RunResult,
    Scope,
    SourceResult,
    update_from,
)
from arb_pipeline.postprocess.transformed import mark_transformed, others_done

log = logging.getLogger(__name__)

# Connections working at once: the server does most of the work (index searches, writes),
# so two keep both cores of a small receiver busy.
WORKERS = 2


def _lock_key(name: str) -> str:
    return f"arb_pipeline.postprocess.{name}"


def _snapshot_time(conn) -> datetime:
    """A time before which every load has committed: taken while no load runs."""
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOAD_LOCK,))
    try:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOAD_LOCK,))


def _plan(conn, derivation: Derivation, scope: Scope) -> Plan:
    state = conn.execute(
        "SELECT done_through, reference_digest FROM arb_postprocess_state WHERE derivation = %s",
        (derivation.name,),
    ).fetchone()
    digest = derivation.reference_digest(conn)
    if scope.full:
        mode, reason = "full", "a full reprocess was asked for"
    elif state is None or state[0] is None:
        mode, reason = "full", "first run"
    elif state[1] != digest:
        mode, reason = "full", "reference data or settings changed since the last run"
    else:
        mode, reason = "incremental", f"rows changed since {state[0].isoformat()}"
    return Plan(
        derivation, RunResult(derivation.name, mode, reason), None if mode == "full" else state[0], digest
    )


def _session(conn) -> None:
    # Batches are many short index lookups: compiling them (JIT) costs more than it saves.
    conn.execute("SET jit = off")
    # Derived rows can be recomputed, and a crash loses only the newest commits, in
    # order (the state row is written last): no batch needs to wait for its WAL flush.
    conn.execute("SET synchronous_commit = off")


def _work(dsn: str, queue: list, scope: Scope, batch_rows: int, covering, lock: threading.Lock) -> dict:
    """One worker: its own connection, taking tables from ``queue`` until none is left;
    returns its seconds per derivation."""
    clock: dict[str, float] = defaultdict(float)
    contexts: dict[str, Any] = {}  # prepared per connection (some are temporary tables)
    with connect(dsn, autocommit=True, application_name="arb_postprocess") as conn:
        _session(conn)
        while True:
            with lock:
                if not queue:
                    return clock
                table, members, shard = queue.pop(0)
            for m in members:
                d = m.plan.derivation
                if d.name not in contexts:
                    t0 = time.perf_counter()
                    contexts[d.name] = d.prepare(conn)
                    clock[d.name] += time.perf_counter() - t0
            _run_table(conn, table, members, shard, contexts, scope, batch_rows, covering, clock)


def _shards(table: str, members: list[Member], workers: int) -> list[tuple]:
    """A table's work: in ``workers`` parts by id (each its own members, merged after) when
    a derivation recomputes all of it, else whole."""
    if workers < 2 or all(m.plan.since is not None for m in members):
        return [(table, members, None)]
    return [
        (
            table,
            [Member(m.plan, m.source, SourceResult(m.source.table, m.source.writes)) for m in members],
            (k, workers),
        )
        for k in range(workers)
    ]


def _merge(members: list[Member], parts: list[list[Member]]) -> None:
    for part in parts:
        for m, p in zip(members, part, strict=True):
            m.result.computed += p.result.computed
            m.result.problems += p.result.problems
            m.result.sample_problems = (m.result.sample_problems + p.result.sample_problems)[:SAMPLE_PROBLEMS]


def run_derivations(
    dsn: str,
    derivations: Sequence[Derivation],
    scope: Scope = Scope(),
    *,
    batch_rows: int = BATCH_ROWS,
    covering: Mapping[str, Sequence[str]] | None = None,
    workers: int = WORKERS,
) -> list[RunResult]:
    """Compute what is pending (and what ``scope`` asks) for ``derivations``, together.
    ``covering``: source table -> every derivation that writes its rows (default: all of
    them), for ``transformed``. Up to ``workers`` connections at a time, each on a table
    (or part of one, see ``_shards``). A result's ``seconds`` is its own computing plus an even share of the
    writes it shared."""
    if covering is None:
        from arb_pipeline.postprocess import covering_derivations  # the registry imports this module

        covering = covering_derivations()
    names = sorted({d.name for d in derivations})
    with connect(dsn, autocommit=True, application_name="arb_postprocess") as conn:
        _session(conn)
        for name in names:  # one run of a derivation at a time, whoever starts it (sorted: no deadlock)
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_lock_key(name),))
        try:
            hi = _snapshot_time(conn)
            clock: dict[str, float] = defaultdict(float)
            plans = []
            for d in derivations:
                t0 = time.perf_counter()
                plans.append(_plan(conn, d, scope))
                clock[d.name] += time.perf_counter() - t0
            tables: dict[str, list[Member]] = {}
            for p in plans:
                for s in p.derivation.sources:
                    member = Member(p, s, SourceResult(s.table, s.writes))
                    p.result.sources.append(member.result)
                    tables.setdefault(s.table, []).append(member)
            # Tables with the most derivations first: the longest work starts first.
            work = [
                s
                for t, ms in sorted(tables.items(), key=lambda i: -len(i[1]))
                for s in _shards(t, ms, workers)
            ]
            queue, lock = list(work), threading.Lock()
            n = max(1, min(workers, len(queue)))
            with ThreadPoolExecutor(n, thread_name_prefix="arb_postprocess") as pool:
                futures = [
                    pool.submit(_work, dsn, queue, scope, batch_rows, covering, lock) for _ in range(n)
                ]
                for f in futures:
                    for name, seconds in f.result().items():
                        clock[name] += seconds
            for table, members in tables.items():
                _merge(members, [ms for t, ms, shard in work if t == table and shard is not None])
            for p in plans:
                conn.execute(
                    "INSERT INTO arb_postprocess_state AS s (derivation, done_through, reference_digest, "
                    "last_run_at, last_full_at) VALUES (%(n)s, %(hi)s, %(d)s, clock_timestamp(), "
                    "CASE WHEN %(full)s THEN clock_timestamp() END) "
                    "ON CONFLICT (derivation) DO UPDATE SET done_through = EXCLUDED.done_through, "
                    "reference_digest = EXCLUDED.reference_digest, last_run_at = EXCLUDED.last_run_at, "
                    "last_full_at = COALESCE(EXCLUDED.last_full_at, s.last_full_at)",
                    {"n": p.derivation.name, "hi": hi, "d": p.digest, "full": p.result.mode == "full"},
                )
                p.result.done_through = hi
            for table, members in tables.items():
                t0 = time.perf_counter()
                names_here = {m.plan.derivation.name for m in members}
                mark_transformed(conn, table, covering.get(table, tuple(names_here)), CLOCK_MARGIN)
                for n in names_here:
                    clock[n] += (time.perf_counter() - t0) / len(names_here)
        finally:
            for name in reversed(names):
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_lock_key(name),))
    for p in plans:
        r = p.result
        r.seconds = clock[r.derivation]
        log.info(
            "%s: %s run (%s): %d rows computed, %d with a problem, %.1f s",
            r.derivation,
            r.mode,
            r.reason,
            r.computed,
            r.problems,
            r.seconds,
        )
    return [p.result for p in plans]


def run_derivation(
    dsn: str,
    derivation: Derivation,
    scope: Scope = Scope(),
    *,
    batch_rows: int = BATCH_ROWS,
    covering: Mapping[str, Sequence[str]] | None = None,
) -> RunResult:
    """One derivation on its own (see :func:`run_derivations`)."""
    return run_derivations(dsn, [derivation], scope, batch_rows=batch_rows, covering=covering)[0]


def _others(conn, table: str, members: Sequence[Member], covering) -> str | None:
    """others_done for a write by ``members`` (the table's derivations outside them)."""
    return others_done(conn, {m.plan.derivation.name for m in members}, table, covering)


def _run_table(
    conn, table: str, members, shard, contexts, scope: Scope, batch_rows: int, covering, clock
) -> None:
    shared = [m for m in members if m.shares_write]
    shared_done = _others(conn, table, shared, covering) if shared else None
    own_done = {id(m): _others(conn, table, [m], covering) for m in members if not m.shares_write}
    t0 = time.perf_counter()
    n = collect(conn, table, members, scope, shard)
    for m in members:
        clock[m.plan.derivation.name] += (time.perf_counter() - t0) / len(members)
    if n:
        # A batch is an id range (after, upto] of the ids, so joins can be set-based (SQL
        # may use %(after)s and %(upto)s, e.g. "id IN (SELECT id FROM arb_pp_todo ...)").
        bound = sql.SQL("SELECT id FROM {} WHERE id > %(after)s ORDER BY id OFFSET %(skip)s LIMIT 1").format(
            sql.Identifier(ALL)
        )
        after, last, left = -1, False, n
        while not last:
            with conn.transaction():
                # Never beside a load: both write the same rows (a load waits for one batch).
                # Shared: the other worker's batches write other rows.
                conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (LOAD_LOCK,))
                row = conn.execute(bound, {"after": after, "skip": batch_rows - 1}).fetchone()
                upto, last = (row[0], False) if row else (2**31 - 1, True)
                _run_batch(
                    conn,
                    table,
                    members,
                    contexts,
                    # rows: how many ids the batch holds, so a derivation can pick its method
                    {"after": after, "upto": upto, "rows": min(left, batch_rows)},
                    shared_done,
                    own_done,
                    clock,
                )
                after, left = upto, left - batch_rows
    for name in todo_tables(members):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    if shard is not None and shard[0]:
        return  # one part sweeps
    for m in members:
        t0 = time.perf_counter()
        sweep_problems(conn, m.plan.derivation, m.source)
        clock[m.plan.derivation.name] += time.perf_counter() - t0


def _rename(conn, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _run_batch(conn, table: str, members, contexts, bounds: dict, shared_done, own_done, clock) -> None:
    """Each member computes its rows of the batch (its todo table named ``arb_pp_todo``
    meanwhile); those writing the table's own columns write in one UPDATE."""
    outs: list[tuple[str, tuple[str, ...]]] = []
    for k, m in enumerate(members):
        t0 = time.perf_counter()
        d = m.plan.derivation
        create_out(conn, m.source)
        _rename(conn, todo_table(k, members), TODO)
        d.fill(conn, contexts[d.name], m.source, bounds)
        _rename(conn, TODO, todo_table(k, members))
        record_problems(conn, m)
        if m.shares_write:
            name = f"{OUT}_{len(outs)}"
            _rename(conn, OUT, name)
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))  # a good join plan for the write
            outs.append((name, m.source.columns))
        else:
            d.write(conn, m.source, own_done[id(m)])
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(OUT)))
        clock[d.name] += time.perf_counter() - t0
    if not outs:
        return
    t0 = time.perf_counter()
    update_from(conn, table, outs, shared_done, batch=(ALL, bounds))
    for o, _ in outs:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(o)))
    sharing = [m for m in members if m.shares_write]
    for m in sharing:
        clock[m.plan.derivation.name] += (time.perf_counter() - t0) / len(sharing)
