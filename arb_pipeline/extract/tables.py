"""Extraction from the sender's database: a partial window or a complete snapshot.

Everything one backup reads comes from one REPEATABLE READ READ ONLY snapshot, and
rows are produced by the server (row_to_json, COPY) and streamed to compressed files:
no per-row Python work, bounded memory.

No row lost at window edges (promise 1): a partial for the window [start, end) selects
rows whose cursor lies in [start - overlap, end). ``overlap`` is the longest delay
between the timestamp a transaction writes and its commit, plus the largest clock
offset between the app servers and the database. A row written with cursor t and
committed at c (database clock) is therefore in the partial of every window from
t's own up to t + overlap, and at least one of those is extracted after c, as long as
c - t < overlap. Overlapping rows reach the receiver more than once; its loads are
idempotent upserts that never let an older version win.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Iterator

from psycopg import sql

from arb_pipeline.catalog import (
    Catalog,
    TableSpec,
    current_catalog,
    introspect,
    parents_first,
    shipped_columns,
)
from arb_pipeline.errors import ArbError
from arb_pipeline.extract.segments import SegmentingSink, segmented_tables
from arb_pipeline.package.manifest import ColumnSpec, FileEntry, TableFingerprint
from arb_pipeline.package.writer import StagedBackup
from arb_pipeline.pg.connect import client_program_args
from arb_pipeline.pg.introspect import TableInfo
from arb_pipeline.pg.quote import ident_list
from arb_pipeline.pg.rowhash import ROW_HASH_ALGORITHM, table_fingerprint

DEFAULT_OVERLAP = timedelta(minutes=15)  # 10 min late commit + 5 min clock offset
PIPE_CHUNK = 1 << 20  # bytes read from psql at a time
# A complete's tables smaller than this are dumped by the snapshot's own session (psycopg),
# the larger ones through psql: starting psql and joining the snapshot cost about 25 ms,
# what psql saves on 4 MB of rows.
SMALL_TABLE_BYTES = 4 << 20


class ExtractError(ArbError):
    pass


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ExtractError("window bounds must be timezone-aware")
        if not self.start < self.end:
            raise ExtractError(f"window start {self.start} is not before its end {self.end}")


@dataclass
class Extracted:
    snapshot_time: datetime
    tables_order: list[str]
    files: list[FileEntry]
    media_names: list[str]  # distinct file names referenced by the extracted rows
    snapshot_id: str | None = None


@contextmanager
def read_snapshot(conn, snapshot_id: str | None = None) -> Iterator[datetime]:
    """One consistent, read-only view of the database (``snapshot_id``: an exported one);
    yields its time on the DB clock."""
    if conn.info.transaction_status != 0:  # IDLE
        conn.rollback()
    conn.autocommit = False
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        if snapshot_id is not None:  # must come before the transaction's first query
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
        # now() is the transaction's start; the snapshot is taken at its first query.
        snapshot_time = conn.execute("SELECT now()").fetchone()[0]
        yield snapshot_time
    finally:
        conn.rollback()


class _PartialSelection:
    """SQL predicates choosing a window's rows and, transitively, their FK parents."""

    def __init__(
        self, specs: dict[str, TableSpec], infos: dict[str, TableInfo], window: Window, overlap: timedelta
    ):
        self.specs, self.infos = specs, infos
        self.lo = sql.Literal(window.start - overlap)
        self.hi = sql.Literal(window.end)
        roots = [t for t, s in specs.items() if s.in_partials]
        self.tables = set(roots)
        todo = list(roots)
        while todo:  # close the set under FK parents
            for fk in infos[todo.pop()].foreign_keys:
                if fk.ref_table in infos and fk.ref_table not in self.tables:
                    self.tables.add(fk.ref_table)
                    todo.append(fk.ref_table)
        self._children = {t: [] for t in self.tables}
        for child in self.tables:
            for fk in infos[child].foreign_keys:
                if fk.ref_table in self.tables and fk.ref_table != child:
                    self._children[fk.ref_table].append((child, fk))

    def predicate(self, table: str, alias: str = "t", depth: int = 0) -> sql.Composable:
        parts: list[sql.Composable] = []
        spec = self.specs[table]
        if spec.in_partials:
            col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(spec.cursor))
            parts.append(sql.SQL("({c} >= {lo} AND {c} < {hi})").format(c=col, lo=self.lo, hi=self.hi))
        for child, fk in self._children[table]:
            inner = f"c{depth}"
            parts.append(
                sql.SQL("({ref}) IN (SELECT {cols} FROM {child} {a} WHERE {pred})").format(
                    ref=sql.SQL(", ").join(
                        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                        for c in fk.ref_columns
                    ),
                    cols=sql.SQL(", ").join(
                        sql.SQL("{}.{}").format(sql.Identifier(inner), sql.Identifier(c)) for c in fk.columns
                    ),
                    child=sql.Identifier(child),
                    a=sql.Identifier(inner),
                    pred=self.predicate(child, inner, depth + 1),
                )
            )
        return sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")


