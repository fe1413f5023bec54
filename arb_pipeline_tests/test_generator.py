"""The workload generator writes TranSapp's patterns: updated events, bulk updates, deletes,
late commits, clock skew, images, client JSON; deterministically from a seed."""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from arb_pipeline.cli import generate as generator_cli
from arb_pipeline.dev.generator import (
    GeneratorError,
    Vote,
    Workload,
    build_event_window,
    build_scale,
    database_size,
    seed_reference,
)
from arb_pipeline.errors import ArbError
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.postgres import fresh_db

SMALL = 0.005  # reference volumes: ~56 stops, 4 services, 15 buses, 5 users
REFERENCE_TABLES = (
    "gtfs",
    "busstop",
    "service",
    "servicesbybusstop",
    "servicestopdistance",
    "route",
    "event",
    "busv2",
    "busassignment",
    "level",
    "scoreevent",
    "transappuser",
)


def T(model: str) -> str:
    return f'"AndroidRequests_{model}"'


def _seed(dsn: str, seed: int = 11) -> str:
    with connect(dsn) as conn:
        seed_reference(conn, seed, scale=SMALL)
    return dsn


@pytest.fixture
def seeded(sender_db) -> str:
    return _seed(sender_db)


@pytest.fixture
def workload(seeded, tmp_path):
    with Workload(seeded, tmp_path / "media", seed=3) as w:
        yield w


def _rows(dsn: str, model: str) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(f"SELECT * FROM {T(model)} ORDER BY id").fetchall()


def _one(dsn: str, sql: str, params=()) -> tuple:
    with connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()


def _bus_vote(
    w: Workload, *, confirm: bool = True, target: int | None = None, event_id: str = "evn00000"
) -> Vote:
    return Vote(
        "bus",
        target or w.assignments[0]["id"],
        event_id,
        w.events[event_id][1],
        confirm,
        w.phones[0][1],
        w.phones[0][0],
        (-70.6, -33.45),
        None,
    )


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_same_reference_rows_and_another_seed_differs(pg_cluster, sender_db):
    twin, other = fresh_db(pg_cluster, "sender"), fresh_db(pg_cluster, "sender")
    _seed(sender_db, 5), _seed(twin, 5), _seed(other, 6)
    for model in REFERENCE_TABLES:
        rows = _rows(sender_db, model)
        assert rows, model
        assert rows == _rows(twin, model), model
    assert _rows(sender_db, "busstop") != _rows(other, "busstop")


def test_reference_data_looks_like_transapp(seeded):
    stops = _rows(seeded, "busstop")
    assert all(re.fullmatch(r"P[A-J]\d{1,4}", s[3]) for s in stops)
    assert all(-70.85 <= s[1] <= -70.45 and -33.65 <= s[2] <= -33.30 for s in stops)
    events = _rows(seeded, "event")
    assert [e[0] for e in events] == [f"evn{i:05d}" for i in range(35)]
    assert {e[6] for e in events} == {"bus", "busStop"}
    plates = {b[1] for b in _rows(seeded, "busv2")}
    assert all(re.fullmatch(r"[A-Z]{4}\d{2}|[A-Z]{2}\d{4}|DUMMYLPT", p) for p in plates)
    assert "506" in {s[1] for s in _rows(seeded, "service")}
    users = _rows(seeded, "transappuser")
    assert all("@" in u[3] and u[8] for u in users)  # email and sessionToken are filled


def test_seeding_a_version_twice_is_a_clear_error(seeded):
    with connect(seeded) as conn, pytest.raises(GeneratorError, match="already seeded"):
        seed_reference(conn, 11, scale=SMALL)


def test_workload_on_an_unseeded_database_says_to_seed_first(sender_db, tmp_path):
    with pytest.raises(GeneratorError, match="arb generate seed"):
        Workload(sender_db, tmp_path, seed=1)


