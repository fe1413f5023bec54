import psycopg
import pytest

from arb_pipeline.catalog import current_catalog
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
        "AndroidRequests_zonificationtransantiago",
        "AndroidRequests_reportinfo",
        "AndroidRequests_eventforbusv2",
    } <= tables
    assert "transformed" in _columns(receiver_db, "AndroidRequests_eventforbusv2")
    assert not {"email", "sessionToken"} & _columns(receiver_db, "AndroidRequests_transappuser")


def test_applying_twice_is_a_noop(receiver_db):
    again = apply_migrations(receiver_db, "receiver")
    assert (again.applied, again.adopted, again.synced) == ([], [], [])
    with psycopg.connect(receiver_db) as conn:
        rows = conn.execute("SELECT version, how FROM arb_schema_migration ORDER BY version").fetchall()
    assert rows == [(m.version, "applied") for m in migrations_for("receiver")]


def test_every_replicated_table_gets_its_version_column_marked_as_the_receivers(receiver_db):
    with psycopg.connect(receiver_db) as conn:
        marked = dict(
            conn.execute(
                "SELECT c.relname, col_description(c.oid, a.attnum) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid WHERE a.attname = 'arb_synced_at'"
            ).fetchall()
        )
        role_tables = dict(conn.execute("SELECT name, access FROM arb_role_table").fetchall())
    catalog = current_catalog()
    assert set(marked) == set(catalog.table_names)
    assert all(comment.startswith("arb:receiver-only") for comment in marked.values())
    assert {t for t, access in role_tables.items() if access == "write"} >= set(catalog.table_names) | {
        "arb_loaded_backup",
        "arb_pp_problem",
        "AndroidRequests_reportinfo",
    }
    assert role_tables["AndroidRequests_timeperiod"] == "read"


def test_an_edited_applied_migration_is_refused(sender_db):
    with psycopg.connect(sender_db) as conn:
        conn.execute("UPDATE arb_schema_migration SET sha256 = 'x' WHERE version = '0001'")
    with pytest.raises(SchemaError, match="changed after it was applied"):
        apply_migrations(sender_db, "sender")


def test_unknown_role_is_a_clear_error():
    with pytest.raises(SchemaError, match="unknown role 'viz'"):
        migrations_for("viz")


# Applied by every receiver and sender migrated before the layers split: their bytes may
# never change, or those databases would be refused as "changed after it was applied".
# (0003, the invented receiver layout, went with issue 15: it was applied nowhere real.)
APPLIED_BEFORE_THE_SPLIT = {
    "0001": "1277b4f9bf9080d73f4ee56bfa5549f488cb2dd9c07ae893608f7212101f8535",
    "0002": "3c01f59cefd4d9a480a911e7a923ec135347899828e3816775686ca6254512e5",
}


def test_migrations_older_databases_applied_are_unchanged():
    shas = {m.version: m.sha256 for m in migrations_for("receiver")}
    assert {v: shas[v] for v in APPLIED_BEFORE_THE_SPLIT} == APPLIED_BEFORE_THE_SPLIT
