"""Running one derivation incrementally: which rows, in batches, written back by key.

A derivation reads replicated tables and writes tables the receiver owns, one row per
source row (same primary key). Which rows a run computes:

* **pending**: rows a load inserted or changed since the derivation last ran. Loads set
  ``arb_changed_at = clock_timestamp()`` on those rows (and the column's default on
  inserts); each derived row keeps the ``arb_changed_at`` it was computed from, so a
  row is pending when its derived row is missing or older. The search starts from
  ``done_through`` (an index range on ``arb_changed_at``), so a 5-minute window costs
  what its rows cost. ``done_through`` is read under the loader's advisory lock: every
  row changed before it is committed, every row changed after it is found next time.
* **extra**: rows whose inputs in *other* tables changed (a new vote moves an event's
  location; a new trip pose can give it a direction; a new bus resolves a report's).
* **window**: every row whose cursor (``timeStamp``) lies in a window, changed or not,
  when asked (a run by hand for a past partition, a backfill).
* **everything**: the first run, or when the derivation's reference digest (zones,
  periods, stops, settings, code version) differs from the one of its last run.

Bad data in a row never fails a run: the derivation writes the row with a ``problem``.
Each batch is its own transaction; a run that dies part-way leaves its batches done,
and the next run redoes only what is still pending.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from psycopg import sql

from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import ident_list

log = logging.getLogger(__name__)

LOAD_LOCK = "arb_pipeline.load.apply"  # held by load.load_backup for a whole load
CHANGED = "arb_changed_at"
TODO = "arb_pp_todo"
# Candidates start this long before done_through, for a small step back of the database
# server's clock (a larger one needs a full reprocess: Scope(full=True)).
CLOCK_MARGIN = timedelta(seconds=1)
BATCH_ROWS = 100_000
SAMPLE_PROBLEMS = 5


@dataclass(frozen=True)
class Source:
    """A replicated table and the derived table whose rows hang off it (same ``id``)."""

    table: str  # e.g. AndroidRequests_eventforbusv2
    derived: str  # e.g. arb_pp_eventforbusv2_zone
    columns: tuple[str, ...]  # derived columns besides id, source_changed_at, problem
    # SELECT list over "arb_pp_todo t JOIN <table> s ON s.id = t.id <joins>"; returns
    # id and version (s.arb_changed_at::text, the version the row is computed from) first.
    fetch: str
    # Rows to recompute although unchanged, as "SELECT <id> ..." with %(since)s: rows
    # whose inputs elsewhere changed at or after their derived row's processed_at.
    extra: tuple[str, ...] = ()
    # Rows of a window, "SELECT <id> ..." with %(start)s and %(end)s (timestamptz text).
    window: str | None = None
    joins: str = ""  # more joins for the fetch, e.g. LATERAL lookups

    def window_sql(self) -> str:
        return self.window or (
            f'SELECT id FROM "{self.table}" '
            f'WHERE "timeStamp" >= %(start)s::timestamptz AND "timeStamp" < %(end)s::timestamptz'
        )


class Derivation:
    """One derivation; subclasses say where rows come from and how to compute them."""

    name: str = ""
    version: str = "1"  # bump when the computation changes: a full reprocess follows
    sources: tuple[Source, ...] = ()

    def reference_digest(self, conn) -> str:
        """Anything whose change invalidates every derived row (reference data, settings)."""
        return f"v{self.version}"

    def prepare(self, conn) -> Any:
        """Reference data loaded once per run (zones, stops, periods)."""
        return None

    def compute(self, conn, ctx: Any, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        """Derived rows for ``rows`` (id, version, inputs...): a frame with id, version,
        the source's columns and problem. Must not raise on bad data."""
        raise NotImplementedError


@dataclass(frozen=True)
class Scope:
    """What a run recomputes besides what is pending."""

    window_start: datetime | None = None  # with recompute_window: rows whose cursor lies in
    window_end: datetime | None = None  # [start, end); None is open-ended
    recompute_window: bool = False
    full: bool = False