def _unescape_copy_text(chunk: bytes) -> bytes:
    """COPY's text format doubles backslashes; row_to_json output has no other escapes
    (JSON already escapes every control character), so this restores the JSON exactly."""
    return chunk.replace(b"\\\\", b"\\")


def _copy_to(conn, query: sql.Composable, sink, transform=None) -> None:
    """COPY a query's rows into ``sink``."""
    _copy_out(conn, sql.SQL("COPY ({}) TO STDOUT").format(query), sink, transform)


def _copy_out(conn, copy_sql: sql.Composable, sink, transform=None, batch: int = 1 << 20) -> None:
    """Run a COPY ... TO STDOUT into ``sink``; psycopg hands over a row at a time, so rows
    are written in batches of about ``batch`` bytes."""
    rows: list = []
    size = 0
    with conn.cursor() as cur:
        with cur.copy(copy_sql) as copy:
            for row in copy:
                rows.append(row)
                size += len(row)
                if size >= batch:
                    data = b"".join(rows)
                    sink.write_lines(transform(data) if transform else data)
                    rows, size = [], 0
    if rows:
        data = b"".join(rows)
        sink.write_lines(transform(data) if transform else data)


def _select_list(columns) -> sql.Composable:
    return ident_list(c.name for c in columns)


def _file_entry(
    sink, name: str, spec: TableSpec, info: TableInfo, columns, fmt: str, cursor: str | None
) -> FileEntry:
    return FileEntry(
        name=name,
        kind="table",
        bytes=sink.file_bytes,
        sha256=sink.file_sha256,
        rows=sink.rows,
        table=spec.name,
        format=fmt,
        columns=tuple(ColumnSpec(c.name, c.type) for c in columns),
        primary_key=info.primary_key,
        cursor=cursor,
    )


def _catalog_specs(catalog: Catalog | None) -> dict[str, TableSpec]:
    return {s.name: s for s in (catalog or current_catalog()).specs}


@dataclass(frozen=True)
class PartialSelect:
    """What a partial takes of one table: its shipped columns and the query selecting its rows."""

    table: str
    info: TableInfo
    columns: list
    predicate: sql.Composable  # over alias t: the window's rows

    @property
    def query(self) -> sql.Composable:
        """SELECT the shipped columns of the window's rows, in key order."""
        return sql.SQL("SELECT {cols} FROM {t} t WHERE {pred} ORDER BY {pk}").format(
            cols=_select_list(self.columns),
            t=sql.Identifier(self.table),
            pred=self.predicate,
            pk=ident_list(self.info.primary_key),
        )


def partial_selects(
    conn,
    window: Window,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    catalog: Catalog | None = None,
    include_personal: bool = False,
) -> list[PartialSelect]:
    """The tables a partial for ``window`` holds, parents first, and the query of each
    (run them in one snapshot: extract_partial does; so does bench's COPY baseline)."""
    specs = _catalog_specs(catalog)
    infos = introspect(conn, list(specs))
    selection = _PartialSelection(specs, infos, window, overlap)
    out = []
    for table in (t for t in parents_first(infos) if t in selection.tables):
        columns = shipped_columns(specs[table], infos[table], include_personal)
        out.append(PartialSelect(table, infos[table], columns, selection.predicate(table)))
    return out


def extract_partial(
    conn,
    staged: StagedBackup,
    window: Window,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    catalog: Catalog | None = None,
    include_personal: bool = False,
) -> Extracted:
    """Write the window's rows, one JSON Lines file per table, from one snapshot."""
    specs = _catalog_specs(catalog)
    with read_snapshot(conn) as snapshot_time:
        selects = partial_selects(
            conn, window, overlap=overlap, catalog=catalog, include_personal=include_personal
        )
        files, media = [], set()
        for select in selects:
            table, info = select.table, select.info
            spec = specs[table]
            query = sql.SQL("SELECT row_to_json(x) FROM ({}) x").format(select.query)
            name = f"tables/{table}.jsonl.zst"
            with staged.table_file(name) as sink:
                _copy_to(conn, query, sink, _unescape_copy_text)
            files.append(
                staged.add_entry(_file_entry(sink, name, spec, info, select.columns, "jsonl", spec.cursor))
            )
            if spec.media_column:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT DISTINCT {m} FROM {t} t WHERE ({pred}) AND {m} IS NOT NULL AND {m} <> ''"
                    ).format(
                        m=sql.Identifier(spec.media_column), t=sql.Identifier(table), pred=select.predicate
                    )
                )
                media.update(r[0] for r in rows)
    return Extracted(snapshot_time, [s.table for s in selects], files, sorted(media))


