"""Extraction from a real sender database: windows, parents, late commits, exact JSON."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg

from arb_pipeline.extract.tables import Window, extract_complete, extract_partial
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.reader import iter_table_lines
from arb_pipeline.package.writer import StagedBackup
from arb_pipeline.pg.connect import connect

UTC = timezone.utc
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
W = Window(T0, T0 + timedelta(minutes=5))
P = "AndroidRequests_"


def _base_rows(conn):
    conn.execute(f"""INSERT INTO "{P}event" VALUES ('evn00001', 'Bus lleno', NULL, 30, 'estado', 'i', 'bus'),
                     ('evn00002', 'Paradero sucio', 'x', 30, 'estado', 'o', 'busStop')""")
    conn.execute(f"""INSERT INTO "{P}busv2" ("registrationPlate", uuid) VALUES
                     ('AAAA11', '11111111-1111-1111-1111-111111111111'),
                     ('BB1234', '22222222-2222-2222-2222-222222222222')""")
    conn.execute(f"""INSERT INTO "{P}busassignment" (service, uuid_id) VALUES ('506', 1), ('210', 2)""")


def _bus_event(conn, ts, assignment=1):
    return conn.execute(
        f"""INSERT INTO "{P}eventforbusv2" ("timeStamp", "timeCreation", event_id, "phoneId",
            busassignment_id) VALUES (%s, %s, 'evn00001', gen_random_uuid(), %s) RETURNING id""",
        (ts, ts, assignment),
    ).fetchone()[0]


def _rows(staged, table):
    path = staged.path(f"tables/{P}{table}.jsonl.zst")
    return [json.loads(line) for line in iter_table_lines(path)]


def _extract(dsn, tmp_path, window=W, overlap=timedelta(0), name="b"):
    staged = StagedBackup(tmp_path / name)
    with connect(dsn) as conn:
        ex = extract_partial(conn, staged, window, overlap=overlap)
    return staged, ex


def test_partial_holds_exactly_the_window_and_the_parents(sender_db, tmp_path):
    with connect(sender_db) as conn:
        _base_rows(conn)
        before = _bus_event(conn, T0 - timedelta(microseconds=1))
        first = _bus_event(conn, T0)
        last = _bus_event(conn, W.end - timedelta(microseconds=1), assignment=2)
        _bus_event(conn, W.end)  # belongs to the next window: [start, end)
    staged, ex = _extract(sender_db, tmp_path)
    assert [r["id"] for r in _rows(staged, "eventforbusv2")] == [first, last]
    assert before not in [r["id"] for r in _rows(staged, "eventforbusv2")]
    assert sorted(r["id"] for r in _rows(staged, "busassignment")) == [1, 2]  # parents ride along
    assert sorted(r["registrationPlate"] for r in _rows(staged, "busv2")) == ["AAAA11", "BB1234"]
    assert [r["id"] for r in _rows(staged, "event")] == ["evn00001"]  # only referenced ones
    assert (
        ex.tables_order.index(f"{P}busv2")
        < ex.tables_order.index(f"{P}busassignment")
        < ex.tables_order.index(f"{P}eventforbusv2")
    )
    entry = next(f for f in ex.files if f.table == f"{P}eventforbusv2")
    assert entry.rows == 2 and entry.cursor == "timeStamp" and entry.primary_key == ("id",)


def test_overlap_rereads_the_previous_minutes(sender_db, tmp_path):
    with connect(sender_db) as conn:
        _base_rows(conn)
        early = _bus_event(conn, T0 - timedelta(minutes=9))
        too_early = _bus_event(conn, T0 - timedelta(minutes=16))
    staged, _ = _extract(sender_db, tmp_path, overlap=timedelta(minutes=15))
    assert [r["id"] for r in _rows(staged, "eventforbusv2")] == [early]
    assert too_early


def test_stats_bring_their_event_even_when_the_event_is_outside_the_window(sender_db, tmp_path):
    with connect(sender_db) as conn:
        _base_rows(conn)
        event = _bus_event(conn, T0 - timedelta(hours=1))
        conn.execute(
            f"""INSERT INTO "{P}stadisticdatafromregistrationbus"
            (longitude, latitude, "timeStamp", "confirmDecline", "phoneId", "reportOfEvent_id")
            VALUES (-70.6, -33.4, %s, 'confirm', gen_random_uuid(), %s)""",
            (T0 + timedelta(minutes=1), event),
        )
    staged, _ = _extract(sender_db, tmp_path)
    assert [r["id"] for r in _rows(staged, "eventforbusv2")] == [event]
    assert len(_rows(staged, "stadisticdatafromregistrationbus")) == 1


def test_a_late_commit_reaches_the_next_windows_backup(sender_db, tmp_path):
    """A transaction writes timeStamp inside window W, and commits after W was extracted:
    W misses it (it was invisible), the partial of a later window catches it through
    the overlap."""
    with connect(sender_db) as conn:
        _base_rows(conn)
    late = psycopg.connect(sender_db)
    late.execute(
        f"""INSERT INTO "{P}eventforbusv2" ("timeStamp", "timeCreation", event_id, "phoneId",
                     busassignment_id) VALUES (%s, %s, 'evn00001', gen_random_uuid(), 1)""",
        (T0 + timedelta(minutes=2),) * 2,
    )
    staged, _ = _extract(sender_db, tmp_path, name="w")
    assert _rows(staged, "eventforbusv2") == []  # not committed yet: invisible
    late.commit()  # "8 minutes later"
    late.close()
    later = Window(W.start + timedelta(minutes=10), W.end + timedelta(minutes=10))
    staged, _ = _extract(sender_db, tmp_path, window=later, overlap=timedelta(minutes=15), name="w2")
    assert len(_rows(staged, "eventforbusv2")) == 1


def test_an_app_clock_behind_the_database_is_covered_by_the_overlap(sender_db, tmp_path):
    """The app's clock is 3 minutes behind: at database time end+1min it writes a
    timestamp inside the already-extracted window; the next window's overlap has it."""
    with connect(sender_db) as conn:
        _base_rows(conn)
        _bus_event(conn, W.end - timedelta(minutes=2))
    nxt = Window(W.end, W.end + timedelta(minutes=5))
    staged, _ = _extract(sender_db, tmp_path, window=nxt, overlap=timedelta(minutes=15))
    assert len(_rows(staged, "eventforbusv2")) == 1


