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
row's change, the row gets ``transformed = true`` (TranSappViz's own marker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from arb_pipeline.pg.connect import connect
from arb_pipeline.postprocess.engine import (
    BATCH_ROWS,
    CLOCK_MARGIN,
    LOAD_LOCK,
    OUT,
    PROBLEMS,
    SAMPLE_PROBLEMS,
    TODO,
    Derivation,
    RunResult,
    Scope,
    Source,
    SourceResult,
    update_from,
)
from arb_pipeline.postprocess.transformed import (
    CHANGED,
    TRANSFORMED,
    has_column,
    mark_transformed,
    others_done,
)

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One derivation in a run: how it runs and what it has computed."""

    derivation: Derivation
    result: RunResult
    since: datetime | None  # None: every row
    digest: str
    ctx: Any = None


@dataclass
class _Member:
    """One derivation's source within its table's part of a run."""

    plan: _Plan
    source: Source
    result: SourceResult

    @property
    def shares_write(self) -> bool:
        return self.plan.derivation.writes_own_rows and bool(self.source.columns) and not self.source.out_like


def _lock_key(name: str) -> str:
    return f"arb_pipeline.postprocess.{name}"


def _snapshot_time(conn) -> datetime:
    """A time before which every load has committed: taken while no load runs."""
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOAD_LOCK,))
    try:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOAD_LOCK,))


def _plan(conn, derivation: Derivation, scope: Scope) -> _Plan:
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
    plan = _Plan(
        derivation, RunResult(derivation.name, mode, reason), None if mode == "full" else state[0], digest
    )
    plan.ctx = derivation.prepare(conn)
    return plan


def run_derivations(
    dsn: str,
    derivations: Sequence[Derivation],
    scope: Scope = Scope(),
    *,
    batch_rows: int = BATCH_ROWS,
    covering: Mapping[str, Sequence[str]] | None = None,
) -> list[RunResult]:
    """Compute what is pending (and what ``scope`` asks) for ``derivations``, together.
    ``covering``: source table -> every derivation that writes its rows (default: all of
    them), for ``transformed``. A result's ``seconds`` is its own computing plus an even
    share of the writes it shared."""
    if covering is None:
        from arb_pipeline.postprocess import covering_derivations  # the registry imports this module

        covering = covering_derivations()
    names = sorted({d.name for d in derivations})
    with connect(dsn, autocommit=True, application_name="arb_postprocess") as conn:
        # Batches are many short index lookups: compiling them (JIT) costs more than it saves.
        conn.execute("SET jit = off")
        # Derived rows can be recomputed, and a crash loses only the newest commits, in
        # order (the state row is written last): no batch needs to wait for its WAL flush.
        conn.execute("SET synchronous_commit = off")
        for name in names:  # one run of a derivation at a time, whoever starts it (sorted: no deadlock)
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_lock_key(name),))
        try:
            hi = _snapshot_time(conn)
            clock: dict[str, float] = {}
            plans = []
            for d in derivations:
                t0 = time.perf_counter()
                plans.append(_plan(conn, d, scope))
                clock[d.name] = time.perf_counter() - t0
            tables: dict[str, list[_Member]] = {}
            for p in plans:
                for s in p.derivation.sources:
                    member = _Member(p, s, SourceResult(s.table, s.writes))
                    p.result.sources.append(member.result)
                    tables.setdefault(s.table, []).append(member)
            for table, members in tables.items():
                _run_table(conn, table, members, scope, batch_rows, covering, clock)
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


def _bound(value: datetime | None, default: str) -> str:
    return value.isoformat() if value is not None else default


ALL = f"{TODO}_all"  # the ids any of a table's derivations computes


def _todo(k: int, members: Sequence[_Member]) -> str:
    """The todo table of member ``k``: the union when it computes every row (a full run)."""
    return ALL if members[k].plan.since is None else f"{TODO}_{k}"


def _todo_tables(members: Sequence[_Member]) -> list[str]:
    return list(dict.fromkeys([ALL, *(_todo(k, members) for k in range(len(members)))]))


def _collect(conn, table: str, members: Sequence[_Member], scope: Scope) -> int:
    """Fill a todo table per member with the ids it computes, and their union; return how
    many ids in all."""
    src = sql.Identifier(table)
    margin = sql.SQL("")
    if has_column(conn, table, TRANSFORMED):
        # Rows changed in the margin before done_through were computed by the last run
        # unless the clock stepped back: those are not transformed yet (a load resets it).
        margin = sql.SQL(" AND ({c} > %(done)s OR {t} IS NOT TRUE)").format(
            c=sql.Identifier(CHANGED), t=sql.Identifier(TRANSFORMED)
        )
    window = {"start": _bound(scope.window_start, "-infinity"), "end": _bound(scope.window_end, "infinity")}
    for name in _todo_tables(members):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(name)))
    everything = any(m.plan.since is None for m in members)
    if everything:
        conn.execute(sql.SQL("INSERT INTO {} SELECT id FROM {}").format(sql.Identifier(ALL), src))
    for k, m in enumerate(members):
        if m.plan.since is None:
            continue
        todo = sql.Identifier(_todo(k, members))
        insert = sql.SQL("INSERT INTO {} (id) ").format(todo)
        conflict = sql.SQL(" ON CONFLICT (id) DO NOTHING")
        conn.execute(
            insert
            + sql.SQL("SELECT id FROM {} WHERE {} > %(since)s").format(src, sql.Identifier(CHANGED))
            + margin,
            {"since": m.plan.since - CLOCK_MARGIN, "done": m.plan.since},
        )
        for extra in m.source.extra:  # inputs changed since the last run's snapshot
            conn.execute(insert + sql.SQL(extra) + conflict, {"since": m.plan.since})
        if scope.recompute_window:
            conn.execute(insert + sql.SQL(m.source.window_sql()) + conflict, window)
        conn.execute(sql.SQL("ANALYZE {}").format(todo))
        if not everything:
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT id FROM {} ON CONFLICT (id) DO NOTHING").format(
                    sql.Identifier(ALL), todo
                )
            )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ALL)))
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(ALL))).fetchone()[0]


def _create_out(conn, source: Source) -> None:
    """arb_pp_out for one batch: id, the source's columns typed as their table's, problem."""
    cols = sql.SQL(", ").join(map(sql.Identifier, source.columns)) if source.columns else sql.SQL("")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {o} ON COMMIT DROP AS SELECT {cols} FROM {t} WITH NO DATA").format(
            o=sql.Identifier(OUT), cols=cols, t=sql.Identifier(source.out_like or source.table)
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN id integer PRIMARY KEY, ADD COLUMN problem text").format(
            sql.Identifier(OUT)
        )
    )


def _record_problems(conn, member: _Member) -> None:
    """Replace the batch rows' problems by the ones of this computation; count them."""
    source, result = member.source, member.result
    key = {"d": member.plan.derivation.name, "t": source.table}
    conn.execute(
        f"DELETE FROM {PROBLEMS} p USING {OUT} o WHERE p.derivation = %(d)s AND p.source_table = %(t)s "
        "AND p.source_id = o.id",
        key,
    )
    conn.execute(
        sql.SQL(
            f"INSERT INTO {PROBLEMS} (derivation, source_table, source_id, problem, source_changed_at) "
            f"SELECT %(d)s, %(t)s, o.id, o.problem, s.{CHANGED} FROM {OUT} o "
            "JOIN {src} s ON s.id = o.id WHERE o.problem IS NOT NULL"
        ).format(src=sql.Identifier(source.table)),
        key,
    )
    computed, problems = conn.execute(f"SELECT count(*), count(problem) FROM {OUT}").fetchone()
    result.computed += computed
    result.problems += problems
    room = SAMPLE_PROBLEMS - len(result.sample_problems)
    if room > 0 and problems:
        sample = conn.execute(
            f"SELECT id, problem FROM {OUT} WHERE problem IS NOT NULL ORDER BY id LIMIT %s", (room,)
        ).fetchall()
        result.sample_problems += [f"{source.table} id {i}: {p}" for i, p in sample]


