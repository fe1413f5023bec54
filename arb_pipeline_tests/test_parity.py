"""The parity check: equal data is OK, every kind of drift is named, and the digest is canonical."""

from __future__ import annotations

import argparse
import hashlib
import json

import psycopg
import pytest

from arb_pipeline.cli.parity import register
from arb_pipeline.errors import ConfigError, SchemaError
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import (
    CHANGED,
    EXTRA,
    MISSING,
    compare_tables,
    replicated_tables,
    shared_columns,
)
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.pg.rowhash import (
    LOCAL_HASH_ALGORITHM,
    canonical_text_settings,
    local_fingerprint,
    table_fingerprint,
)
from arb_pipeline_tests.support.postgres import fresh_db

GTFS = "AndroidRequests_gtfs"
BUSSTOP = "AndroidRequests_busstop"
EVENT = "AndroidRequests_event"
BUSV2 = "AndroidRequests_busv2"
ASSIGNMENT = "AndroidRequests_busassignment"
EVENTBUS = "AndroidRequests_eventforbusv2"
LEVEL = "AndroidRequests_level"
USER = "AndroidRequests_transappuser"

# Values chosen to trip text rendering: microseconds and offsets, floats that need all
# 17 digits, unicode, newlines, tabs, backslashes, quotes, commas, parentheses, NULLs.
ROWS = {
    GTFS: (
        ["id", "version", "timeCreation"],
        [
            (1, "v1.0", "2024-01-01 00:00:00.000001+00"),
        ],
    ),
    BUSSTOP: (
        ["id", "longitude", "latitude", "code", "name", "gtfs_id"],
        [
            (1, -70.6483921, -33.4378305, "PA433", "Estación Ñuñoa\nandén 2", 1),
            (2, 0.30000000000000004, -1e-300, "PA1", 'back\\slash, "quoted" (paren)', 1),
            (3, 1.5, 2.25, "PA2", "", 1),
        ],
    ),
    EVENT: (
        ["id", "name", "description", "lifespam", "category", "origin", "eventType"],
        [
            ("evn00001", "Desvío", "Bus con desvío\ttabs", 30, "bus", "i", "bus"),
            ("evn00002", "Lleno", None, 30, "bus", "i", "bus"),
            ("Zeta0001", "Zeta", "", 15, "bus", "o", "bus"),
            ("alfa0001", "alfa", "minúsculas", 15, "stop", "o", "stop"),
            ("_und0001", "und", "guion_bajo", 15, "stop", "o", "stop"),
        ],
    ),
    BUSV2: (
        ["id", "registrationPlate", "uuid"],
        [
            (1, "AB1234", "5f2b8a4e-8c51-4c3e-9a1b-0d5e7c1f2a3b"),
        ],
    ),
    ASSIGNMENT: (
        ["id", "service", "uuid_id"],
        [
            (1, "506", 1),
        ],
    ),
    EVENTBUS: (
        [
            "id",
            "timeStamp",
            "timeCreation",
            "expireTime",
            "event_id",
            "eventConfirm",
            "eventDecline",
            "phoneId",
            "broken",
            "brokenType",
            "busassignment_id",
        ],
        [
            (
                1,
                "2024-03-05 12:34:56.123456+00",
                "2024-03-05 09:34:56.999999-03",
                None,
                "evn00001",
                1,
                0,
                "0a1b2c3d-0000-4000-8000-000000000001",
                False,
                None,
                1,
            ),
            (
                2,
                "2024-03-05 12:35:00.000001+00",
                "2024-03-05 12:35:00+00",
                "2024-03-05 13:05:00.5+00",
                "evn00002",
                3,
                1,
                "0a1b2c3d-0000-4000-8000-000000000002",
                True,
                "motor\\falla",
                1,
            ),
            (
                3,
                "2024-12-31 23:59:59.999999+00",
                "2025-01-01 00:00:00+00",
                None,
                "evn00001",
                1,
                2,
                "0a1b2c3d-0000-4000-8000-000000000003",
                False,
                None,
                1,
            ),
        ],
    ),
    LEVEL: (
        ["id", "name", "minScore", "maxScore", "position"],
        [
            (1, "Novato", 0.0, 100.5, 1),
        ],
    ),
    USER: (
        [
            "id",
            "userId",
            "name",
            "phoneId",
            "accountType",
            "globalScore",
            "level_id",
            "nickname",
            "photoURI",
            "externalId",
            "globalPosition",
            "timeCreation",
        ],
        [
            (
                1,
                "fb-1",
                "Ana María",
                "0a1b2c3d-0000-4000-8000-0000000000aa",
                "FACEBOOK",
                12.5,
                1,
                "anita",
                "http://example.com/a.png",
                "0a1b2c3d-0000-4000-8000-0000000000ab",
                3,
                "2024-02-02 10:00:00.5+00",
            ),
        ],
    ),
}
PERSONAL = {USER: (["email", "sessionToken"], [("ana@example.com", "0a1b2c3d-0000-4000-8000-0000000000ac")])}


