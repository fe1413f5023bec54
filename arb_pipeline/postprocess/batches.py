"""A run's working tables: the ids each derivation computes (todo), what a batch computed
(out), and the problems recorded from it (run.py drives them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from arb_pipeline.postprocess.engine import (
    CLOCK_MARGIN,
    OUT,
    PROBLEMS,
    SAMPLE_PROBLEMS,
    TODO,
    Derivation,
    RunResult,
    Scope,
    Source,
    SourceResult,
)
from arb_pipeline.postprocess.transformed import CHANGED, TRANSFORMED, has_column


@dataclass
class Plan:
    """One derivation in a run: how it runs and what it has computed."""

    derivation: Derivation
    result: RunResult
    since: datetime | None  # None: every row
    digest: str


@dataclass
class Member:
    """One derivation's source within its table's part of a run."""

    plan: Plan
    source: Source
    result: SourceResult

    @property
    def shares_write(self) -> bool:
        return self.plan.derivation.writes_own_rows and bool(self.source.columns) and not self.source.out_like


def _bound(value: datetime | None, default: str) -> str:
    return value.isoformat() if value is not None else default


ALL = f"{TODO}_all"  # the ids any of a table's derivations computes


def todo_table(k: int, members: Sequence[Member]) -> str:
    """The todo table of member ``k``: the union when it computes every row (a full run)."""
    return ALL if members[k].plan.since is None else f"{TODO}_{k}"


def todo_tables(members: Sequence[Member]) -> list[str]:
    return list(dict.fromkeys([ALL, *(todo_table(k, members) for k in range(len(members)))]))


def collect(conn, table: str, members: Sequence[Member], scope: Scope, shard: tuple[int, int] | None) -> int:
    """Fill a todo table per member with the ids it computes, and their union; return how
    many ids in all. ``shard`` (k, n): only the ids equal to k modulo n."""
    src = sql.Identifier(table)
    mine = (
        sql.SQL("true")
        if shard is None
        else sql.SQL("mod(id, {}) = {}").format(*map(sql.Literal, shard[::-1]))
    )

    def only_mine(query: str) -> sql.Composable:  # "SELECT <id> ..." -> its ids of the shard
        return sql.SQL("SELECT id FROM ({}) q(id) WHERE {}").format(sql.SQL(query), mine)

    margin = sql.SQL("")
    if has_column(conn, table, TRANSFORMED):
        # Rows changed in the margin before done_through were computed by the last run
        # unless the clock stepped back: those are not transformed yet (a load resets it).
        margin = sql.SQL(" AND ({c} > %(done)s OR {t} IS NOT TRUE)").format(
            c=sql.Identifier(CHANGED), t=sql.Identifier(TRANSFORMED)
        )
    window = {"start": _bound(scope.window_start, "-infinity"), "end": _bound(scope.window_end, "infinity")}
    for name in todo_tables(members):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(name)))
    everything = any(m.plan.since is None for m in members)
    if everything:
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT id FROM {} WHERE {}").format(sql.Identifier(ALL), src, mine)
        )
    for k, m in enumerate(members):
        if m.plan.since is None:
            continue
        todo = sql.Identifier(todo_table(k, members))
        insert = sql.SQL("INSERT INTO {} (id) ").format(todo)
        conflict = sql.SQL(" ON CONFLICT (id) DO NOTHING")
        conn.execute(
            insert
            + sql.SQL("SELECT id FROM {} WHERE {} AND {} > %(since)s").format(
                src, mine, sql.Identifier(CHANGED)
            )
            + margin,
            {"since": m.plan.since - CLOCK_MARGIN, "done": m.plan.since},
        )
        for extra in m.source.extra:  # inputs changed since the last run's snapshot
            conn.execute(insert + only_mine(extra) + conflict, {"since": m.plan.since})
        if scope.recompute_window:
            conn.execute(insert + only_mine(m.source.window_sql()) + conflict, window)
        conn.execute(sql.SQL("ANALYZE {}").format(todo))
        if not everything:
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT id FROM {} ON CONFLICT (id) DO NOTHING").format(
                    sql.Identifier(ALL), todo
                )
            )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ALL)))
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(ALL))).fetchone()[0]


def create_out(conn, source: Source) -> None:
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


def record_problems(conn, member: Member) -> None:
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


def sweep_problems(conn, derivation: Derivation, source: Source) -> None:
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