def test_same_seed_replays_the_same_operations(pg_cluster, seeded, tmp_path):
    twin = _seed(fresh_db(pg_cluster, "sender"))
    with Workload(seeded, tmp_path / "a", seed=9) as a, Workload(twin, tmp_path / "b", seed=9) as b:
        ops_a = [a.step() for _ in range(60)]
        ops_b = [b.step() for _ in range(60)]
    assert ops_a == ops_b
    assert len({op.name for op in ops_a}) >= 5

    def images(folder):  # same report ids, extensions and bytes; the time in the name is the clock's
        return sorted((p.name.split("_")[0], p.suffix, p.read_bytes()) for p in folder.iterdir())

    assert images(tmp_path / "a") == images(tmp_path / "b") != []
    with Workload(seeded, tmp_path / "c", seed=10) as c:
        assert [c.draw() for _ in range(60)] != ops_a


# -- vote write pattern ---------------------------------------------------------------------


def test_a_vote_on_a_live_event_updates_it_and_moves_its_timestamp(workload, seeded):
    first = workload.vote(_bus_vote(workload))
    workload.clock_offset = timedelta(minutes=3)
    second = workload.vote(_bus_vote(workload, confirm=False))
    assert first.created and not second.created
    assert second.event_row_id == first.event_row_id
    ts, created, expire, confirm, decline = _one(
        seeded,
        f'SELECT "timeStamp", "timeCreation", "expireTime", "eventConfirm", "eventDecline" '
        f"FROM {T('eventforbusv2')} WHERE id = %s",
        (first.event_row_id,),
    )
    lifespam = timedelta(minutes=workload.events["evn00000"][1])
    assert created == first.time_stamp and ts == second.time_stamp > created
    assert expire == first.time_stamp + 2 * lifespam
    assert (confirm, decline) == (1, 1)
    stats = [
        r[0]
        for r in _rows_where(
            seeded,
            "stadisticdatafromregistrationbus",
            '"reportOfEvent_id"',
            first.event_row_id,
            '"timeStamp"',
        )
    ]
    assert stats == [first.time_stamp, second.time_stamp]


def _rows_where(dsn, model, col, value, what="*"):
    with connect(dsn) as conn:
        return conn.execute(
            f"SELECT {what} FROM {T(model)} WHERE {col} = %s ORDER BY id", (value,)
        ).fetchall()


def test_a_vote_on_an_expired_or_broken_event_creates_a_new_one(workload):
    first = workload.vote(_bus_vote(workload))
    workload.clock_offset = timedelta(days=30)  # past any bus event's lifespam
    assert workload.vote(_bus_vote(workload)).event_row_id != first.event_row_id


def test_traffic_keeps_each_events_timestamp_at_its_newest_stat(workload, seeded):
    for _ in range(150):
        workload.step()
    for events, stats in (
        ("eventforbusv2", "stadisticdatafromregistrationbus"),
        ("eventforbusstop", "stadisticdatafromregistrationbusstop"),
    ):
        bad, updated = _one(
            seeded,
            f'SELECT count(*) FILTER (WHERE e."timeStamp" <> s.newest), '
            f'count(*) FILTER (WHERE e."timeStamp" > e."timeCreation") FROM {T(events)} e '
            f'JOIN (SELECT "reportOfEvent_id" AS id, max("timeStamp") AS newest FROM {T(stats)} '
            f"GROUP BY 1) s USING (id)",
        )
        assert bad == 0 and updated > 0, events


def test_bulk_broken_update_leaves_timestamp_alone(workload, seeded):
    made = workload.vote(_bus_vote(workload))
    workload.vote(_bus_vote(workload, confirm=False))
    last = workload.vote(_bus_vote(workload, confirm=False))
    assert workload.mark_declined_broken() >= 1
    broken, kind, ts = _one(
        seeded,
        f'SELECT broken, "brokenType", "timeStamp" FROM {T("eventforbusv2")} WHERE id = %s',
        (made.event_row_id,),
    )
    assert (broken, kind, ts) == (True, "decline", last.time_stamp)
    assert workload.vote(_bus_vote(workload)).event_row_id != made.event_row_id  # broken is not live