def _fill(dsn: str, *, personal: bool, reverse: bool = False) -> None:
    """Insert ROWS (the sender also gets the personal columns); ``reverse`` flips the row order."""
    with connect(dsn) as conn:
        for table, (columns, rows) in ROWS.items():
            if personal and table in PERSONAL:
                extra_cols, extra_rows = PERSONAL[table]
                columns = columns + extra_cols
                rows = [r + e for r, e in zip(rows, extra_rows, strict=True)]
            if reverse:
                rows = rows[::-1]
            cols = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(["%s"] * len(columns))
            with conn.cursor() as cur:
                cur.executemany(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', rows)


def _run(dsn: str, *statements: str) -> None:
    with connect(dsn) as conn:
        for sql in statements:
            conn.execute(sql)


@pytest.fixture(scope="module")
def _pair(pg_cluster):
    """One sender and one receiver database for the whole module: creating a database
    costs ~0.35 s here, emptying and refilling one ~0.05 s."""
    return fresh_db(pg_cluster, "sender"), fresh_db(pg_cluster, "receiver")


def _empty(dsn: str) -> None:
    with connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> "
                "'arb_schema_migration'"
            )
        ]
        conn.execute("TRUNCATE " + ", ".join(quote_ident(t) for t in tables) + " RESTART IDENTITY")


@pytest.fixture
def dbs(_pair):
    """Sender and receiver holding the same rows, inserted in opposite orders."""
    sender, receiver = _pair
    _empty(sender)
    _empty(receiver)
    _fill(sender, personal=True)
    _fill(receiver, personal=False, reverse=True)
    return sender, receiver


# --------------------------------------------------------------------------- tables


def test_identical_data_is_ok_on_every_replicated_table(dbs):
    sender, receiver = dbs
    report = compare_tables(sender, receiver)
    assert report.ok, report.format()
    names = [t.table for t in report.tables]
    assert len(names) == 23 and all(n.startswith("AndroidRequests_") for n in names)
    assert "AndroidRequests_timeperiod" not in names  # receiver-only table
    assert report.table(BUSSTOP).sender.rows == 3
    assert f"{EVENTBUS}: OK (3 rows)" in report.format().splitlines()
    assert report.format().splitlines()[-1].startswith("parity OK: 23 tables equal")
    # the sender's personal columns aren't compared, and aren't a difference
    user = report.table(USER)
    assert user.ok and user.sender_only_columns == ("email", "sessionToken") and "email" not in user.columns
    json.dumps(report.to_dict())


def test_shared_columns_and_key_come_from_the_catalog(dbs):
    sender, receiver = dbs
    with connect(sender) as s, connect(receiver) as r:
        shared = shared_columns(s, r, USER)
        assert shared.columns[:3] == ("id", "userId", "name")
        assert not {"email", "sessionToken"} & set(shared.columns)
        assert shared.key_columns == ("id",)
        bus = shared_columns(s, r, EVENTBUS)
        assert "transformed" not in bus.columns and "transformed" in bus.receiver_only
        assert replicated_tables(s, r, ["busstop", EVENT]) == [BUSSTOP, EVENT]
        with pytest.raises(SchemaError, match="AndroidRequests_timeperiod is not on the sender"):
            replicated_tables(s, r, ["AndroidRequests_timeperiod"])