def _others(conn, table: str, members: Sequence[_Member], covering) -> str | None:
    """others_done for a write by ``members`` (the table's derivations outside them)."""
    return others_done(conn, {m.plan.derivation.name for m in members}, table, covering)


def _run_table(conn, table: str, members, scope: Scope, batch_rows: int, covering, clock) -> None:
    shared = [m for m in members if m.shares_write]
    shared_done = _others(conn, table, shared, covering) if shared else None
    own_done = {id(m): _others(conn, table, [m], covering) for m in members if not m.shares_write}
    t0 = time.perf_counter()
    n = _collect(conn, table, members, scope)
    for m in members:
        clock[m.plan.derivation.name] += (time.perf_counter() - t0) / len(members)
    if n:
        # A batch is an id range (after, upto] of the ids, so joins can be set-based (SQL
        # may use %(after)s and %(upto)s, e.g. "id IN (SELECT id FROM arb_pp_todo ...)").
        bound = sql.SQL("SELECT id FROM {} WHERE id > %(after)s ORDER BY id OFFSET %(skip)s LIMIT 1").format(
            sql.Identifier(ALL)
        )
        after, last = -1, False
        while not last:
            with conn.transaction():
                # Never beside a load: both write the same rows (a load waits for one batch).
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))
                row = conn.execute(bound, {"after": after, "skip": batch_rows - 1}).fetchone()
                upto, last = (row[0], False) if row else (2**31 - 1, True)
                _run_batch(conn, table, members, {"after": after, "upto": upto}, shared_done, own_done, clock)
                after = upto
    for name in _todo_tables(members):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    for m in members:
        t0 = time.perf_counter()
        _sweep_problems(conn, m.plan.derivation, m.source)
        clock[m.plan.derivation.name] += time.perf_counter() - t0


