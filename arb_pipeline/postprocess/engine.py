"""Running one derivation incrementally: which rows, in batches, written where TranSappViz reads.

A derivation reads replicated tables and writes TranSappViz's receiver-only columns of
the same rows (``"timePeriod_id"``, ``zonification_id``, ...) or its own tables
(``AndroidRequests_reportinfo``). Which rows a run computes:

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

A batch computes its rows into a temporary table ``arb_pp_out`` (id, the written
columns, ``problem``), in SQL or from pandas through COPY, then writes them set-based;
a row whose values are unchanged is not rewritten. Bad data in a row never fails a
run: the row gets what could be derived and its problem goes to ``arb_pp_problem``.
Each batch is its own transaction, taken under the loader's lock so it never
interleaves with a load; a run that dies part-way leaves its batches done, and the next
run redoes only what is still pending. When every derivation of a table has passed a
row's change, the row gets ``transformed = true`` (TranSappViz's own marker).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping, Sequence
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
TRANSFORMED = "transformed"  # TranSappViz's "derived already" marker
TODO = "arb_pp_todo"
OUT = "arb_pp_out"
PROBLEMS = "arb_pp_problem"
# Candidates start this long before done_through, for a small step back of the database
# server's clock (a larger one needs a full reprocess: Scope(full=True)).
CLOCK_MARGIN = timedelta(seconds=1)
BATCH_ROWS = 100_000
SAMPLE_PROBLEMS = 5


@dataclass(frozen=True)
class Source:
    """A replicated table whose rows a derivation computes, and what it writes for them."""

    table: str  # e.g. AndroidRequests_eventforbusv2
    # The columns written, typed as in ``out_like`` (default: ``table`` itself, where the
    # default write puts them, by id).
    columns: tuple[str, ...]
    # For pandas derivations: a SELECT list over "arb_pp_todo t JOIN <table> s ON s.id = t.id
    # <joins>", id first. None: the derivation fills arb_pp_out in SQL (Derivation.fill).
    fetch: str | None = None
    # Rows to recompute although unchanged, as "SELECT <id> ..." with %(since)s: rows
    # whose inputs elsewhere changed since the last run.
    extra: tuple[str, ...] = ()
    # Rows of a window, "SELECT <id> ..." with %(start)s and %(end)s (timestamptz text).
    window: str | None = None
    joins: str = ""  # more joins for the fetch, e.g. LATERAL lookups
    out_like: str | None = None  # the table whose column types arb_pp_out copies

    def window_sql(self) -> str:
        return self.window or (
            f'SELECT id FROM "{self.table}" '
            f'WHERE "timeStamp" >= %(start)s::timestamptz AND "timeStamp" < %(end)s::timestamptz'
        )

    @property
    def writes(self) -> str:
        """What the source's rows are written to, for logs and metadata."""
        table = self.out_like or self.table
        return f"{table} ({', '.join(self.columns)})" if self.columns else table