def test_changed_values_are_drift_naming_table_key_and_column(dbs):
    sender, receiver = dbs
    _run(
        receiver,
        # a decomposed accent: looks the same, isn't
        f"UPDATE \"{BUSSTOP}\" SET name = 'Estacio' || U&'\\0301' || 'n Ñuñoa' || E'\\n' || 'andén 2' "
        "WHERE id = 1",
        f'UPDATE "{BUSSTOP}" SET longitude = 0.3 WHERE id = 2',  # was 0.30000000000000004
        f'UPDATE "{EVENTBUS}" SET "timeStamp" = "timeStamp" + interval \'1 microsecond\' WHERE id = 3',
        f'UPDATE "{EVENTBUS}" SET "brokenType" = \'\' WHERE id = 1',  # NULL on the sender
        f"UPDATE \"{EVENT}\" SET description = NULL WHERE id = 'Zeta0001'",  # '' on the sender
        f'UPDATE "{USER}" SET "globalScore" = 12.500000000000002, nickname = \'ana\'',
    )
    report = compare_tables(sender, receiver)
    assert not report.ok
    assert report.drifted == [BUSSTOP, EVENT, EVENTBUS, USER]
    expected = {
        BUSSTOP: [({"id": 1}, ("name",)), ({"id": 2}, ("longitude",))],
        EVENT: [({"id": "Zeta0001"}, ("description",))],
        EVENTBUS: [({"id": 1}, ("brokenType",)), ({"id": 3}, ("timeStamp",))],
        USER: [({"id": 1}, ("globalScore", "nickname"))],
    }
    for table, diffs in expected.items():
        result = report.table(table)
        assert result.counts == {MISSING: 0, EXTRA: 0, CHANGED: len(diffs)}, table
        assert [(d.kind, d.key, d.columns) for d in result.diffs] == [(CHANGED, k, c) for k, c in diffs]
    lines = {line.split(":")[0]: line for line in report.format().splitlines()}
    assert lines[EVENTBUS].startswith(f"{EVENTBUS}: DRIFT sender 3 rows, receiver 3 rows")
    assert lines[EVENTBUS].endswith(
        "2 changed; first keys: id=1 changed (brokenType); id=3 changed (timeStamp)"
    )
    assert "id='Zeta0001' changed (description)" in lines[EVENT]
    assert "id=1 changed (globalScore, nickname)" in lines[USER]
    assert report.format().splitlines()[-1].startswith("parity DRIFT: 4 of 23 tables differ")


def test_a_row_missing_on_the_receiver_is_named(dbs):
    sender, receiver = dbs
    _run(receiver, f'DELETE FROM "{EVENTBUS}" WHERE id = 2')
    report = compare_tables(sender, receiver)
    result = report.table(EVENTBUS)
    assert report.drifted == [EVENTBUS]
    assert (result.sender.rows, result.receiver.rows) == (3, 2)
    assert [(d.kind, d.key) for d in result.diffs] == [(MISSING, {"id": 2})]
    assert "id=2 missing on receiver" in report.format()


def test_an_extra_row_on_the_receiver_is_named_with_text_keys_in_any_collation(dbs):
    sender, receiver = dbs
    _run(receiver, f"INSERT INTO \"{EVENT}\" VALUES ('Mid00001', 'x', NULL, 1, 'bus', 'i', 'bus')")
    report = compare_tables(sender, receiver)
    result = report.table(EVENT)
    assert report.drifted == [EVENT]
    # mixed-case and '_' keys sort differently under en_US and C: still exactly one difference
    assert result.counts == {MISSING: 0, EXTRA: 1, CHANGED: 0}
    assert [(d.kind, d.key) for d in result.diffs] == [(EXTRA, {"id": "Mid00001"})]
    assert "id='Mid00001' extra on receiver" in report.format()


def test_max_diffs_bounds_the_named_keys_not_the_counts(dbs):
    sender, receiver = dbs
    _run(
        receiver,
        f'DELETE FROM "{EVENTBUS}" WHERE id IN (1, 3)',
        f'UPDATE "{EVENTBUS}" SET "eventConfirm" = 9',
    )
    result = compare_tables(sender, receiver, tables=[EVENTBUS], max_diffs=1).table(EVENTBUS)
    assert result.counts == {MISSING: 2, EXTRA: 0, CHANGED: 1}
    assert [(d.kind, d.key) for d in result.diffs] == [(MISSING, {"id": 1})]


def test_receiver_only_columns_and_tables_are_not_drift(dbs):
    sender, receiver = dbs
    _run(
        receiver,
        f"UPDATE \"{EVENTBUS}\" SET transformed = true, direction = 'I', \"busStop1\" = 'PA433'",
        f'UPDATE "{BUSV2}" SET transformed = true',
        'INSERT INTO "AndroidRequests_halfhourperiod" (name, initial_time, end_time) '
        "VALUES ('00:00 - 00:29', '00:00', '00:29:59')",
    )
    report = compare_tables(sender, receiver)
    assert report.ok, report.format()


def test_explicit_table_list_compares_only_those(dbs):
    sender, receiver = dbs
    _run(receiver, f'DELETE FROM "{EVENTBUS}" WHERE id = 2')
    report = compare_tables(sender, receiver, tables=["busstop", EVENT])
    assert [t.table for t in report.tables] == [BUSSTOP, EVENT] and report.ok