def _popen_big_pipe(args: list[str], env) -> subprocess.Popen:
    """psql with a 1 MB pipe to read from (the default 64 kB wakes both sides 16 times as
    often); where the system refuses that size, the default pipe."""
    try:
        return subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, pipesize=PIPE_CHUNK
        )
    except PermissionError:  # above fs.pipe-max-size or the user's pipe-user-pages limit
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _copy_via_psql(psql: str, dsn: str, snapshot_id: str, copy_text: str, sink) -> None:
    """Run ``copy_text`` (COPY ... TO STDOUT) through psql joined to our exported snapshot.

    psycopg hands COPY data over one row per call, which costs more Python time than the
    server spends on a large table; psql streams it in C and we read big chunks."""
    conninfo, env = client_program_args(dsn)
    args = [
        psql,
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "-c",
        f"SET TRANSACTION SNAPSHOT '{snapshot_id}'",
        "-c",
        "SET TimeZone = 'UTC'",
        "-c",
        copy_text,
        "-c",
        "COMMIT",
    ]
    try:
        proc = _popen_big_pipe(args, env)
    except FileNotFoundError:
        raise ExtractError(
            f"psql not found at {psql!r}: install postgresql-client or set ARB_PG_DUMP to "
            "the pg_dump beside it"
        ) from None
    # Whole chunks as read: psql writes whole rows, so only the stream's end must be a
    # row's end (the sink counts rows by newline, wherever a chunk is cut).
    last = b"\n"
    read = proc.stdout.read
    while chunk := read(PIPE_CHUNK):
        sink.write_lines(chunk)
        last = chunk[-1:]
    torn = last != b"\n"
    err = proc.stderr.read()
    if proc.wait() != 0 or torn:
        raise ExtractError(
            f"COPY through psql failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}"
        )


def _fingerprints_in_snapshot(dsn: str, snapshot_id: str, wanted: dict, sessions: int = 2) -> dict:
    """Fingerprint tables in ``sessions`` sessions joined to an exported snapshot, largest first."""
    from arb_pipeline.pg.connect import connect

    queue = list(wanted)
    lock = threading.Lock()
    out: dict = {}

    def worker() -> None:
        with connect(dsn, autocommit=True, application_name="arb_fingerprint") as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        table = queue.pop(0)
                    cols, pk = wanted[table]
                    out[table] = table_fingerprint(conn, table, cols, pk)
            finally:
                conn.execute("ROLLBACK")

    with connect(dsn, autocommit=True) as conn:  # largest tables first, so the sessions finish together
        sizes = dict(
            conn.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = ANY(%s)",
                (queue,),
            ).fetchall()
        )
    queue.sort(key=lambda t: -sizes.get(t, 0))
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        for future in [pool.submit(worker) for _ in range(sessions)]:
            future.result()
    return out


def _relations(conn, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Each table's size in bytes and relkind."""
    found = {
        name: (size, kind)
        for name, size, kind in conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid), c.relkind::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = ANY(%s)",
            (tables,),
        ).fetchall()
    }
    return {t: found.get(t, (0, "?")) for t in tables}


def _media_names(conn, specs: dict[str, TableSpec], order: list[str]) -> set[str]:
    """Distinct media file names the snapshot's rows reference."""
    media: set[str] = set()
    for table in order:
        spec = specs[table]
        if spec.media_column:
            rows = conn.execute(
                sql.SQL("SELECT DISTINCT {m} FROM {t} WHERE {m} IS NOT NULL AND {m} <> ''").format(
                    m=sql.Identifier(spec.media_column), t=sql.Identifier(table)
                )
            )
            media.update(r[0] for r in rows)
    return media


def _with_fingerprint(entry: FileEntry, fp) -> FileEntry:
    if fp is None:
        return entry
    if fp.rows != entry.rows:
        raise ExtractError(
            f"{entry.table}: fingerprinted {fp.rows} rows but dumped {entry.rows} from the same "
            "snapshot; the snapshot was not shared (is the server a standby?)"
        )
    return replace(entry, fingerprint=TableFingerprint(ROW_HASH_ALGORITHM, fp.rows, fp.digest))


