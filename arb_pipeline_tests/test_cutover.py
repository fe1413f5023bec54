"""Cutover: the pipeline takes over a TranSapp/TranSappViz pair it did not create (docs/cutover.md).

Both databases are built from Django-style DDL written independently of the project's
migrations (support/django_ddl/); the receiver has TranSappViz's own objects as its Django +
GeoDjango migrate makes them (PostGIS, the real zoning). The sender has years of app rows;
the receiver holds what the old tool copied, what TranSappViz's transform derived from it
(periods, zones, nearest stops, reportinfo rows, plates reformatted in place), rows the
sender has purged since, and sequences advanced past its own ids. Then, as the runbook says:
`arb migrate` on the sender (its tables unchanged) and its read-only role; on the receiver
the dry run's compatibility report, the fixes it names, `arb migrate` and the role script;
the first complete, then partials through the inbox sensor's real tick (one waiting while
the receiver's clock is 3 minutes behind), and a complete deleting a report that has a
reportinfo row behind a NO ACTION key. Shipped rows reach parity (the plates too); the
receiver's history and derived values survive; no sequence moves backwards; no reader ever
sees an empty table; and deploy/sql/rollback.sql leaves both schemas as they were before
`arb migrate`.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.ops.parity import CHANGED, EXTRA, MISSING, compare_tables
from arb_pipeline.ops.zoning import bundled_zoning, import_zoning
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import P, complete_for_yesterday, partial_for
from arb_pipeline_tests.support.existing import (
    TRANSAPP_DDL,
    TRANSAPPVIZ_DDL,
    arb,
    copy_rows,
    django_db,
    rollback,
    schema_dump,
    sequences,
)
from arb_pipeline_tests.support.receiver import Receiver, evaluate
from arb_pipeline_tests.support.roles import make_receiver_role, make_sender_role
from arb_pipeline_tests.support.traffic import BASELINE_OPS, PARTIAL_OPS, traffic_at

UTC = timezone.utc
EV, STAT, POSE = P + "eventforbusv2", P + "stadisticdatafromregistrationbus", P + "poseintrajectoryoftoken"
DERIVED = (P + "eventforbusstop", EV, P + "report")  # the tables with the old receiver's `transformed`
APP_TABLES = '"AndroidRequests_"*'  # a pg_dump -t pattern: quoted for the mixed case
NEVER_EMPTY = (EV, STAT, POSE)  # tables the old receiver's history keeps non-empty
INFO, REPORT = P + "reportinfo", P + "report"
TRANSFORM_SQL = TRANSAPPVIZ_DDL.with_name("transappviz_transform.sql")
_PERIODS = ('"timePeriod_id"', '"halfHourPeriod_id"', "zonification_id")
DERIVED_COLUMNS = {  # TranSappViz's own columns on replicated tables, besides `transformed`
    EV: (*_PERIODS, '"busStop1"', '"busStop2"', "direction"),
    P + "eventforbusstop": _PERIODS,
    P + "busstop": ("point",),
}


def _ids(dsn, table, where="true"):
    with connect(dsn) as conn:
        return {r[0] for r in conn.execute(f'SELECT id FROM "{table}" WHERE {where}')}


def _contents(dsn, tables):
    """Each row of the tables as JSON, by id: what the app holds at one moment."""
    with connect(dsn) as conn:
        return {
            t: dict(conn.execute(f'SELECT id, row_to_json(x)::text FROM "{t}" x').fetchall()) for t in tables
        }


def _old_receiver_fill(sender, receiver):
    """The old receiver: the zoning TranSappViz loaded from the EOD 2012 shapefile, the old
    tool's copy of every app table, then what TranSappViz's transform.py derived from it
    (support/django_ddl/transappviz_transform.sql)."""
    with connect(receiver, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA arb_stage")  # the import's scratch, gone before any dump
        import_zoning(receiver, bundled_zoning())
        conn.execute("DROP SCHEMA arb_stage")
    copy_rows(sender, receiver, list(current_catalog().complete_tables))
    with connect(receiver, autocommit=True) as conn:
        conn.execute(TRANSFORM_SQL.read_text())


def _derived(dsn):
    """TranSappViz's derived values: per table, each row's receiver-only columns by id, and
    the reportinfo rows by report."""
    with connect(dsn) as conn:
        out = {
            t: dict(conn.execute(f'SELECT id, ({", ".join(cols)})::text FROM "{t}"').fetchall())
            for t, cols in DERIVED_COLUMNS.items()
        }
        out[INFO] = dict(conn.execute(f'SELECT report_id, (i.*)::text FROM "{INFO}" i').fetchall())
        return out


def _purge_on_sender(sender, n=3):
    """The app's own cleanup since the copy: its oldest bus events and their votes go."""
    with connect(sender) as conn:
        gone = [r[0] for r in conn.execute(f'SELECT id FROM "{EV}" ORDER BY id LIMIT %s', (n,))]
        votes = {
            r[0] for r in conn.execute(f'SELECT id FROM "{STAT}" WHERE "reportOfEvent_id" = ANY(%s)', (gone,))
        }
        conn.execute(f'DELETE FROM "{STAT}" WHERE "reportOfEvent_id" = ANY(%s)', (gone,))
        conn.execute(f'DELETE FROM "{EV}" WHERE id = ANY(%s)', (gone,))
    return {EV: set(gone), STAT: votes}