# --------------------------------------------------------------------------- the digest itself


def _record_text(values) -> str:
    """PostgreSQL's record_out, for the reference digest below."""

    def element(v):
        if v is None:
            return ""
        if v == "" or any(ch in '"\\(),' or ch in " \t\n\r\v\f" for ch in v):
            return '"' + v.replace("\\", "\\\\").replace('"', '""') + '"'
        return v

    return "(" + ",".join(element(v) for v in values) + ")"


def _reference_digest(rows) -> str:
    total = sum(
        int.from_bytes(hashlib.md5(_record_text(r).encode()).digest()[:8], "big", signed=True) for r in rows
    )
    return f"{total % 2**64:016x}"


def test_digest_is_the_documented_sum_of_row_md5s(dbs):
    sender, _ = dbs
    with connect(sender) as conn:
        fp = table_fingerprint(conn, EVENT, ["id", "description", "category"], ["id"])
    rows = [(r[0], r[2], r[4]) for r in ROWS[EVENT][1]]
    assert fp.rows == 5
    assert fp.digest == _reference_digest(rows)


def test_duplicate_rows_do_not_cancel(dbs):
    sender, _ = dbs
    _empty(sender)
    with connect(sender) as conn:

        def digest():
            return table_fingerprint(conn, EVENT, ["category"]).digest

        columns, rows = ROWS[EVENT]
        with conn.cursor() as cur:
            cur.executemany(f'INSERT INTO "{EVENT}" VALUES ({", ".join(["%s"] * len(columns))})', rows)
        bus3_stop2 = digest()  # three 'bus', two 'stop'
        conn.execute(f"DELETE FROM \"{EVENT}\" WHERE id IN ('alfa0001', '_und0001')")
        bus3 = digest()
        conn.execute(f"DELETE FROM \"{EVENT}\" WHERE id = 'Zeta0001'")
        bus2 = digest()
        conn.execute(f'DELETE FROM "{EVENT}"')
        empty = digest()
    # with xor, equal pairs would vanish: bus3_stop2 == bus3 and bus2 == empty
    assert empty == "0" * 16
    assert len({bus3_stop2, bus3, bus2, empty}) == 4
    assert bus2 == _reference_digest([("bus",), ("bus",)])


def test_fingerprint_ignores_row_order_and_session_settings(dbs):
    sender, receiver = dbs
    # move the receiver's rows around physically too
    _run(
        receiver,
        f'UPDATE "{EVENTBUS}" SET broken = broken WHERE id = 2',
        f'UPDATE "{BUSSTOP}" SET code = code',
    )
    odd_session = (
        "-c TimeZone=America/Santiago -c DateStyle=SQL,DMY -c extra_float_digits=0 "
        "-c IntervalStyle=sql_standard"
    )
    with connect(sender) as s, connect(receiver) as r, psycopg.connect(receiver, options=odd_session) as odd:
        for table in ROWS:
            shared = shared_columns(s, r, table)
            fps = {table_fingerprint(c, table, shared.columns, shared.key_columns) for c in (s, r, odd)}
            assert len(fps) == 1, (table, fps)
        # the caller's session settings are put back
        assert odd.execute("SHOW TimeZone").fetchone()[0] == "America/Santiago"
        assert odd.execute("SHOW extra_float_digits").fetchone()[0] == "0"


def test_the_receiver_local_digest_ignores_order_and_sees_every_value(_pair):
    """The load's digest of a staged file and the check's of the table (hash_record_extended;
    types without a hash function, json and point here, are hashed as text)."""
    types = ["integer", "double precision", "timestamp with time zone", "text", "json", "point"]
    columns = ["i", "f", "ts", "t", "j", "p"]
    rows = [
        (1, 0.1, "2024-01-01 00:00:00+00", "a", '{"k": 1}', "(1,2)"),
        (2, None, "2024-01-01 00:00:01+00", "", None, None),
        (2, None, "2024-01-01 00:00:01+00", "", None, None),  # duplicates must not cancel
    ]
    with connect(_pair[1]) as conn, canonical_text_settings(conn):
        digests = []
        for name, order, change in [
            ("a", rows, None),
            ("b", rows[::-1], None),
            ("c", rows, ("f", "0.1000001")),
            ("d", rows, ("j", '{"k": 2}')),
            ("e", rows[:2], None),
        ]:
            cols = ", ".join(f"{c} {t}" for c, t in zip(columns, types, strict=True))
            conn.execute(f"CREATE TEMP TABLE {name} ({cols})")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s)", order)
            if change:
                conn.execute(f"UPDATE {name} SET {change[0]} = %s WHERE i = 1", (change[1],))
            digests.append(local_fingerprint(conn, name, columns, types))
    a, b, c, d, e = digests
    assert a == b and a.rows == 3 and a.algorithm == LOCAL_HASH_ALGORITHM
    assert len({a.digest, c.digest, d.digest, e.digest}) == 4