def extract_complete(
    conn,
    staged: StagedBackup,
    *,
    catalog: Catalog | None = None,
    include_personal: bool = False,
    level: int = 1,
    threads: int = 0,
    on_snapshot=None,
    psql: str | None = None,
    dsn: str | None = None,
    fingerprints: bool = False,
    pinned_snapshot_id: str | None = None,
) -> Extracted:
    """Write every catalog table in COPY text format, from one snapshot (``pinned_snapshot_id``:
    one exported by a temporary slot, capture/pin.py; else this session exports its own).

    With ``fingerprints``, each table file's manifest entry carries the row count and
    order-independent digest of its columns (rowhash.table_fingerprint), computed by the
    server in the same snapshot: the receiver checks its copy against them.

    ``on_snapshot(snapshot_id)`` runs inside the snapshot (e.g. ``pg_dump --snapshot``
    for the schema), in another thread while the tables are read. With ``psql`` and ``dsn``, table data
    streams through psql sessions joined to the same snapshot (much faster).
    """
    specs = _catalog_specs(catalog)
    with read_snapshot(conn, pinned_snapshot_id) as snapshot_time, ThreadPoolExecutor(max_workers=1) as side:
        snapshot_id = pinned_snapshot_id or conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        # The schema (pg_dump --snapshot) is taken while the tables dump (it mostly waits on
        # the server); leaving the with block waits for it, inside the snapshot.
        schema_done = side.submit(on_snapshot, snapshot_id) if on_snapshot else None
        infos = introspect(conn, list(specs))
        order = parents_first(infos)

        parallel = bool(psql and dsn)
        relations = _relations(conn, order)
        # A plain table is copied as such, as pg_dump does (COPY t (cols): no executor per row,
        # about a quarter less server time than COPY (SELECT ...)); anything else by query.
        copies = {
            t: sql.SQL(
                "COPY {t} ({cols}) TO STDOUT"
                if relations[t][1] == "r"
                else "COPY (SELECT {cols} FROM {t}) TO STDOUT"
            ).format(
                cols=_select_list(shipped_columns(specs[t], infos[t], include_personal)), t=sql.Identifier(t)
            )
            for t in order
        }
        shipped = {t: shipped_columns(specs[t], infos[t], include_personal) for t in order}
        # Large tables in key order, cut by key range into frames (extract/segments.py).
        segmented = segmented_tables(conn, infos, relations, shipped) if psql and dsn else {}
        for t in segmented:
            copies[t] = sql.SQL("COPY (SELECT {cols} FROM {t} ORDER BY {k}) TO STDOUT").format(
                cols=_select_list(shipped[t]), t=sql.Identifier(t), k=sql.Identifier(infos[t].primary_key[0])
            )
        # as text for psql, rendered here: the dump threads don't touch ``conn`` (it lists media meanwhile)
        copy_texts = {t: c.as_string(conn) for t, c in copies.items()}

        def dump(table: str, via_psql: bool):
            spec, info = specs[table], infos[table]
            columns = shipped[table]
            name = f"tables/{table}.copy.zst"
            cut = segmented.get(table)
            with staged.table_file(name, level=level, threads=threads, framed=bool(cut)) as sink:
                out = SegmentingSink(sink, *cut) if cut else sink
                if via_psql:
                    _copy_via_psql(psql, dsn, snapshot_id, copy_texts[table], out)
                else:
                    _copy_out(conn, copies[table], out)
                if cut:
                    out.close()
            entry = _file_entry(sink, name, spec, info, columns, "copy-text", None)
            return replace(entry, segments=tuple(out.segments)) if cut else entry

        wanted = (
            {
                t: (
                    [c.name for c in shipped_columns(specs[t], infos[t], include_personal)],
                    infos[t].primary_key,
                )
                for t in order
            }
            if fingerprints
            else {}
        )
        if parallel:
            # Two psql sessions in the same snapshot dump the big tables side by side, largest
            # first so they finish together; this session meanwhile dumps the small ones (a psql
            # process and its connection cost more than their rows) and lists the media.
            big = sorted(
                (t for t in order if relations[t][0] >= SMALL_TABLE_BYTES), key=lambda t: -relations[t][0]
            )
            with ThreadPoolExecutor(max_workers=1) as fp_pool, ThreadPoolExecutor(max_workers=2) as pool:
                # a third session, in the same snapshot, fingerprints the tables meanwhile
                fp_future = (
                    fp_pool.submit(_fingerprints_in_snapshot, dsn, snapshot_id, wanted) if wanted else None
                )
                futures = {t: pool.submit(dump, t, True) for t in big}
                done = {t: dump(t, False) for t in order if t not in futures}
                media = _media_names(conn, specs, order)
                done.update((t, f.result()) for t, f in futures.items())
                entries = [done[t] for t in order]
                prints = fp_future.result() if fp_future else {}
        else:
            entries = [dump(t, False) for t in order]
            prints = {t: table_fingerprint(conn, t, cols, pk) for t, (cols, pk) in wanted.items()}
            media = _media_names(conn, specs, order)
        if schema_done:
            schema_done.result()  # its entry (schema.sql) comes first
        files = [staged.add_entry(_with_fingerprint(e, prints.get(e.table))) for e in entries]
    return Extracted(snapshot_time, order, files, sorted(media), snapshot_id)