def _vote_on_sender(sender, at, n=3):
    """Votes on copied events after the copy: their content changes (the app's UPDATE)."""
    with connect(sender) as conn:
        ids = [r[0] for r in conn.execute(f'SELECT id FROM "{EV}" ORDER BY id DESC LIMIT %s', (n,))]
        conn.execute(
            f'UPDATE "{EV}" SET "eventConfirm" = "eventConfirm" + 1, "timeStamp" = %s WHERE id = ANY(%s)',
            (at, ids),
        )
    return set(ids)


def _new_user_on_sender(sender):
    """A user who signed up after the copy: the sender ships no email or sessionToken for it."""
    with connect(sender) as conn:
        conn.execute(
            f'INSERT INTO "{P}transappuser" ("userId", name, email, "phoneId", "accountType", "globalScore", '
            'level_id, "sessionToken", nickname, "photoURI", "externalId", "globalPosition", "timeCreation") '
            "SELECT 'new-user', 'New User', 'new@example.org', gen_random_uuid(), 'GOOGLE', 0, min(id), "
            f"gen_random_uuid(), 'newbie', '', gen_random_uuid(), 0, now() FROM \"{P}level\""
        )


def _advance_sequences(receiver):
    """The old receiver's sequences stand past every id it holds, some far past."""
    with connect(receiver) as conn:
        for table in current_catalog().complete_tables:
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',)).fetchone()[0]
            if seq:
                conn.execute(f'SELECT setval(%s, (SELECT coalesce(max(id), 0) FROM "{table}") + 500)', (seq,))


NEVER_EMPTY_SQL = """
CREATE FUNCTION arb_test_never_empty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE empty boolean;
BEGIN
    EXECUTE format('SELECT NOT EXISTS (SELECT FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO empty;
    IF empty THEN RAISE EXCEPTION 'a statement left % empty', TG_TABLE_NAME; END IF;
    RETURN NULL;
END $$;
"""


def _refuse_empty_tables(receiver):
    """A statement that leaves one of these tables empty, even inside the load's transaction
    (where MVCC hides it from other sessions), fails the load: a swap or a truncate-and-refill
    would trip it. Installed by the owner, after the role script (which only grants tables)."""
    with connect(receiver) as conn:
        conn.execute(NEVER_EMPTY_SQL)
        for t in NEVER_EMPTY:
            conn.execute(
                f'CREATE TRIGGER arb_test_never_empty AFTER DELETE OR TRUNCATE ON "{t}" '
                "FOR EACH STATEMENT EXECUTE FUNCTION arb_test_never_empty()"
            )