class Derivation:
    """One derivation; subclasses say where rows come from and how to compute them."""

    name: str = ""
    version: str = "1"  # bump when the computation changes: a full reprocess follows
    sources: tuple[Source, ...] = ()

    def reference_digest(self, conn) -> str:
        """Anything whose change invalidates every derived row (reference data, settings)."""
        return f"v{self.version}"

    def prepare(self, conn) -> Any:
        """Reference data loaded (or brought up to date) once per run."""
        return None

    def compute(self, conn, ctx: Any, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        """For pandas derivations: a frame with id, the source's columns and problem for
        ``rows`` (what ``source.fetch`` selects). Must not raise on bad data."""
        raise NotImplementedError

    def fill(self, conn, ctx: Any, source: Source, bounds: dict) -> None:
        """Fill arb_pp_out with the batch's rows: todo ids in (bounds["after"], bounds["upto"]].
        By default from ``source.fetch`` through :meth:`compute`; SQL derivations override."""
        cur = conn.execute(
            sql.SQL(
                "SELECT {fetch} FROM {todo} t JOIN {src} s ON s.id = t.id {joins} "
                "WHERE t.id > %(after)s AND t.id <= %(upto)s ORDER BY t.id"
            ).format(
                fetch=sql.SQL(source.fetch),
                todo=sql.Identifier(TODO),
                src=sql.Identifier(source.table),
                joins=sql.SQL(source.joins),
            ),
            bounds,
        )
        rows = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        if not rows.empty:
            copy_out(conn, source, self.compute(conn, ctx, source, rows))

    def write(self, conn, source: Source, others_done: str | None = None) -> None:
        """Write arb_pp_out where TranSappViz reads. By default: the columns of the source's
        own rows, by id; a row already holding those values is not rewritten. A written row
        the table's other derivations have passed (changed at or before ``others_done``)
        is fully derived: ``transformed`` goes in the same write, not a second one."""
        if not source.columns:
            return
        cols = [sql.Identifier(c) for c in source.columns]
        sets = [sql.SQL("{c} = o.{c}").format(c=c) for c in cols]
        if others_done is not None:
            sets.append(
                sql.SQL(
                    "{t} = CASE WHEN t.{c} IS NULL OR t.{c} <= %(others)s::timestamptz "
                    "THEN true ELSE t.{t} END"
                ).format(t=sql.Identifier(TRANSFORMED), c=sql.Identifier(CHANGED))
            )
        conn.execute(
            sql.SQL(
                "UPDATE {t} t SET {sets} FROM {out} o WHERE t.id = o.id AND ({tc}) IS DISTINCT FROM ({oc})"
            ).format(
                t=sql.Identifier(source.table),
                sets=sql.SQL(", ").join(sets),
                out=sql.Identifier(OUT),
                tc=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in cols),
                oc=sql.SQL(", ").join(sql.SQL("o.{}").format(c) for c in cols),
            ),
            {"others": others_done},
        )


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
    writes: str
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
    dsn: str,
    derivation: Derivation,
    scope: Scope = Scope(),
    *,
    batch_rows: int = BATCH_ROWS,
    covering: Mapping[str, Sequence[str]] | None = None,
) -> RunResult:
    """Compute what is pending (and what ``scope`` asks) for one derivation. ``covering``:
    source table -> every derivation that writes its rows (default: all of them), for
    ``transformed``."""
    t0 = time.perf_counter()
    if covering is None:
        from arb_pipeline.postprocess import covering_derivations  # the registry imports this module

        covering = covering_derivations()
    with connect(dsn, autocommit=True, application_name=f"arb_postprocess_{derivation.name}") as conn:
        # Batches are many short index lookups: compiling them (JIT) costs more than it saves.
        conn.execute("SET jit = off")
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
            since = None if mode == "full" else state[0]
            result = RunResult(derivation.name, mode, reason)
            ctx = derivation.prepare(conn)
            for source in derivation.sources:
                result.sources.append(
                    _run_source(conn, derivation, ctx, source, scope, since, batch_rows, covering)
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
            for table in dict.fromkeys(s.table for s in derivation.sources):
                mark_transformed(conn, table, covering.get(table, (derivation.name,)))
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


def _has_column(conn, table: str, column: str) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = format('public.%%I', %s::text)::regclass "
        "AND attname = %s AND NOT attisdropped)",
        (table, column),
    ).fetchone()[0]


def mark_transformed(conn, table: str, derivations: Sequence[str]) -> int:
    """Set ``transformed`` on the rows of ``table`` that every derivation writing it has
    computed since their last change (arb_changed_at at or before the least done_through);
    only rows changed since the last time this was done are looked at. Returns how many."""
    if not _has_column(conn, table, TRANSFORMED):
        return 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_lock_key(f"transformed.{table}"),))
        upto = conn.execute(
            "SELECT min(done_through) FROM arb_postprocess_state WHERE derivation = ANY(%s) "
            "HAVING count(done_through) = %s",
            (list(derivations), len(set(derivations))),
        ).fetchone()
        if upto is None or upto[0] is None:
            return 0  # a derivation of the table has not run yet
        row = conn.execute(
            "SELECT done_through FROM arb_pp_transformed WHERE source_table = %s", (table,)
        ).fetchone()
        t, c, tr = sql.Identifier(table), sql.Identifier(CHANGED), sql.Identifier(TRANSFORMED)
        if row is None:  # the first time: rows no load changed (adopted history) too
            where = sql.SQL("({c} IS NULL OR {c} <= %(upto)s)").format(c=c)
        else:
            where = sql.SQL("{c} > %(low)s AND {c} <= %(upto)s").format(c=c)
        n = conn.execute(
            sql.SQL("UPDATE {t} SET {tr} = true WHERE {tr} IS NOT TRUE AND {w}").format(t=t, tr=tr, w=where),
            {"upto": upto[0], "low": row[0] - CLOCK_MARGIN if row else None},
        ).rowcount
        conn.execute(
            "INSERT INTO arb_pp_transformed (source_table, done_through) VALUES (%s, %s) "
            "ON CONFLICT (source_table) DO UPDATE SET done_through = EXCLUDED.done_through",
            (table, upto[0]),
        )
    return n


def _bound(value: datetime | None, default: str) -> str:
    return value.isoformat() if value is not None else default


