"""The restore drill restores a real complete backup with psql into a scratch database,
checks it against the manifest, drops it, and reports its time; a failed drill alerts."""

from __future__ import annotations

import shutil

import dagster as dg
import psycopg
import pytest

from arb_pipeline.dagster_common.alert_sensors import make_failure_alert_sensor
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.drill_assets import RestoreDrillSettings, restore_drill, restore_drill_job
from arb_pipeline.receiver.resources import ReceiverSettings
from arb_pipeline.restore.drill import SCRATCH_PREFIX, DrillError, check_restore_script, latest_complete
from arb_pipeline_tests.support.alerts import Ticker, mailer_for
from arb_pipeline_tests.support.backups import complete_for_yesterday


@pytest.fixture
def drill_dsn(pg_cluster) -> str:
    """A role that may create databases and nothing more, as ARB_DRILL_DSN should be."""
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'arb_drill'").fetchone():
            conn.execute("CREATE ROLE arb_drill LOGIN CREATEDB")
    return f"host=127.0.0.1 port={pg_cluster.port} user=arb_drill dbname=postgres"


@pytest.fixture
def inbox(sender_db, tmp_path, request):
    """An inbox holding a real complete backup of a sender with traffic (with the sender's
    per-table digests when the test asks for them: ``indirect`` parameter True)."""
    media = tmp_path / "media"
    media.mkdir()
    with connect(sender_db) as conn:
        seed_reference(conn, seed=9, scale=0.02)
    with Workload(sender_db, media, seed=9) as work:
        for _ in range(80):
            work.step()
    fingerprints = getattr(request, "param", False)
    built = complete_for_yesterday(sender_db, tmp_path / "staging", media, fingerprints=fingerprints)
    folder = tmp_path / "inbox" / "complete"
    folder.mkdir(parents=True)
    built.staged.root.rename(folder / built.manifest.backup_id)
    return tmp_path / "inbox"


def drill_defs(inbox, dsn, smtp) -> dg.Definitions:
    return dg.Definitions(
        assets=[restore_drill],
        jobs=[restore_drill_job],
        sensors=[make_failure_alert_sensor("receiver")],
        resources={
            "receiver_settings": ReceiverSettings(
                inbox_dir=str(inbox), media_dir=str(inbox), quarantine_dir=str(inbox)
            ),
            "restore_drill_settings": RestoreDrillSettings(
                maintenance_dsn=dsn, psql=str(find_bin_dir() / "psql")
            ),
            "alert_mailer": mailer_for(smtp),
        },
    )


def _scratch_databases(pg_cluster) -> list[str]:
    with psycopg.connect(pg_cluster.dsn()) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",)
            )
        ]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="restore.sql needs the zstd program")
@pytest.mark.parametrize("inbox", [False, True], ids=["defaults", "sender digests"], indirect=True)
def test_the_drill_restores_the_newest_complete_and_reports_its_time(
    inbox, drill_dsn, pg_cluster, smtp_server
):
    pending = latest_complete(inbox)
    manifest = read_manifest(pending.path)
    defs = drill_defs(inbox, drill_dsn, smtp_server)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("restore_drill_job").execute_in_process(instance=instance)
        [mat] = result.asset_materializations_for_node("receiver__ops__restore_drill")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["backup_id"] == manifest.backup_id
    assert meta["restore_seconds"] > 0 and isinstance(meta["restore_seconds"], float)
    assert meta["rows"] == sum(f.rows for f in manifest.table_files()) > 0
    # Row counts are always checked; digests where the sender wrote them (ARB_COMPLETE_FINGERPRINTS=1).
    digests = len(manifest.table_files()) if manifest.table_files()[0].fingerprint else 0
    assert meta["tables"] == len(manifest.table_files()) and meta["digests_checked"] == digests
    assert meta["database_bytes"] > 0 and meta["backup_bytes"] > 0
    assert _scratch_databases(pg_cluster) == []  # dropped


def test_a_failed_drill_alerts(inbox, pg_cluster, smtp_server):
    # A superuser DSN is refused: the drill runs SQL that came from the sender.
    defs = drill_defs(inbox, pg_cluster.dsn(), smtp_server)
    with dg.instance_for_test() as instance:
        ticker = Ticker(
            defs.resolve_sensor_def("receiver_failure_alerts"), instance, defs, mailer_for(smtp_server)
        )
        ticker.tick()
        result = defs.resolve_job_def("restore_drill_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        ticker.tick()
    [msg] = smtp_server.messages
    assert "restore_drill_job failed" in msg.subject
    assert "logs in as a superuser" in msg.body and "CREATE ROLE arb_drill LOGIN CREATEDB" in msg.body


def test_the_drill_runs_only_lines_the_sender_writes(inbox):
    pending = latest_complete(inbox)
    manifest = read_manifest(pending.path)
    check_restore_script(pending.path, manifest)  # the real one passes
    restore = pending.path / "restore.sql"
    original = restore.read_text()
    restore.write_text(original + "\\! touch /tmp/arb-drill-pwned\n")
    with pytest.raises(DrillError, match=r"restore.sql .* line \d+, is not a line arb_pipeline writes"):
        check_restore_script(pending.path, manifest)
    restore.write_text(
        original.replace("tables/AndroidRequests_busstop.copy.zst", "tables/x.copy.zst; rm -rf ~")
    )
    with pytest.raises(DrillError, match="restore.sql"):
        check_restore_script(pending.path, manifest)
    restore.write_text(original)
    schema = pending.path / "schema.sql"
    schema.write_text(schema.read_text() + "SELECT 1 \\! id\n")
    with pytest.raises(DrillError, match="schema.sql .* backslash"):
        check_restore_script(pending.path, manifest)