# -- deletes, late commits, clock skew ---------------------------------------------------------


def _trip(w: Workload) -> int:
    params = w._draw("trip")
    return w.trip(**params)


def test_purge_deletes_active_tokens_older_than_ten_minutes_and_keeps_newer(workload, seeded):
    workload.clock_offset = timedelta(minutes=-11)
    old = _trip(workload)
    workload.clock_offset = timedelta(minutes=-9)
    recent = _trip(workload)
    workload.clock_offset = timedelta(0)
    assert workload.purge_active_tokens() == 1
    assert [r[2] for r in _rows(seeded, "activetoken")] == [recent]
    assert {r[0] for r in _rows(seeded, "token")} == {old, recent}  # the trip itself stays


def test_a_late_vote_is_invisible_until_it_commits_then_has_its_old_timestamp(workload, seeded):
    late = workload.late_vote("busStop")
    for _ in range(10):  # the rest of the traffic is not blocked by the open transaction
        workload.step()
    query = f'SELECT "timeStamp" FROM {T("eventforbusstop")} WHERE id = %s'
    assert _one(seeded, query, (late.result.event_row_id,)) is None
    time.sleep(0.3)
    late.commit()
    committed_at = datetime.now(UTC)
    assert _one(seeded, query, (late.result.event_row_id,)) == (late.time_stamp,)
    assert late.time_stamp <= committed_at - timedelta(seconds=0.3)
    stat = _rows_where(
        seeded,
        "stadisticdatafromregistrationbusstop",
        '"reportOfEvent_id"',
        late.result.event_row_id,
        '"timeStamp"',
    )
    assert stat == [(late.time_stamp,)]


def test_a_late_vote_rolls_back_when_its_block_fails(workload, seeded):
    with pytest.raises(RuntimeError), workload.late_vote("bus") as late:
        raise RuntimeError("request failed")
    assert (
        _one(seeded, f"SELECT 1 FROM {T('eventforbusv2')} WHERE id = %s", (late.result.event_row_id,)) is None
    )


def test_clock_offset_shifts_every_written_timestamp(workload, seeded):
    workload.clock_offset = timedelta(hours=2)
    workload.weights = {
        name: 1 for name in ("vote_bus", "vote_stop", "report", "trip", "device_position", "nearby_buses")
    }
    for _ in range(40):
        workload.step()
    expected = datetime.now(UTC) + timedelta(hours=2)
    for model in (
        "eventforbusv2",
        "eventforbusstop",
        "stadisticdatafromregistrationbus",
        "report",
        "poseintrajectoryoftoken",
        "activetoken",
        "devicepositionintime",
        "nearbybuseslog",
    ):
        low, high = _one(seeded, f'SELECT min("timeStamp"), max("timeStamp") FROM {T(model)}')
        assert high is not None, model
        assert expected - timedelta(minutes=5) < low <= high <= expected, model


# -- reports and images ---------------------------------------------------------------------