def _collect(conn, source: Source, scope: Scope, since: datetime | None) -> int:
    """Fill the todo table with the ids this run computes; return how many."""
    src = sql.Identifier(source.table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TODO)))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(TODO)))
    insert = sql.SQL("INSERT INTO {} (id) ").format(sql.Identifier(TODO))
    conflict = sql.SQL(" ON CONFLICT (id) DO NOTHING")
    if since is None:
        conn.execute(insert + sql.SQL("SELECT id FROM {}").format(src))
    else:
        # Rows changed in the margin before done_through were computed by the last run
        # unless the clock stepped back: those are not transformed yet (a load resets it).
        margin = sql.SQL("")
        if _has_column(conn, source.table, TRANSFORMED):
            margin = sql.SQL(" AND ({c} > %(done)s OR {t} IS NOT TRUE)").format(
                c=sql.Identifier(CHANGED), t=sql.Identifier(TRANSFORMED)
            )
        conn.execute(
            insert
            + sql.SQL("SELECT id FROM {src} WHERE {c} > %(since)s").format(src=src, c=sql.Identifier(CHANGED))
            + margin,
            {"since": since - CLOCK_MARGIN, "done": since},
        )
        for extra in source.extra:  # inputs changed since the last run's snapshot
            conn.execute(insert + sql.SQL(extra) + conflict, {"since": since})
    if scope.recompute_window:
        conn.execute(
            insert + sql.SQL(source.window_sql()) + conflict,
            {"start": _bound(scope.window_start, "-infinity"), "end": _bound(scope.window_end, "infinity")},
        )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(TODO)))
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TODO))).fetchone()[0]


def _create_out(conn, source: Source) -> None:
    """arb_pp_out for one batch: id, the source's columns typed as their table's, problem."""
    cols = ident_list(source.columns) if source.columns else sql.SQL("")
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


def _record_problems(conn, derivation: Derivation, source: Source, result: SourceResult) -> None:
    """Replace the batch rows' problems by the ones of this computation; count them."""
    key = {"d": derivation.name, "t": source.table}
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


def _others_done(conn, derivation: Derivation, table: str, covering) -> str | None:
    """The least done_through of the table's other derivations ('infinity': none), or None
    when one has not run yet or the table has no ``transformed``."""
    if not _has_column(conn, table, TRANSFORMED):
        return None
    others = [n for n in covering.get(table, ()) if n != derivation.name]
    if not others:
        return "infinity"
    row = conn.execute(
        "SELECT min(done_through)::text FROM arb_postprocess_state WHERE derivation = ANY(%s) "
        "HAVING count(done_through) = %s",
        (others, len(set(others))),
    ).fetchone()
    return row[0] if row else None


def _run_source(
    conn, derivation: Derivation, ctx, source: Source, scope: Scope, since, batch_rows: int, covering
) -> SourceResult:
    result = SourceResult(source.table, source.writes)
    others_done = _others_done(conn, derivation, source.table, covering)
    if _collect(conn, source, scope, since):
        todo = sql.Identifier(TODO)
        # A batch is an id range (after, upto] of the todo table, so joins can be set-based
        # (SQL may use %(after)s and %(upto)s, e.g. "id IN (SELECT id FROM arb_pp_todo ...)").
        bound = sql.SQL("SELECT id FROM {} WHERE id > %(after)s ORDER BY id OFFSET %(skip)s LIMIT 1").format(
            todo
        )
        after, last = -1, False
        while not last:
            with conn.transaction():
                # Never beside a load: both write the same rows (a load waits for one batch).
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))
                row = conn.execute(bound, {"after": after, "skip": batch_rows - 1}).fetchone()
                upto, last = (row[0], False) if row else (2**31 - 1, True)
                _create_out(conn, source)
                derivation.fill(conn, ctx, source, {"after": after, "upto": upto})
                derivation.write(conn, source, others_done)
                _record_problems(conn, derivation, source, result)
                after = upto
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(todo))
    # Problems of rows deleted since (a complete load's deletions) go too.
    conn.execute(
        sql.SQL(
            f"DELETE FROM {PROBLEMS} p WHERE p.derivation = %s AND p.source_table = %s "
            "AND NOT EXISTS (SELECT FROM {src} s WHERE s.id = p.source_id)"
        ).format(src=sql.Identifier(source.table)),
        (derivation.name, source.table),
    )
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
    empty field (NULL). An empty string would read as NULL too: writers that need one
    say so (reportinfo's registrationPlate)."""
    buf = io.StringIO()
    frame[columns].to_csv(buf, index=False, header=False, na_rep="")
    return buf.getvalue()


def copy_out(conn, source: Source, out: pd.DataFrame) -> None:
    """COPY a computed frame (id, the source's columns, problem) into arb_pp_out."""
    cols = ["id", *source.columns, "problem"]
    missing = [c for c in cols if c not in out.columns]
    if missing:
        raise ValueError(f"derivation for {source.writes} returned no column(s) {missing}")
    text = _csv(out, cols)
    with conn.cursor() as cur:
        with cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(OUT), ident_list(cols))
        ) as copy:
            for i in range(0, len(text), 1 << 20):
                copy.write(text[i : i + (1 << 20)])