@dataclass
class SourceResult:
    table: str
    derived: str
    computed: int = 0
    problems: int = 0
    sample_problems: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    derivation: str
    mode: str  # incremental | full
    reason: str
    sources: list[SourceResult] = field(default_factory=list)
    seconds: float = 0.0
    done_through: datetime | None = None

    @property
    def computed(self) -> int:
        return sum(s.computed for s in self.sources)

    @property
    def problems(self) -> int:
        return sum(s.problems for s in self.sources)


def _lock_key(name: str) -> str:
    return f"arb_pipeline.postprocess.{name}"


def _snapshot_time(conn) -> datetime:
    """A time before which every load has committed: taken while no load runs."""
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOAD_LOCK,))
    try:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOAD_LOCK,))


def run_derivation(
    dsn: str, derivation: Derivation, scope: Scope = Scope(), *, batch_rows: int = BATCH_ROWS
) -> RunResult:
    """Compute what is pending (and what ``scope`` asks) for one derivation."""
    t0 = time.perf_counter()
    with connect(dsn, autocommit=True, application_name=f"arb_postprocess_{derivation.name}") as conn:
        # One run of a derivation at a time, whoever starts it.
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_lock_key(derivation.name),))
        try:
            hi = _snapshot_time(conn)
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
            since = None if mode == "full" else state[0] - CLOCK_MARGIN
            result = RunResult(derivation.name, mode, reason)
            ctx = derivation.prepare(conn)
            for source in derivation.sources:
                result.sources.append(
                    _run_source(conn, derivation, ctx, source, scope, since, hi, batch_rows)
                )
            conn.execute(
                "INSERT INTO arb_postprocess_state AS s (derivation, done_through, reference_digest, "
                "last_run_at, last_full_at) VALUES (%(n)s, %(hi)s, %(d)s, clock_timestamp(), "
                "CASE WHEN %(full)s THEN clock_timestamp() END) "
                "ON CONFLICT (derivation) DO UPDATE SET done_through = EXCLUDED.done_through, "
                "reference_digest = EXCLUDED.reference_digest, last_run_at = EXCLUDED.last_run_at, "
                "last_full_at = COALESCE(EXCLUDED.last_full_at, s.last_full_at)",
                {"n": derivation.name, "hi": hi, "d": digest, "full": mode == "full"},
            )
            result.done_through = hi
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_lock_key(derivation.name),))
    result.seconds = time.perf_counter() - t0
    log.info(
        "%s: %s run (%s): %d rows computed, %d with a problem, %.1f s",
        derivation.name,
        result.mode,
        result.reason,
        result.computed,
        result.problems,
        result.seconds,
    )
    return result


def _bound(value: datetime | None, default: str) -> str:
    return value.isoformat() if value is not None else default


def _collect(conn, source: Source, scope: Scope, since: datetime | None) -> int:
    """Fill the todo table with the ids this run computes; return how many."""
    src, derived = sql.Identifier(source.table), sql.Identifier(source.derived)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TODO)))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(TODO)))
    insert = sql.SQL("INSERT INTO {} (id) ").format(sql.Identifier(TODO))
    conflict = sql.SQL(" ON CONFLICT (id) DO NOTHING")
    if since is None:
        conn.execute(insert + sql.SQL("SELECT id FROM {}").format(src))
    else:
        conn.execute(
            insert
            + sql.SQL(
                "SELECT s.id FROM {src} s LEFT JOIN {d} d ON d.id = s.id "
                "WHERE s.{c} > %(since)s AND (d.id IS NULL OR d.source_changed_at IS DISTINCT FROM s.{c})"
            ).format(src=src, d=derived, c=sql.Identifier(CHANGED)),
            {"since": since},
        )
        for extra in source.extra:
            conn.execute(insert + sql.SQL(extra) + conflict, {"since": since})
    if scope.recompute_window:
        conn.execute(
            insert + sql.SQL(source.window_sql()) + conflict,
            {"start": _bound(scope.window_start, "-infinity"), "end": _bound(scope.window_end, "infinity")},
        )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(TODO)))
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TODO))).fetchone()[0]


