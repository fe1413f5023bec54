"""What a derivation is: the replicated rows it reads, what it writes, how it computes.

A derivation reads replicated tables and writes TranSappViz's receiver-only columns of
the same rows (``"timePeriod_id"``, ``zonification_id``, ...) or its own tables
(``AndroidRequests_reportinfo``). A batch computes its rows into a temporary table
``arb_pp_out`` (id, the written columns, ``problem``), in SQL or from pandas through
COPY; bad data in a row never fails a run: the row gets what could be derived and its
problem goes to ``arb_pp_problem``. Which rows a run computes, in what batches and
transactions, is run.py's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from psycopg import sql

from arb_pipeline.pg.quote import ident_list
from arb_pipeline.postprocess.transformed import CHANGED, TRANSFORMED

LOAD_LOCK = "arb_pipeline.load.apply"  # held by load.load_backup for a whole load
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
        """Fill arb_pp_out with the batch's rows: todo ids in (bounds["after"], bounds["upto"]], of
        which the batch holds bounds["rows"] in all.
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
        """Write arb_pp_out where TranSappViz reads. Derivations writing elsewhere than
        their sources' own rows override this; the others don't write on their own: the
        derivations of a table share one UPDATE per batch (run.py, :func:`update_from`), and
        one whose source has no columns (a check: only problems) writes nothing."""
        if source.columns:
            raise NotImplementedError(f"{self.name} writes its sources' own rows: run.py writes them")

    @property
    def writes_own_rows(self) -> bool:
        """Does the derivation write columns of its sources' own rows, by id (the default
        write)? Those of one table share one UPDATE per batch (run.py)."""
        return type(self).write is Derivation.write


def update_from(
    conn,
    table: str,
    outs: Sequence[tuple[str, Sequence[str]]],
    others_done: str | None,
    batch: tuple[str, dict],
) -> None:
    """One UPDATE of ``table`` from computed tables ``outs`` (name, columns) for the rows of
    ``batch`` (a table of ids and the bounds (after, upto] of the batch's), by id. Each out
    may hold only some of the batch's rows: a row gets the columns of the outs that computed
    it, and a row already holding those values is not rewritten. A row every other
    derivation of the table has passed (changed at or before ``others_done``) is fully
    derived: ``transformed`` goes in the same write. One UPDATE for all of a table's
    derivations writes each row once: one row version, its index entries and foreign key
    checks, instead of one of each per derivation."""
    base, bounds = batch
    froms = sql.SQL(" ").join(
        [
            sql.SQL("{} b").format(sql.Identifier(base)),
            *(
                sql.SQL("LEFT JOIN {n} {a} ON {a}.id = b.id").format(
                    n=sql.Identifier(name), a=sql.Identifier(f"o{k}")
                )
                for k, (name, _) in enumerate(outs)
            ),
        ]
    )
    where = sql.SQL(" AND b.id > {} AND b.id <= {}").format(
        sql.Literal(bounds["after"]), sql.Literal(bounds["upto"])
    )
    key = sql.SQL("b.id")
    sets, targets, values = [], [], []
    for k, (_, columns) in enumerate(outs):
        alias = sql.Identifier(f"o{k}")
        for c in map(sql.Identifier, columns):
            value = sql.SQL("CASE WHEN {a}.id IS NULL THEN t.{c} ELSE {a}.{c} END").format(a=alias, c=c)
            sets.append(sql.SQL("{} = ").format(c) + value)
            targets.append(sql.SQL("t.{}").format(c))
            values.append(value)
    if others_done is not None:
        sets.append(
            sql.SQL(
                "{t} = CASE WHEN t.{c} IS NULL OR t.{c} <= %(others)s::timestamptz THEN true ELSE t.{t} END"
            ).format(t=sql.Identifier(TRANSFORMED), c=sql.Identifier(CHANGED))
        )
    conn.execute(
        sql.SQL(
            "UPDATE {t} t SET {sets} FROM {froms} "
            "WHERE t.id = {key}{where} AND ({tc}) IS DISTINCT FROM ({oc})"
        ).format(
            t=sql.Identifier(table),
            sets=sql.SQL(", ").join(sets),
            froms=froms,
            key=key,
            where=where,
            tc=sql.SQL(", ").join(targets),
            oc=sql.SQL(", ").join(values),
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