def test_reports_carry_images_with_mixed_case_extensions_and_client_json(seeded, tmp_path):
    media = tmp_path / "media"
    with Workload(seeded, media, seed=4, weights={"report": 1}) as w:
        for _ in range(60):
            w.step()
    reports = _rows(seeded, "report")
    with_image = [r for r in reports if r[3]]
    assert 10 <= len(with_image) <= 40
    extensions = set()
    for rid, _, _, name, _, _ in with_image:
        m = re.fullmatch(rf"{rid}_(\d\d-\d\d-\d\d_\d{{4}}-\d\d-\d\d)\.(jpeg|jpg|png)", name, re.IGNORECASE)
        assert m, name
        data = (media / name).read_bytes()
        assert data.startswith(b"\x89PNG" if m.group(2).lower() == "png" else b"\xff\xd8\xff")
        extensions.add(m.group(2))
    assert any(e != e.lower() for e in extensions) and any(e == e.lower() for e in extensions)
    assert sorted(p.name for p in media.iterdir()) == sorted(r[3] for r in with_image)
    kinds = set()
    for r in reports:
        info = json.loads(r[4])
        assert set(info["locationUser"]) == {"latitude", "longitude"}
        kind = ({"bus", "bus_stop", "busStop"} & set(info)).pop()
        kinds.add(kind)
        if kind == "bus":
            assert set(info["bus"]) == {"licensePlate", "machineId", "service", "latitude", "longitude"}
    assert kinds == {"bus", "bus_stop", "busStop"}
    messages = [r[2] for r in reports]
    assert any("\n" in m for m in messages) and any("\\" in m for m in messages)
    assert any(not m.isascii() for m in messages)


# -- bulk volume ----------------------------------------------------------------------------


def test_scale_reaches_roughly_the_requested_size(seeded):
    with connect(seeded) as conn:
        result = build_scale(conn, 0.02, batch_poses=50_000)
        size = database_size(conn)
    assert 0.02e9 <= size <= 0.02e9 * 1.25
    assert result.rows["poseintrajectoryoftoken"] > 0 and result.rows["eventforbusstop"] > 0
    bad = _one(
        seeded,
        f'SELECT count(*) FROM {T("eventforbusv2")} e JOIN (SELECT "reportOfEvent_id" AS id, '
        f'max("timeStamp") AS newest, min("timeStamp") AS oldest '
        f"FROM {T('stadisticdatafromregistrationbus')} GROUP BY 1) s USING (id) "
        f'WHERE e."timeStamp" <> s.newest OR e."timeCreation" > s.oldest',
    )
    assert bad == (0,)
    assert _one(seeded, f'SELECT max("timeStamp") < now() FROM {T("poseintrajectoryoftoken")}') == (True,)


def test_event_window_puts_its_rows_inside_one_window(seeded):
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with connect(seeded) as conn:
        written = build_event_window(conn, start, rows=2000)
    assert sum(written.values()) == 2000
    for model in written:
        low, high, n = _one(seeded, f'SELECT min("timeStamp"), max("timeStamp"), count(*) FROM {T(model)}')
        assert start <= low and high < start + timedelta(minutes=5) and n == written[model]
    earlier = _one(seeded, f'SELECT count(*) FROM {T("eventforbusv2")} WHERE "timeCreation" < %s', (start,))[
        0
    ]
    assert 0 < earlier < written["eventforbusv2"]


# -- command line ---------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    generator_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", *argv])
    return args.func(args)


def test_cli_seeds_runs_traffic_with_a_late_commit_and_scales(sender_db, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARB_SENDER_DSN", sender_db)
    media = str(tmp_path / "media")
    assert (
        _cli("seed", "--dsn", sender_db, "--media-dir", media, "--seed", "2", "--reference-scale", str(SMALL))
        == 0
    )
    assert (
        _cli(
            "traffic",
            "--dsn",
            sender_db,
            "--media-dir",
            media,
            "--seed",
            "2",
            "--rate",
            "50",
            "--duration",
            "0.5",
            "--clock-offset-seconds",
            "-30",
            "--late-commit-minutes",
            "0.01",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "seeded v1.3" in out and "late_vote 1" in out
    assert _cli("window", "--dsn", sender_db, "--start", "2024-05-01T12:00:00+00:00", "--rows", "400") == 0
    with pytest.raises(ArbError, match="ISO 8601"):
        _cli("window", "--dsn", sender_db, "--start", "yesterday")
    monkeypatch.delenv("ARB_SENDER_DSN")
    parser = argparse.ArgumentParser()
    generator_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "scale", "--gigabytes", "0.1"])
    with pytest.raises(ArbError, match="ARB_SENDER_DSN"):
        args.func(args)