def _run_source(
    conn, derivation: Derivation, ctx, source: Source, scope: Scope, since, as_of: datetime, batch_rows: int
) -> SourceResult:
    result = SourceResult(source.table, source.derived)
    if not _collect(conn, source, scope, since):
        return result
    todo = sql.Identifier(TODO)
    # A batch is an id range (after, upto] of the todo table, so joins can be set-based
    # (a source's joins may use %(after)s and %(upto)s, e.g. "id IN (SELECT id FROM arb_pp_todo ...)").
    bound = sql.SQL("SELECT id FROM {} WHERE id > %(after)s ORDER BY id OFFSET %(skip)s LIMIT 1").format(todo)
    fetch = sql.SQL(
        "SELECT {fetch} FROM {todo} t JOIN {src} s ON s.id = t.id {joins} "
        "WHERE t.id > %(after)s AND t.id <= %(upto)s ORDER BY t.id"
    ).format(
        fetch=sql.SQL(source.fetch), todo=todo, src=sql.Identifier(source.table), joins=sql.SQL(source.joins)
    )
    after, last = -1, False
    while not last:
        with conn.transaction():
            row = conn.execute(bound, {"after": after, "skip": batch_rows - 1}).fetchone()
            upto, last = (row[0], False) if row else (2**31 - 1, True)
            cur = conn.execute(fetch, {"after": after, "upto": upto})
            rows = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
            if rows.empty:
                break
            after = upto
            out = derivation.compute(conn, ctx, source, rows)
            _write(conn, source, out, as_of)
        result.computed += len(out)
        bad = out["problem"].notna()
        result.problems += int(bad.sum())
        room = SAMPLE_PROBLEMS - len(result.sample_problems)
        if room > 0 and bad.any():
            sample = out.loc[bad, ["id", "problem"]].head(room)
            result.sample_problems += [
                f"{source.table} id {i}: {p}" for i, p in sample.itertuples(index=False)
            ]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(todo))
    return result


def nones(index) -> pd.Series:
    """An object column of None (``pd.Series(None, dtype=object)`` would hold NaN)."""
    return pd.Series([None] * len(index), index=index, dtype=object)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values of object columns as None, so results compare and print plainly."""
    for c in frame.columns:
        if pd.api.types.is_string_dtype(frame[c]):  # object, or pandas' str (whose missing value is NaN)
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame


def _csv(frame: pd.DataFrame, columns: list[str]) -> str:
    """The rows as CSV for COPY: written by pandas in C, a missing value as an unquoted
    empty field (NULL). Derived text is never the empty string, so nothing is lost."""
    buf = io.StringIO()
    frame[columns].to_csv(buf, index=False, header=False, na_rep="")
    return buf.getvalue()


def _write(conn, source: Source, out: pd.DataFrame, as_of: datetime) -> None:
    """Upsert the derived rows of one batch, through COPY; rows whose source row has
    gone since it was read are dropped (their derived row would go with it anyway).
    ``processed_at`` is the run's snapshot time: the row reflects every load committed
    before it, so an input changed at or after it makes the row pending again."""
    out = out.rename(columns={"version": "source_changed_at"})
    cols = ["id", "source_changed_at", *source.columns, "problem"]
    missing = [c for c in cols if c not in out.columns]
    if missing:
        raise ValueError(f"derivation for {source.derived} returned no column(s) {missing}")
    stage = sql.Identifier("arb_pp_out")
    names = ident_list(cols)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {s} ON COMMIT DROP AS SELECT {cols} FROM {d} WITH NO DATA").format(
            s=stage, cols=names, d=sql.Identifier(source.derived)
        )
    )
    text = _csv(out, cols)
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(stage, names)) as copy:
            for i in range(0, len(text), 1 << 20):
                copy.write(text[i : i + (1 << 20)])
    conn.execute(
        sql.SQL(
            "INSERT INTO {d} AS d ({ids}, processed_at) SELECT {o}, %(as_of)s FROM {s} o "
            "JOIN {src} x ON x.id = o.id ON CONFLICT (id) DO UPDATE SET {sets}, processed_at = "
            "EXCLUDED.processed_at"
        ).format(
            d=sql.Identifier(source.derived),
            ids=names,
            s=stage,
            src=sql.Identifier(source.table),
            o=sql.SQL(", ").join(sql.SQL("o.{}").format(sql.Identifier(c)) for c in cols),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols[1:]
            ),
        ),
        {"as_of": as_of},
    )
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