class Reader(threading.Thread):
    """A reader session counting a table's rows over and over, as the visualization does."""

    def __init__(self, dsn, table):
        super().__init__(daemon=True)
        self.dsn, self.table, self.stop, self.counts, self.errors = dsn, table, threading.Event(), [], []

    def run(self):
        with connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    self.counts.append(conn.execute(f'SELECT count(*) FROM "{self.table}"').fetchone()[0])
                except Exception as exc:  # a table swapped away or locked out is what this looks for
                    self.errors.append(repr(exc))


@pytest.fixture
def old_servers(pg_cluster, tmp_path):
    from arb_pipeline.dev.generator.reference import seed_reference

    sender = django_db(pg_cluster, "transapp", TRANSAPP_DDL)
    receiver = django_db(pg_cluster, "transappviz", TRANSAPP_DDL, TRANSAPPVIZ_DDL)
    media = tmp_path / "media"
    media.mkdir()
    with connect(sender) as conn:
        seed_reference(conn, seed=21, scale=0.02)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    traffic_at(sender, media, 21, start, BASELINE_OPS, 200)  # the years before the pipeline
    _old_receiver_fill(sender, receiver)
    at_copy = _contents(sender, DERIVED)
    purged = _purge_on_sender(sender)
    traffic_at(sender, media, 22, start + timedelta(hours=1), BASELINE_OPS, 150)  # new ids, past the copy
    voted = _vote_on_sender(sender, start + timedelta(hours=1, minutes=30))
    _new_user_on_sender(sender)
    _advance_sequences(receiver)
    return sender, receiver, media, purged, voted, at_copy


