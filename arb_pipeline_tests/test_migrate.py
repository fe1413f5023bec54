import psycopg
import pytest

from arb_pipeline.errors import SchemaError
from arb_pipeline.schema.migrate import apply_migrations, migrations_for


def _tables(dsn):
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }


def _columns(dsn, table):
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
            )
        }


def test_sender_has_every_transapp_table(sender_db):
    tables = _tables(sender_db)
    for name in (
        "gtfs",
        "busstop",
        "service",
        "servicesbybusstop",
        "servicestopdistance",
        "route",
        "event",
        "busv2",
        "busassignment",
        "eventforbusstop",
        "eventforbusv2",
        "stadisticdatafromregistrationbusstop",
        "stadisticdatafromregistrationbus",
        "report",
        "token",
        "poseintrajectoryoftoken",
        "activetoken",
        "devicepositionintime",
        "nearbybuseslog",
        "level",
        "transappuser",
        "scoreevent",
        "scorehistory",
    ):
        assert f"AndroidRequests_{name}" in tables
    assert "AndroidRequests_timeperiod" not in tables
    assert {"email", "sessionToken"} <= _columns(sender_db, "AndroidRequests_transappuser")


def test_receiver_adds_its_own_tables_and_columns_and_drops_personal_ones(receiver_db):
    tables = _tables(receiver_db)
    assert {
        "AndroidRequests_timeperiod",
        "AndroidRequests_halfhourperiod",
        "AndroidRequests_zonification",
        "AndroidRequests_reportinfo",
        "AndroidRequests_eventforbusv2",
    } <= tables
    assert "transformed" in _columns(receiver_db, "AndroidRequests_eventforbusv2")
    assert not {"email", "sessionToken"} & _columns(receiver_db, "AndroidRequests_transappuser")


def test_applying_twice_is_a_noop(receiver_db):
    assert apply_migrations(receiver_db, "receiver") == []
    with psycopg.connect(receiver_db) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM arb_schema_migration ORDER BY version")]
    assert versions == [m.version for m in migrations_for("receiver")]


def test_an_edited_applied_migration_is_refused(sender_db):
    with psycopg.connect(sender_db) as conn:
        conn.execute("UPDATE arb_schema_migration SET sha256 = 'x' WHERE version = '0001'")
    with pytest.raises(SchemaError, match="changed after it was applied"):
        apply_migrations(sender_db, "sender")


def test_unknown_role_is_a_clear_error():
    with pytest.raises(SchemaError, match="unknown role 'viz'"):
        migrations_for("viz")
