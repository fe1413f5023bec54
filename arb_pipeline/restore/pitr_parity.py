"""The parity report of ``arb restore``: each restored table against what the backups
themselves say it must hold.

Per table, the complete's file is staged (typed by the receiver) and, when the manifest
carries the sender's fingerprint, compared with it: that checks the complete against the
sender. The partials' files are then laid over it by primary key, oldest snapshot first
(the newest version wins), and the result is compared with the restored table by count
and order-independent digest on the columns both have; on a difference, the first keys
are named. Nothing can check the partials' rows against the sender itself: there is no
connection to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from arb_pipeline.catalog import introspect, parents_first
from arb_pipeline.load.merge import receiver_only_columns
from arb_pipeline.load.staging import stage_table
from arb_pipeline.package.manifest import FileEntry
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import ident_list, quote_ident
from arb_pipeline.pg.rowhash import (
    ROW_HASH_ALGORITHM,
    Fingerprint,
    canonical_text_settings,
    relation_fingerprint,
    row_hash_sql,
)
from arb_pipeline.progress import Progress, silent

if TYPE_CHECKING:
    from arb_pipeline.restore.pitr import Chosen, RestorePlan

EXPECTED = "arb_pitr_expected"
MAX_KEYS = 5


@dataclass
class RestoredTable:
    """One table of a restore against what the backups say it must hold."""

    table: str
    expected: Fingerprint
    restored: Fingerprint
    sender_digest_ok: bool | None  # the complete's file equals the sender's snapshot fingerprint (None: none)
    partial_files: int
    first_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.expected == self.restored and self.sender_digest_ok is not False

    def format(self) -> str:
        sender = {
            True: "complete = sender's digest",
            False: "complete's file DIFFERS from the sender's digest",
            None: "no sender digest",
        }[self.sender_digest_ok]
        what = f"{self.expected.rows} rows, {sender}, {self.partial_files} partial file(s)"
        if self.ok:
            return f"{self.table}: ok ({what})"
        text = (
            f"{self.table}: DRIFT expected {self.expected.rows} rows (digest {self.expected.digest}), "
            f"restored {self.restored.rows} (digest {self.restored.digest}); {what}"
        )
        return text + (f"; first keys: {'; '.join(self.first_keys)}" if self.first_keys else "")


def check_restored(dsn: str, plan: "RestorePlan", progress: Progress | None = None) -> list[RestoredTable]:
    """Per table: the restored table against the complete overlaid by the partials."""
    progress = progress or silent()
    files: dict[str, list[tuple["Chosen", FileEntry]]] = {}
    for chosen in plan.backups:  # the complete first, then partials oldest snapshot first
        for entry in chosen.manifest.table_files():
            files.setdefault(entry.table, []).append((chosen, entry))
    out = []
    with connect(dsn, autocommit=True, application_name="arb_pitr_parity") as conn:
        infos = introspect(conn, list(files))
        for table in progress.track(parents_first(infos), "parity"):
            with conn.transaction(force_rollback=True), canonical_text_settings(conn):
                out.append(_table_parity(conn, table, files[table], infos[table], plan.complete))
    return out


def _table_parity(conn, table: str, files, info, complete: "Chosen") -> RestoredTable:
    (first, base), rest = files[0], files[1:]
    stage_table(conn, first.path, base, info, sql.Identifier(EXPECTED), temporary=True)
    columns = [c.name for c in base.columns]
    sender_ok = None
    fp = base.fingerprint
    if first is complete and fp is not None and fp.algorithm == ROW_HASH_ALGORITHM:
        mine = relation_fingerprint(conn, quote_ident(EXPECTED), columns)
        sender_ok = (mine.rows, mine.digest) == (fp.rows, fp.digest)
    pk = info.primary_key
    conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} ({})").format(sql.Identifier(EXPECTED), ident_list(pk)))
    for i, (chosen, entry) in enumerate(rest):  # oldest snapshot first: the newest version wins
        stage = f"arb_pitr_partial_{i}"
        stage_table(conn, chosen.path, entry, info, sql.Identifier(stage), temporary=True)
        cols = [c.name for c in entry.columns if c.name in columns]
        non_key = [c for c in cols if c not in pk]
        action = (
            "DO UPDATE SET " + ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in non_key)
            if non_key
            else "DO NOTHING"
        )
        col_list = ", ".join(quote_ident(c) for c in cols)
        conn.execute(
            f"INSERT INTO {quote_ident(EXPECTED)} ({col_list}) SELECT {col_list} FROM {quote_ident(stage)} "
            f"ON CONFLICT ({', '.join(quote_ident(k) for k in pk)}) {action}"
        )
    own = receiver_only_columns(info)
    comparable = [c for c in columns if c in set(info.column_names) and c not in own]
    expected = relation_fingerprint(conn, quote_ident(EXPECTED), comparable)
    restored = relation_fingerprint(conn, f"public.{quote_ident(table)}", comparable)
    result = RestoredTable(table, expected, restored, sender_ok, len(rest))
    if expected != restored:
        result.first_keys = _first_keys(conn, table, pk, comparable)
    return result


def _first_keys(conn, table: str, pk, columns) -> list[str]:
    keys = ", ".join(quote_ident(k) for k in pk)

    def hashed(relation: str) -> str:
        return (
            f"SELECT {', '.join(f'x.{quote_ident(k)}' for k in pk)}, {row_hash_sql(columns, 'x')} AS h "
            f"FROM {relation} x"
        )

    rows = conn.execute(
        f"SELECT {keys}, "
        "CASE WHEN r.h IS NULL THEN 'missing' WHEN e.h IS NULL THEN 'extra' ELSE 'changed' END "
        f"FROM ({hashed(quote_ident(EXPECTED))}) e FULL JOIN ({hashed('public.' + quote_ident(table))}) r "
        f"USING ({keys}) WHERE e.h IS DISTINCT FROM r.h ORDER BY {keys} LIMIT {MAX_KEYS}"
    ).fetchall()
    return [
        ", ".join(f"{k}={v}" for k, v in zip(pk, row[:-1], strict=True)) + f" {row[-1]} in the restore"
        for row in rows
    ]