def test_cutover_keeps_history_and_derived_values_and_reaches_parity(pg_cluster, old_servers, tmp_path):
    sender, receiver, media, purged, voted, at_copy = old_servers
    copied = {t: _ids(receiver, t) for t in DERIVED}
    derived = _derived(receiver)
    # What the old transform left: every event in a period and a half hour, events with votes
    # in a zone of the real zoning, a reportinfo row per report.
    for t in DERIVED[:2]:
        assert copied[t] == _ids(
            receiver, t, '"timePeriod_id" IS NOT NULL AND "halfHourPeriod_id" IS NOT NULL'
        )
        assert _ids(receiver, t, "zonification_id IS NOT NULL"), t
    assert set(derived[INFO]) == copied[REPORT]
    assert _ids(receiver, P + "busv2", "\"registrationPlate\" LIKE '__ __ %'")  # parity restores them
    seq_before = sequences(receiver)
    app_schema = schema_dump(pg_cluster, sender, APP_TABLES)
    sender_schema = schema_dump(pg_cluster, sender)
    rx_schema = schema_dump(pg_cluster, receiver)

    # Runbook step: migrate the sender; nothing of the app's changes.
    done = arb("migrate", "--role", "sender", "--dsn", sender)
    assert done.returncode == 0, done.stderr
    assert schema_dump(pg_cluster, sender, APP_TABLES) == app_schema
    sender_role, reader_dsn = make_sender_role(pg_cluster, sender)  # backups read as the read-only role

    # The receiver: the dry run changes nothing and names the NOT NULL columns the sender never
    # ships (Django's `transformed` is nullable: it reads NULL as not transformed yet); the
    # operator fixes those (docs/cutover.md), then it fits.
    dry = arb("migrate", "--role", "receiver", "--dry-run", "--dsn", receiver, "--sender-dsn", sender)
    assert dry.returncode == 1, dry.stderr + dry.stdout
    assert schema_dump(pg_cluster, receiver) == rx_schema
    fails = [line.split(None, 2)[1:] for line in dry.stdout.splitlines() if line.lstrip().startswith("FAIL")]
    refused = "is NOT NULL without a default and the sender does not ship it: new rows can't be inserted"
    assert fails == [
        [P + "transappuser", f"column email {refused}"],
        [P + "transappuser", f"column sessionToken {refused}"],
    ], dry.stdout
    with connect(receiver) as conn:
        conn.execute(f'ALTER TABLE "{P}transappuser" ALTER COLUMN email DROP NOT NULL')
        conn.execute(f'ALTER TABLE "{P}transappuser" ALTER COLUMN "sessionToken" DROP NOT NULL')
    dry = arb("migrate", "--role", "receiver", "--dry-run", "--dsn", receiver, "--sender-dsn", sender)
    assert dry.returncode == 0, dry.stderr + dry.stdout
    rx_fixed = schema_dump(pg_cluster, receiver)
    done = arb("migrate", "--role", "receiver", "--dsn", receiver)
    assert done.returncode == 0, done.stderr
    assert {t: _ids(receiver, t) for t in DERIVED} == copied  # rows untouched by the migration
    assert _derived(receiver) == derived  # and TranSappViz's values, its reference rows adopted
    rx_role, role_dsn = make_receiver_role(pg_cluster, receiver)
    _refuse_empty_tables(receiver)

    rx = Receiver(role_dsn, tmp_path / "inbox", tmp_path / "rx-media", tmp_path / "quarantine")
    rx.media.mkdir()
    staging = tmp_path / "staging"
    complete = complete_for_yesterday(reader_dsn, staging, media)
    rx.deliver(complete)
    readers = [Reader(receiver, t) for t in NEVER_EMPTY]
    with dg.instance_for_test() as instance:
        for r in readers:
            r.start()
        try:
            _, outcomes = evaluate(instance, rx.resources())
        finally:
            for r in readers:
                r.stop.set()
                r.join(timeout=30)
        assert [(req.run_key, res.success) for req, res in outcomes] == [(complete.manifest.backup_id, True)]
        for r in readers:
            assert r.counts and min(r.counts) > 0 and not r.errors, (r.table, r.errors[:3])
        with pytest.raises(psycopg.errors.RaiseException, match="left .* empty"), connect(receiver) as conn:
            conn.execute(f'DELETE FROM "{EV}"')  # the guard was armed: emptying a table fails

        # Partials after the complete: votes and reports in two closed 5-minute windows, and a
        # receiver clock 3 minutes behind the sender's: the newer partial waits, then loads.
        now = datetime.now(UTC)
        keys = [
            PARTIAL.get_partition_key_for_timestamp((now - timedelta(minutes=m)).timestamp())
            for m in (30, 15)
        ]
        partials = []
        for i, key in enumerate(keys):
            traffic_at(
                sender,
                media,
                23 + i,
                PARTIAL.start_time_for_partition_key(key) + timedelta(minutes=1),
                PARTIAL_OPS,
                40,
            )
            partials.append(partial_for(reader_dsn, staging, media, key, f"cutover{i}"))
            rx.deliver(partials[-1])
        behind = (
            PARTIAL.time_window_for_partition_key(keys[1]).end + timedelta(minutes=1) - timedelta(minutes=3)
        )
        data, outcomes = evaluate(instance, rx.resources(), now=behind)
        assert [(req.run_key, res.success) for req, res in outcomes] == [
            (partials[0].manifest.backup_id, True)
        ]
        assert rx.folder(partials[1]).is_dir() and not rx.quarantine.exists()  # it waits in the inbox
        data, outcomes = evaluate(instance, rx.resources(), data.cursor)
        assert [(req.run_key, res.success) for req, res in outcomes] == [
            (partials[1].manifest.backup_id, True)
        ]

        # The sender deletes a report TranSappViz derived a reportinfo row for. Django's key from
        # reportinfo to report is NO ACTION: without the pipeline's trigger deleting the row
        # first (arb_delete_reportinfo), the next complete would fail at commit.
        with connect(receiver) as conn:
            gone = conn.execute(f'SELECT min(report_id) FROM "{INFO}"').fetchone()[0]
        with connect(sender) as conn:
            conn.execute(f'DELETE FROM "{REPORT}" WHERE id = %s', (gone,))
        infos = _derived(receiver)[INFO]
        second = complete_for_yesterday(reader_dsn, staging, media)
        rx.deliver(second)
        _, outcomes = evaluate(instance, rx.resources(), data.cursor)
        assert [(req.run_key, res.success) for req, res in outcomes] == [(second.manifest.backup_id, True)]
        assert gone not in _ids(receiver, REPORT)
        assert _derived(receiver)[INFO] == {r: row for r, row in infos.items() if r != gone}
        copied[REPORT].discard(gone)

    # Shipped rows reach parity; what differs is only the receiver's history the sender purged
    # (the columns the catalog keeps on the sender, which the old tool copied, are not compared).
    catalog = current_catalog()
    report = compare_tables(sender, receiver, tables=list(catalog.complete_tables), max_diffs=100_000)
    for table in report.tables:
        assert table.counts[MISSING] == 0 and table.counts[CHANGED] == 0, table.format()
        extra = {d.key["id"] for d in table.diffs if d.kind == EXTRA}
        assert extra == purged.get(table.table, set()), table.format()

    # What `arb adopt --prune-unshipped --dry-run` counts is exactly that history (runbook step 9).
    dry = arb("adopt", "--prune-unshipped", "--dry-run", "--dsn", role_dsn)
    assert dry.returncode == 0, dry.stderr
    for table, ids in purged.items():
        assert f"{table.removeprefix(P)}: {len(ids)} row(s) no backup wrote" in dry.stdout, dry.stdout

    # The history stays with its derived values, unshipped; so do untouched rows' marks.
    for table, ids in purged.items():
        assert ids <= _ids(receiver, table, "arb_synced_at IS NULL"), table
    assert purged[EV] <= _ids(receiver, EV, 'transformed AND "timePeriod_id" IS NOT NULL')
    now = _contents(sender, DERIVED)
    for t in DERIVED:  # the old postprocessing's mark stays where the app left the row alone
        changed = {i for i, row in at_copy[t].items() if i in now[t] and now[t][i] != row}
        assert copied[t] - changed <= _ids(receiver, t, "transformed"), t
        assert changed <= _ids(receiver, t, "NOT transformed"), t  # content changed: redone
        assert _ids(receiver, t) - copied[t] <= _ids(receiver, t, "transformed IS NOT TRUE"), (
            t
        )  # new rows wait
    assert voted <= _ids(receiver, EV, "transformed IS NOT TRUE")
    # TranSappViz's derived values stay on every row the receiver keeps (loads never write them).
    after_loads = _derived(receiver)
    for t, rows in derived.items():
        kept = {i: rows[i] for i in after_loads[t] if i in rows}
        assert kept == {i: after_loads[t][i] for i in kept}, t
    assert set(after_loads[INFO]) == copied[REPORT]

    after = sequences(receiver)
    assert {s: after[s] for s in seq_before if after[s] < seq_before[s]} == {}

    # Rolling back removes exactly what the pipeline added, on both servers (docs/cutover.md).
    with connect(receiver) as conn:
        for t in NEVER_EMPTY:
            conn.execute(f'DROP TRIGGER arb_test_never_empty ON "{t}"')
        conn.execute("DROP FUNCTION arb_test_never_empty()")
    for dsn, role, before in ((receiver, rx_role, rx_fixed), (sender, sender_role, sender_schema)):
        assert schema_dump(pg_cluster, dsn) != before  # the pipeline's objects are there
        done = rollback(pg_cluster, dsn, role)
        assert done.returncode == 0, done.stderr
        assert schema_dump(pg_cluster, dsn) == before