def test_fingerprint_errors_name_the_table(_pair):
    with connect(_pair[0]) as conn:
        with pytest.raises(SchemaError, match="AndroidRequests_nope"):
            table_fingerprint(conn, "AndroidRequests_nope", ["id"])


# --------------------------------------------------------------------------- media


@pytest.fixture
def media(tmp_path):
    sender, receiver = tmp_path / "sender", tmp_path / "receiver"
    for root in (sender, receiver):
        (root / "reports" / "2024").mkdir(parents=True)
        (root / "reports" / "2024" / "a.jpg").write_bytes(b"\xff\xd8 image a")
        (root / "reports" / "foto ñ.png").write_bytes(b"png bytes")
        (root / "top.txt").write_bytes(b"top")
    return sender, receiver


def test_identical_media_is_ok(media):
    result = compare_media(*media)
    assert result.ok and result.sender_files == 3
    assert result.format() == "media: OK (3 files)"


def test_changed_missing_and_extra_media_files_are_named(media):
    sender, receiver = media
    (receiver / "reports" / "2024" / "a.jpg").write_bytes(b"\xff\xd8 image b")  # same size, other bytes
    (receiver / "reports" / "foto ñ.png").unlink()
    (receiver / "stray.bin").write_bytes(b"?")
    result = compare_media(sender, receiver)
    assert not result.ok
    assert result.changed == ["reports/2024/a.jpg"]
    assert result.missing == ["reports/foto ñ.png"]
    assert result.extra == ["stray.bin"]
    assert "reports/foto ñ.png missing on receiver" in result.format()


def test_a_missing_media_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="media folder .*nowhere does not exist"):
        compare_media(tmp_path / "nowhere", tmp_path)


# --------------------------------------------------------------------------- command line


def _parity(argv):
    parser = argparse.ArgumentParser(prog="arb")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["parity", *argv])
    return args.func(args)


def test_cli_exit_codes(dbs, media, capsys):
    sender, receiver = dbs
    base = ["--sender-dsn", sender, "--receiver-dsn", receiver]
    assert _parity(base + ["--sender-media", str(media[0]), "--receiver-media", str(media[1])]) == 0
    assert "parity OK" in capsys.readouterr().out
    (media[1] / "top.txt").unlink()
    assert _parity(base + ["--sender-media", str(media[0]), "--receiver-media", str(media[1])]) == 1
    assert "top.txt missing on receiver" in capsys.readouterr().out
    _run(receiver, f'DELETE FROM "{EVENTBUS}" WHERE id = 2')
    assert _parity(base + ["--table", EVENTBUS, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["tables"][0]["diffs"] == [{"kind": MISSING, "key": {"id": 2}}]


def test_cli_takes_dsns_from_the_environment_and_checks_settings(dbs, monkeypatch, capsys):
    sender, receiver = dbs
    monkeypatch.setenv("ARB_SENDER_DSN", sender)
    monkeypatch.setenv("ARB_RECEIVER_DSN", receiver)
    assert _parity(["--table", GTFS]) == 0
    assert f"{GTFS}: OK (1 rows)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--receiver-media"):
        _parity(["--sender-media", "/tmp"])
    monkeypatch.delenv("ARB_RECEIVER_DSN")
    with pytest.raises(ConfigError, match="ARB_RECEIVER_DSN"):
        _parity([])


def test_arb_main_parity_exit_codes(dbs, capsys):
    from arb_pipeline.cli import main as cli

    try:
        cli.build_parser()
    except ImportError as exc:
        pytest.skip(f"another arb command module isn't written yet: {exc}")
    sender, receiver = dbs
    assert cli.main(["parity", "--sender-dsn", sender, "--receiver-dsn", receiver]) == 0
    _run(receiver, f"UPDATE \"{BUSSTOP}\" SET code = 'XX' WHERE id = 3")
    assert cli.main(["parity", "--sender-dsn", sender, "--receiver-dsn", receiver]) == 1
    assert cli.main(["parity", "--sender-dsn", sender, "--receiver-dsn", receiver, "--table", "nope"]) == 2
    assert "table nope is not on the sender" in capsys.readouterr().err
