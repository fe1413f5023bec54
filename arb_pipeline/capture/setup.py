"""Setting change capture up and taking it down on the sender (``arb capture setup|drop``).

Each is planned first, as the exact SQL statements it runs, so a dry run prints what would run
and changes nothing, and a real run runs those same statements. Both are idempotent: what
exists already is not planned again. Setup plans nothing while a prerequisite is missing that
it can't fix (``wal_level``, the role's REPLICATION right: a superuser's and a restart's job).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

from arb_pipeline.capture.slot import PLUGIN, publication_change
from arb_pipeline.capture.status import prerequisites

# prerequisites() lists the unlimited max_slot_wal_keep_size too: advice, capture works without it
_ADVICE_PREFIX = "max_slot_wal_keep_size"


@dataclass(frozen=True)
class Step:
    why: str
    statement: sql.Composable


@dataclass(frozen=True)
class Plan:
    blocking: tuple[str, ...]  # missing prerequisites, each with its fix: nothing runs while any
    advice: tuple[str, ...]
    steps: tuple[Step, ...]

    def sql_lines(self, conn) -> list[str]:
        return [f"{step.statement.as_string(conn)};" for step in self.steps]


def _slot_row(conn, slot: str):
    return conn.execute(
        "SELECT plugin, database = current_database(), wal_status FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()


def _create_slot(slot: str) -> sql.Composed:
    return sql.SQL("SELECT pg_create_logical_replication_slot({}, {})").format(
        sql.Literal(slot), sql.Literal(PLUGIN)
    )


def _drop_slot(slot: str) -> sql.Composed:
    return sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(slot))


def plan_setup(conn, slot: str, publication: str, tables: Iterable[str]) -> Plan:
    """The publication of ``tables``, then the pgoutput slot (pgoutput reads the publication as
    it was at each change, so it must exist first); a lost slot is dropped and created again."""
    tables = list(tables)
    found = prerequisites(conn, tables)
    blocking = [p for p in found if not p.startswith(_ADVICE_PREFIX)]
    advice = [p for p in found if p.startswith(_ADVICE_PREFIX)]
    row = _slot_row(conn, slot)
    if row and (row[0] != PLUGIN or not row[1]):
        blocking.append(
            f"replication slot {slot} exists but is not a {PLUGIN} slot of this database (plugin "
            f"{row[0]}): set ARB_CAPTURE_SLOT to another name, or drop it with "
            f"SELECT pg_drop_replication_slot('{slot}');"
        )
    if blocking:
        return Plan(tuple(blocking), tuple(advice), ())
    steps = []
    statement, added = publication_change(conn, publication, tables)
    if statement is not None:
        steps.append(Step(f"publish {len(added)} table(s) of the catalog", statement))
    if row and row[2] == "lost":
        steps.append(Step(f"drop the lost slot {slot}", _drop_slot(slot)))
    if not row or row[2] == "lost":
        steps.append(
            Step(
                f"create the slot {slot} ({PLUGIN}); it captures from now on: materialize a "
                "complete so the receiver has what came before",
                _create_slot(slot),
            )
        )
    return Plan((), tuple(advice), tuple(steps))


def plan_drop(conn, slot: str, publication: str) -> Plan:
    """The slot first (it is what holds WAL back), then the publication."""
    steps = []
    if _slot_row(conn, slot):
        steps.append(Step(f"drop the slot {slot}, freeing the WAL it holds", _drop_slot(slot)))
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone():
        steps.append(
            Step(
                f"drop the publication {publication}",
                sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)),
            )
        )
    return Plan((), (), tuple(steps))


def run_plan(conn, plan: Plan) -> None:
    """Run the plan's statements in order, on an autocommit connection: creating a slot waits
    for the transactions running then to end, so it must not sit in one of its own."""
    for step in plan.steps:
        conn.execute(step.statement)
