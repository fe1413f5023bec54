"""README command 1, `bash scripts/demo.sh`, from a clean checkout (support/demo.py), and the
parity check its summary is made of (arb_pipeline/dev/demo_parity.py).

The demo tests run it as a user does and read its output: the UI address, a parity summary
that reports a parity-clean load of partial windows, rows on the receiver, postprocessing,
and Ctrl-C leaving nothing running. They take a few minutes (`-m "not demo"` skips them).
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dev.demo_parity import loaded_parity
from arb_pipeline.extract.tables import Window
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import complete_for_yesterday, load, make_partial, seeded_sender
from arb_pipeline_tests.support.demo import PARITY_LINE, TRANSPORT_LINE, DemoProcess
from arb_pipeline_tests.support.services import services_required
from arb_pipeline_tests.support.traffic import traffic

UTC = timezone.utc


# ---- the parity summary, on its own --------------------------------------------------------------


def test_loaded_parity_is_clean_after_a_load_and_names_what_differs(sender_db, receiver_db, tmp_path):
    assert loaded_parity(sender_db, receiver_db).format().endswith("parity: nothing loaded yet")
    with seeded_sender(sender_db, tmp_path, seed=7) as (dsn, media, work):
        load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s1", media))
        traffic(work, 80)
        now = datetime.now(UTC)
        through = now + timedelta(minutes=1)
        load(
            receiver_db, make_partial(dsn, tmp_path / "s2", media, Window(now - timedelta(hours=1), through))
        )

    clean = loaded_parity(sender_db, receiver_db)
    assert clean.ok, clean.format()
    assert clean.through == through and clean.partials == 1 and clean.completes == 1
    assert sum(t.rows for t in clean.tables) > 0
    assert [t.table for t in clean.tables] == [spec.name for spec in current_catalog().partial_specs]

    table = "AndroidRequests_eventforbusv2"
    with connect(sender_db, autocommit=True) as conn:
        moved, changed = [
            r[0] for r in conn.execute(f'SELECT id FROM "{table}" ORDER BY id LIMIT 2').fetchall()
        ]
        # A row whose cursor moved past the loaded windows (a new vote) is for a later window.
        conn.execute(
            f'UPDATE "{table}" SET "eventConfirm" = "eventConfirm" + 1, "timeStamp" = %s WHERE id = %s',
            (through + timedelta(minutes=5), moved),
        )
        # A change that leaves the cursor alone is one the receiver has not got.
        conn.execute(f'UPDATE "{table}" SET "eventConfirm" = "eventConfirm" + 1 WHERE id = %s', (changed,))
    drift = loaded_parity(sender_db, receiver_db)
    assert not drift.ok
    bad = {t.table: (t.behind, t.extra) for t in drift.tables if not t.ok}
    assert bad == {table: (1, 0)}
    assert "DIFFERS: eventforbusv2 1 of" in drift.format()

    leaf = "AndroidRequests_stadisticdatafromregistrationbus"
    with connect(sender_db, autocommit=True) as conn:  # deleted on the sender, still on the receiver
        conn.execute(f'DELETE FROM "{leaf}" WHERE id = (SELECT min(id) FROM "{leaf}")')
    assert {
        t.table: (t.behind, t.extra) for t in loaded_parity(sender_db, receiver_db).tables if not t.ok
    } == {table: (1, 0), leaf: (0, 1)}


# ---- the demo ----------------------------------------------------------------------------------


@pytest.mark.demo
@pytest.mark.timeout(900)
def test_demo_prints_the_ui_address_and_a_parity_clean_load(demo):
    clean = demo.wait_for_clean_load()
    assert int(clean.group(1)) >= 1 and int(clean.group(2)) >= 1, clean.group(0)
    # The address it printed is the Dagster webserver, answering.
    with urllib.request.urlopen(f"{demo.url}/server_info", timeout=10) as answer:
        info = json.load(answer)
    assert info["dagster_webserver_version"].startswith("1.13")
    assert TRANSPORT_LINE.search("\n".join(demo.lines)).group(1).endswith("var/demo/inbox")


PARTITION_STATS = """
query ($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) {
    partitionStats { numPartitions numMaterialized numFailed }
    freshnessStatusInfo { freshnessStatus }
  }
}
"""


def _what_the_ui_shows(demo: DemoProcess, *path: str) -> dict:
    """What the UI shows for an asset (its partitions, its freshness), through the webserver's GraphQL API."""
    request = urllib.request.Request(
        f"{demo.url}/graphql",
        data=json.dumps({"query": PARTITION_STATS, "variables": {"path": list(path)}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        [node] = json.load(answer)["data"]["assetNodes"]
    return {**node["partitionStats"], "freshness": node["freshnessStatusInfo"]["freshnessStatus"]}


def _once_freshness_is_known(demo: DemoProcess, *path: str, within: float = 120) -> dict:
    """``_what_the_ui_shows`` once Dagster has judged the asset's freshness: the daemon does so
    on its own schedule, so right after a first materialization it still reads UNKNOWN."""
    deadline = time.monotonic() + within
    shown = _what_the_ui_shows(demo, *path)
    while shown["freshness"] == "UNKNOWN" and time.monotonic() < deadline:
        time.sleep(2)
        shown = _what_the_ui_shows(demo, *path)
    return shown


@pytest.mark.demo
@pytest.mark.timeout(900)
def test_the_ui_shows_a_newcomer_healthy_partitions(demo):
    """Partials start with the demo and completes the day before: the partition views list
    what has been due since the start, and all but the newest (in flight) are loaded, instead
    of a day and a half of never-due partitions shown missing; freshness reads healthy."""
    demo.wait_for_clean_load()
    table = "eventforbusv2"  # asset keys name tables without the app's prefix
    for side in ("sender", "receiver"):
        partial = _once_freshness_is_known(demo, side, "partial", table)
        minutes = (time.time() - demo.started_at) / 60
        assert 1 <= partial["numPartitions"] <= minutes + 2, (side, partial, minutes)
        assert partial["numMaterialized"] >= partial["numPartitions"] - 2, (side, partial)
        assert partial["numFailed"] == 0 and partial["freshness"] == "HEALTHY", (side, partial)
        complete = _once_freshness_is_known(demo, side, "complete", table)
        healthy = {"numPartitions": 1, "numMaterialized": 1, "numFailed": 0, "freshness": "HEALTHY"}
        assert complete == healthy, (side, complete)


@pytest.mark.demo
@pytest.mark.timeout(900)
def test_demo_receiver_has_the_sender_rows_up_to_the_newest_loaded_window(demo):
    with connect(demo.dsn("receiver"), autocommit=True) as conn:
        partials, completes, written, through = conn.execute(
            "SELECT count(*) FILTER (WHERE kind = 'partial'), count(*) FILTER (WHERE kind = 'complete'), "
            "sum(rows_written) FILTER (WHERE kind = 'partial'), max(window_end) FILTER (WHERE kind = "
            "'partial') FROM arb_loaded_backup WHERE outcome = 'loaded'"
        ).fetchone()
    assert partials >= 1 and completes >= 1 and written > 0
    # Independent of the demo's own summary: every (id, timeStamp) the sender has before the
    # newest loaded window's end is on the receiver, at that timeStamp.
    total = 0
    with (
        connect(demo.dsn("sender"), autocommit=True) as sender,
        connect(demo.dsn("receiver"), autocommit=True) as receiver,
    ):
        for table, cursor in ((spec.name, spec.cursor) for spec in current_catalog().partial_specs):
            sql = f'SELECT id, "{cursor}" FROM "{table}" WHERE "{cursor}" < %s'
            on_sender = set(sender.execute(sql, (through,)).fetchall())
            on_receiver = set(receiver.execute(f'SELECT id, "{cursor}" FROM "{table}"').fetchall())
            missing = on_sender - on_receiver
            assert not missing, f"{table}: {len(missing)} of {len(on_sender)} sender rows not on the receiver"
            total += len(on_sender)
    assert total > 0


@pytest.mark.demo
@pytest.mark.timeout(900)
def test_demo_postprocesses_what_partials_loaded(demo):
    """The postprocess sensor follows the loads: TranSappViz's views find a period, a half-hour
    and a comuna of the real zoning for loaded events, and a reportinfo row for each report
    (or the problem that kept it from one)."""
    deadline = time.monotonic() + 300
    while True:
        with connect(demo.dsn("receiver"), autocommit=True) as conn:
            with_partials, comunas = conn.execute(
                'SELECT count(*) FILTER (WHERE e."timeStamp" >= '
                "  (SELECT min(window_start) FROM arb_loaded_backup WHERE kind = 'partial')), "
                "  array_agg(DISTINCT z.comuna) "
                'FROM "AndroidRequests_eventforbusv2" e '
                'JOIN "AndroidRequests_timeperiod" tp ON tp.id = e."timePeriod_id" '
                'JOIN "AndroidRequests_halfhourperiod" hh ON hh.id = e."halfHourPeriod_id" '
                'JOIN "AndroidRequests_zonificationtransantiago" z ON z.id = e.zonification_id'
            ).fetchone()
            reports, described = conn.execute(
                'SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT FROM "AndroidRequests_reportinfo" ri '
                "  WHERE ri.report_id = r.id) OR EXISTS (SELECT FROM arb_pp_problem p WHERE "
                "  p.derivation = 'report_info' AND p.source_id = r.id)) "
                'FROM "AndroidRequests_report" r'
            ).fetchone()
        # Reports come a few partials in: wait for one, and for postprocessing to reach them.
        if (with_partials > 0 and 0 < reports == described) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert with_partials > 0, "no loaded event got a period, a half-hour and a zone"
    # Comunas of the EOD 2012 zoning the demo imported (866 zones), not a synthetic grid.
    with connect(demo.dsn("receiver"), autocommit=True) as conn:
        zones = conn.execute('SELECT count(*) FROM "AndroidRequests_zonificationtransantiago"').fetchone()[0]
    assert zones == 866 and comunas and all(isinstance(c, str) and c for c in comunas), comunas
    assert reports > 0 and described == reports, (
        f"{reports - described} of {reports} reports without reportinfo"
    )


@pytest.mark.demo
@pytest.mark.timeout(900)
def test_ctrl_c_stops_everything_the_demo_started(demo_stopped):
    demo, stopped = demo_stopped
    assert stopped.returncode == 0, demo.output()
    assert demo.lines[-1].endswith("stopped"), demo.output()
    assert stopped.leftover == {}, f"still running after Ctrl-C: {stopped.leftover}"
    assert stopped.open_ports == [], f"still listening after Ctrl-C: {stopped.open_ports}"
    assert not (demo.checkout / "var/demo/postgres/data/postmaster.pid").exists()


@pytest.mark.demo
@pytest.mark.sshd
@pytest.mark.timeout(900)
def test_demo_over_sftp(demo_stopped):
    """`arb demo --sftp`: the same demo with backups published through a local sshd."""
    from arb_pipeline.dev.sshd import sshd_unavailable_reason

    reason = sshd_unavailable_reason()
    if reason:
        if services_required():
            pytest.fail(f"sshd is required here (CI / ARB_REQUIRE_SSHD) but unavailable: {reason}")
        pytest.skip(reason)
    first, _ = demo_stopped  # the same checkout, free again
    run = DemoProcess(first.checkout, ["--sftp"], log_name="demo-sftp").start()
    try:
        clean = run.wait_for_clean_load()
        assert "SFTP to sshd" in run.first(TRANSPORT_LINE).group(0)
        with connect(run.dsn("receiver"), autocommit=True) as conn:
            loaded = {
                r[0]
                for r in conn.execute(
                    "SELECT backup_id FROM arb_loaded_backup WHERE kind = 'partial' AND outcome = 'loaded'"
                ).fetchall()
            }
        published = {p.parent.name for p in (run.inbox / "partial").glob("*/manifest.json")}
        assert loaded and loaded <= published, (loaded, published)  # loaded from what came over SFTP
    finally:
        stopped = run.stop()
    assert PARITY_LINE.search(clean.group(0)).group(4) == "OK"
    assert stopped.returncode == 0, run.output()
    assert stopped.leftover == {} and stopped.open_ports == [], (stopped.leftover, stopped.open_ports)
    if str(run.inbox).startswith("/srv/arb-sftp/"):  # as root: the chroot the demo made is removed
        assert not run.inbox.parent.exists()


def test_demo_never_empties_a_folder_it_did_not_make(tmp_path, capsys):
    from arb_pipeline.cli.main import main

    (tmp_path / "notes.txt").write_text("someone's")
    assert main(["demo", "--dir", str(tmp_path)]) == 2
    assert "not empty and not a demo's folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "someone's"