def _rename(conn, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _run_batch(conn, table: str, members, bounds: dict, shared_done, own_done, clock) -> None:
    """Each member computes its rows of the batch (its todo table named ``arb_pp_todo``
    meanwhile); those writing the table's own columns write in one UPDATE."""
    outs: list[tuple[str, tuple[str, ...]]] = []
    for k, m in enumerate(members):
        t0 = time.perf_counter()
        d = m.plan.derivation
        _create_out(conn, m.source)
        _rename(conn, _todo(k, members), TODO)
        d.fill(conn, m.plan.ctx, m.source, bounds)
        _rename(conn, TODO, _todo(k, members))
        _record_problems(conn, m)
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


def _sweep_problems(conn, derivation: Derivation, source: Source) -> None:
    """Drop the problems of source rows deleted since (a complete load's deletions). The
    anti-join costs a lookup per problem, so it runs only when the table's count of deleted
    rows (the server's statistics) moved since the last sweep."""
    deleted = conn.execute(
        "SELECT coalesce(pg_stat_get_tuples_deleted(%s::regclass), 0)", (f'public."{source.table}"',)
    ).fetchone()[0]
    seen = conn.execute(
        "SELECT deletes_seen ->> %s FROM arb_postprocess_state WHERE derivation = %s",
        (source.table, derivation.name),
    ).fetchone()
    if seen and seen[0] is not None and int(seen[0]) == deleted:
        return
    conn.execute(
        sql.SQL(
            f"DELETE FROM {PROBLEMS} p WHERE p.derivation = %s AND p.source_table = %s "
            "AND NOT EXISTS (SELECT FROM {src} s WHERE s.id = p.source_id)"
        ).format(src=sql.Identifier(source.table)),
        (derivation.name, source.table),
    )
    conn.execute(
        "INSERT INTO arb_postprocess_state (derivation, deletes_seen) "
        "VALUES (%(d)s, jsonb_build_object(%(t)s::text, %(n)s::bigint)) "
        "ON CONFLICT (derivation) DO UPDATE SET deletes_seen = "
        "coalesce(arb_postprocess_state.deletes_seen, '{}') || EXCLUDED.deletes_seen",
        {"d": derivation.name, "t": source.table, "n": deleted},
    )