TRICKY = [
    ("ñandú ☃ 日本", 'a\\b\\\\c\nnew\tline "quoted" \u0001'),
    ("", "\\N"),
    ("x", None),
]


def test_json_round_trip_is_exact_for_every_column_type(sender_db, receiver_db, tmp_path):
    with connect(sender_db) as conn:
        _base_rows(conn)
        for i, (message, image) in enumerate(TRICKY):
            conn.execute(
                f"""INSERT INTO "{P}report" ("timeStamp", message, "imageName", "reportInfo", "phoneId")
                             VALUES (%s, %s, %s, '{{"a": [1, 2.5e-7]}}', gen_random_uuid())""",
                (T0 + timedelta(seconds=i, microseconds=123457), message, image),
            )
        conn.execute(f"""INSERT INTO "{P}eventforbusv2" ("timeStamp", "timeCreation", "expireTime", event_id,
                         "phoneId", busassignment_id, broken, "brokenType") VALUES
                         ('2026-11-26 07:01:02.000001-03', '2026-11-26 10:00:00+00', NULL, 'evn00001',
                          'aaaaaaaa-0000-0000-0000-00000000000a', 1, true, NULL)""")
        conn.execute(
            f"""INSERT INTO "{P}stadisticdatafromregistrationbus"
            (longitude, latitude, "timeStamp", "confirmDecline", "phoneId", "reportOfEvent_id",
             "gpsLongitude", "gpsLatitude", "gpsTimeStamp", distance)
            VALUES (-70.123456789012345, 1e-300, %s, 'confirm', gen_random_uuid(), 1,
                    0.1, NULL, NULL, 1.7976931348623157e308)""",
            (T0 + timedelta(minutes=4, seconds=59, microseconds=999999),),
        )
    staged, ex = _extract(sender_db, tmp_path)
    # Load the JSON into the receiver the way the loader does: jsonb_populate_record
    # into the shipped columns only (receiver-only columns keep their defaults).
    with connect(receiver_db) as conn:
        for entry in ex.files:
            cols = ", ".join(f'"{c.name}"' for c in entry.columns)
            for line in iter_table_lines(staged.path(entry.name)):
                conn.execute(
                    f'INSERT INTO "{entry.table}" ({cols}) SELECT {cols} '
                    f'FROM jsonb_populate_record(NULL::"{entry.table}", %s::jsonb)',
                    (line.decode(),),
                )
    report = compare_tables(
        sender_db,
        receiver_db,
        tables=[f"{P}report", f"{P}eventforbusv2", f"{P}stadisticdatafromregistrationbus"],
    )
    assert report.ok, report.format()
    assert sum(t.sender.rows for t in report.tables) == 3 + 1 + 1


def test_personal_columns_never_leave_the_sender(sender_db, tmp_path):
    with connect(sender_db) as conn:
        _base_rows(conn)
        conn.execute(
            f"""INSERT INTO "{P}level" (name, "minScore", "maxScore", position) VALUES ('l1', 0, 10, 1)"""
        )
        conn.execute(f"""INSERT INTO "{P}transappuser" ("userId", name, email, "phoneId", "accountType",
                         level_id, "sessionToken", nickname, "photoURI", "externalId", "timeCreation") VALUES
                         ('u1', 'Ana', 'ana@example.org', gen_random_uuid(), 'GOOGLE', 1,
                          'cccccccc-0000-0000-0000-000000000001', 'ana', 'x', gen_random_uuid(), now())""")
        event = _bus_event(conn, T0)
        conn.execute(
            f"""INSERT INTO "{P}stadisticdatafromregistrationbus"
            (longitude, latitude, "timeStamp", "confirmDecline", "phoneId", "reportOfEvent_id",
             "tranSappUser_id")
            VALUES (-70.6, -33.4, %s, 'confirm', gen_random_uuid(), %s, 1)""",
            (T0, event),
        )
    staged, ex = _extract(sender_db, tmp_path)
    users = _rows(staged, "transappuser")
    assert [u["name"] for u in users] == ["Ana"]
    assert "email" not in users[0] and "sessionToken" not in users[0]
    complete = StagedBackup(tmp_path / "complete")
    with connect(sender_db) as conn:
        extract_complete(conn, complete)
    for path in (tmp_path).rglob("*.zst"):
        from arb_pipeline.package.reader import iter_table_chunks

        blob = b"".join(iter_table_chunks(path))
        assert b"ana@example.org" not in blob and b"cccccccc-0000" not in blob, path


def test_complete_is_one_snapshot_while_writers_commit(sender_db, tmp_path):
    """Writers insert a parent and its child in one transaction, over and over, while the
    complete runs: in a consistent snapshot every child's parent is present."""
    with connect(sender_db) as conn:
        _base_rows(conn)
    stop = threading.Event()
    commits = []

    def writer():
        with psycopg.connect(sender_db, autocommit=False) as conn:
            while not stop.is_set():
                bus = conn.execute(f"""INSERT INTO "{P}busv2" ("registrationPlate", uuid)
                                       VALUES ('CC1234', gen_random_uuid()) RETURNING id""").fetchone()[0]
                conn.execute(
                    f"""INSERT INTO "{P}busassignment" (service, uuid_id) VALUES ('1', %s)""", (bus,)
                )
                conn.commit()
                commits.append(bus)

    def wait_for_commits(n):
        deadline = time.monotonic() + 30
        while len(commits) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for_commits(3)
        staged = StagedBackup(tmp_path / "c")
        with connect(sender_db) as conn:
            # Writers keep committing after the snapshot is taken, before tables are read.
            ex = extract_complete(conn, staged, on_snapshot=lambda _id: wait_for_commits(len(commits) + 5))
    finally:
        stop.set()
        thread.join()
    from arb_pipeline.package.reader import iter_table_lines as lines

    buses = {int(line.split(b"\t")[0]) for line in lines(staged.path(f"tables/{P}busv2.copy.zst"))}
    assigned = [int(line.split(b"\t")[2]) for line in lines(staged.path(f"tables/{P}busassignment.copy.zst"))]
    assert 2 < len(assigned) < len(commits) + 2  # later commits are not in the snapshot
    assert set(assigned) <= buses
    assert len(buses) == len(assigned)  # every bus came with its assignment in the same transaction
    entry = next(f for f in ex.files if f.table == f"{P}busv2")
    assert entry.rows == len(buses) and entry.format == "copy-text"
