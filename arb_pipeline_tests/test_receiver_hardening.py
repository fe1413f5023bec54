"""The receiver hardened (issue 7): its least-privilege role (deploy/sql/receiver-role.sql)
runs real loads and postprocessing and is refused everything else; nothing from a backup
is executed as SQL, even by a superuser's load."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import zstandard
from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.errors import ArbError
from arb_pipeline.extract.build import BuiltBackup, build_complete
from arb_pipeline.extract.tables import Window
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.verify import VerifyError
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline.receiver.postprocess_assets import POSTPROCESS_ASSETS, PostprocessSettings
from arb_pipeline.receiver.resources import ReceiverDatabase
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.postprocess import assert_every_row_derived
from arb_pipeline_tests.support.receiver import Receiver, failure_text, tick
from arb_pipeline_tests.support.roles import make_receiver_role, run_role_script
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

UTC = timezone.utc
REPLICATED = set(current_catalog().table_names)


@dataclass
class Sender:
    dsn: str
    media: Path
    key: str
    partial: BuiltBackup
    complete: BuiltBackup


@pytest.fixture(scope="module")
def sender(pg_cluster, tmp_path_factory) -> Sender:
    root = tmp_path_factory.mktemp("hardening-sender")
    dsn, media, staging = new_sender(pg_cluster, root, seed=31)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    traffic_at(dsn, media, 31, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 100)
    partial = partial_for(dsn, staging, media, key, "h1")
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    tw = COMPLETE.time_window_for_partition_key(day)
    complete = build_complete(
        dsn,
        staging,
        partition_key=day,
        window=Window(tw.start, tw.end),
        unique="hc",
        media_dir=media,
        sender_id="hardening",
        pg_dump=str(find_bin_dir() / "pg_dump"),
    )
    return Sender(dsn, media, key, partial, complete)


def test_loads_and_postprocessing_run_as_the_receiver_role(sender, zoned_receiver_db, pg_cluster, tmp_path):
    receiver_db = zoned_receiver_db  # reference data is the admin's
    role, role_dsn = make_receiver_role(pg_cluster, receiver_db)
    rx = Receiver.under(role_dsn, tmp_path)
    rx.deliver(sender.partial)
    rx.deliver(sender.complete)
    instance = dg.DagsterInstance.ephemeral()
    _, runs = tick(instance, rx.resources())
    assert [r.job_name for r, _ in runs] == ["load_partial_job", "load_complete_job"]
    for _, run in runs:
        assert run.success, failure_text(run)
        assert all(e.passed for e in run.get_asset_check_evaluations())
    with connect(receiver_db) as conn:
        assert dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall()) == {
            sender.partial.manifest.backup_id: "loaded",
            sender.complete.manifest.backup_id: "loaded",
        }
    report = compare_tables(sender.dsn, receiver_db)
    assert report.ok, report.format()

    post = dg.materialize(
        POSTPROCESS_ASSETS,
        partition_key=sender.key,
        instance=instance,
        raise_on_error=False,
        resources={
            "receiver_db": ReceiverDatabase(dsn=role_dsn),
            "postprocess_settings": PostprocessSettings(),
        },
    )
    assert post.success, failure_text(post)
    assert_every_row_derived(receiver_db)
    with connect(receiver_db) as conn:
        assert conn.execute('SELECT count(*) FROM "AndroidRequests_reportinfo"').fetchone()[0] > 0
        # The role owns nothing, not even a leftover staging table.
        owned = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = to_regrole(%s)", (role,)
        ).fetchone()[0]
        assert owned == 0


REFUSED = {
    "create a table in public": "CREATE TABLE public.arb_intruder (i int)",
    "create a function in public": "CREATE FUNCTION public.arb_intruder() RETURNS int "
    "LANGUAGE sql AS 'SELECT 1'",
    "create a schema": "CREATE SCHEMA arb_intruder",
    "drop a replicated table": 'DROP TABLE "AndroidRequests_report"',
    "alter a replicated table": 'ALTER TABLE "AndroidRequests_report" ADD COLUMN intruder int',
    "disable its triggers (FK checks)": 'ALTER TABLE "AndroidRequests_report" DISABLE TRIGGER ALL',
    "rewrite a receiver-only mark": "COMMENT ON COLUMN \"AndroidRequests_report\".transformed IS 'x'",
    "truncate a replicated table": 'TRUNCATE "AndroidRequests_report"',
    "drop a derived table": 'DROP TABLE "AndroidRequests_reportinfo"',
    "drop the problems table": "DROP TABLE arb_pp_problem",
    "write a table outside its list": "INSERT INTO arb_admin_canary VALUES (2, 'intruder')",
    "delete from it": "DELETE FROM arb_admin_canary",
    "read it": "SELECT * FROM arb_admin_canary",
    "rewrite the migration ledger": "DELETE FROM arb_schema_migration",
    "change reference data": 'UPDATE "AndroidRequests_zonificationtransantiago" SET comuna = comuna',
    "create a database": "CREATE DATABASE arb_intruder",
    "create a role": "CREATE ROLE arb_intruder",
    "read pg_authid": "SELECT rolpassword FROM pg_authid",
    "skip triggers with session_replication_role": "SET session_replication_role = replica",
    "read a server file": "SELECT pg_read_file('postgresql.conf')",
    "write a server file": "COPY (SELECT 1) TO '/tmp/arb_intruder'",
    "run a program": "COPY (SELECT 1) TO PROGRAM 'true'",
}


def test_the_receiver_role_is_refused_everything_else(receiver_db, pg_cluster):
    with connect(receiver_db, autocommit=True) as admin:
        admin.execute("CREATE TABLE arb_admin_canary (id int PRIMARY KEY, note text)")
        admin.execute("INSERT INTO arb_admin_canary VALUES (1, 'untouched')")
    role, role_dsn = make_receiver_role(pg_cluster, receiver_db)
    make_again = run_role_script(pg_cluster, receiver_db, role)  # idempotent
    assert make_again.returncode == 0, make_again.stderr
    allowed = []
    with psycopg.connect(role_dsn, autocommit=True) as conn:
        for what, statement in REFUSED.items():
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            allowed.append(what)
        attributes = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        writable = {
            t
            for (t,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
                "AND (has_table_privilege(oid, 'INSERT') OR has_table_privilege(oid, 'UPDATE') "
                "OR has_table_privilege(oid, 'DELETE') OR has_table_privilege(oid, 'TRUNCATE'))"
            )
        }
        derived = {
            t
            for (t,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE 'arb\\_pp\\_%' AND relkind = 'r'"
            )
        }
    assert allowed == []
    assert attributes == (False,) * 5
    # Exactly the replicated tables (the catalog file) and the receiver's own: a table added by a
    # migration and not to the script fails here.
    assert writable == REPLICATED | derived | {
        "arb_loaded_backup",
        "arb_held_backup",
        "arb_captured_delete",
        "arb_segment_digest",
        "arb_postprocess_state",
        "AndroidRequests_reportinfo",
    }
    with connect(receiver_db) as admin:
        assert admin.execute("SELECT * FROM arb_admin_canary").fetchall() == [(1, "untouched")]
        assert (
            admin.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'AndroidRequests_report'"
            ).fetchone()[0]
            == 1
        )


def test_the_role_script_refuses_a_missing_name_and_a_role_that_owns_things(receiver_db, pg_cluster):
    unnamed = run_role_script(pg_cluster, receiver_db, None)
    assert unnamed.returncode != 0 and "-v role=arb_receiver" in unnamed.stderr
    owner = psycopg.conninfo.conninfo_to_dict(receiver_db)["user"]  # the admin: owns the database
    admin = run_role_script(pg_cluster, receiver_db, owner)
    assert admin.returncode != 0 and "must own nothing" in admin.stderr
    with connect(receiver_db) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() == (
            True,
        )


# -- nothing from a backup runs as SQL --------------------------------------------------------

DROP = "; DROP TABLE arb_canary; --"
EVIL_VALUE = f"x'){DROP} \"{DROP} $${DROP}$$ \\. \\\\ \t end"


def variant(built: BuiltBackup, root: Path, tag: str, *, rows=None, manifest=None, extra_files=None) -> Path:
    """A copy of ``built`` under a new backup id, with its table rows (decoded JSON lines or
    COPY lines) and manifest changed, and sizes and hashes made to match: what a hostile
    sender could publish."""
    old_id = built.manifest.backup_id
    new_id = f"{old_id.rsplit('-', 1)[0]}-{tag}"
    folder = root / built.manifest.kind / new_id
    shutil.copytree(built.staged.root, folder)
    doc = json.loads((folder / MANIFEST_NAME).read_bytes())
    doc["backup_id"] = new_id
    for entry in doc["files"]:
        if rows and entry["kind"] == "table" and entry["table"] in rows:
            path = folder / entry["name"]
            lines = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().splitlines()
            lines = rows[entry["table"]](lines)
            path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(line + b"\n" for line in lines)))
            entry["rows"] = len(lines)
    for name, data in (extra_files or {}).items():
        (folder / name).write_bytes(data)
    if manifest:
        manifest(doc)
    for entry in doc["files"]:
        data = (folder / entry["name"]).read_bytes() if (folder / entry["name"]).is_file() else b""
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    return folder


def json_rows(change):
    def apply(lines):
        docs = [json.loads(line) for line in lines]
        change(docs)
        return [json.dumps(d).encode() for d in docs]

    return apply


def report_file(doc) -> dict:
    return next(f for f in doc["files"] if f.get("table") == "AndroidRequests_report")


def rename_report(doc, name):
    report_file(doc)["table"] = name
    doc["tables_order"] = [name if t == "AndroidRequests_report" else t for t in doc["tables_order"]]


def assert_nothing_dropped(dsn):
    with connect(dsn) as conn:
        present = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert REPLICATED <= present and "arb_loaded_backup" in present
        assert conn.execute("SELECT * FROM arb_canary").fetchall() == [(1,)]


def test_nothing_from_a_backup_is_executed_as_sql(sender, receiver_db, tmp_path, caplog):
    """Injection strings in values, column names, type names, table names, key names and
    restore.sql, through verification and a superuser's load: values load as plain data,
    names are ignored or refused, and nothing is dropped."""
    with connect(receiver_db) as conn:
        conn.execute("CREATE TABLE arb_canary (id int)")
        conn.execute("INSERT INTO arb_canary VALUES (1)")
        conn.commit()
    inbox, media, quarantine = tmp_path / "inbox", tmp_path / "media", tmp_path / "q"
    media.mkdir()
    go = dict(dsn=receiver_db, media_dir=media, quarantine_dir=quarantine)
    p = sender.partial

    def evil_values(docs):
        docs[0]["message"] = EVIL_VALUE

    evil_column = f'x"{DROP}'
    loaded = receive(
        variant(p, inbox, "values", rows={"AndroidRequests_report": json_rows(evil_values)}), **go
    )
    assert loaded.load.outcome == "loaded"
    first_id = json.loads(
        zstandard.ZstdDecompressor()
        .stream_reader(
            (
                p.staged.root
                / next(f.name for f in p.manifest.table_files() if f.table == "AndroidRequests_report")
            ).read_bytes()
        )
        .read()
        .splitlines()[0]
    )["id"]
    with connect(receiver_db) as conn:
        assert conn.execute(
            'SELECT message FROM "AndroidRequests_report" WHERE id = %s', (first_id,)
        ).fetchone() == (EVIL_VALUE,)
    assert_nothing_dropped(receiver_db)

    def add_column(docs):
        for d in docs:
            d[evil_column] = "payload"

    def evil_names(doc):
        report_file(doc)["columns"].append({"name": evil_column, "type": f"text){DROP}"})
        for c in report_file(doc)["columns"]:
            if c["name"] == "message":
                c["type"] = f"text){DROP}"

    caplog.set_level("WARNING")
    loaded = receive(
        variant(
            p, inbox, "names", rows={"AndroidRequests_report": json_rows(add_column)}, manifest=evil_names
        ),
        **go,
    )
    assert loaded.load.outcome == "loaded"
    assert evil_column in caplog.text  # named as not loaded, never run
    assert_nothing_dropped(receiver_db)

    refused = {
        "table name": lambda doc: rename_report(doc, f'AndroidRequests_report"{DROP}'),
        "a receiver-only table": lambda doc: rename_report(doc, "arb_canary"),
        "the ledger": lambda doc: rename_report(doc, "arb_loaded_backup"),
        "key name": lambda doc: report_file(doc).update(primary_key=[f'id"{DROP}']),
    }
    for i, (what, change) in enumerate(refused.items()):
        with pytest.raises(VerifyError) as err:
            receive(variant(p, inbox, f"refused{i}", manifest=change), **go)
        assert "quarantined" in str(err.value), what
        assert_nothing_dropped(receiver_db)

    # A complete's restore.sql and schema.sql are for a human restore (and the fenced drill):
    # the loader never runs them.
    loaded = receive(
        variant(
            sender.complete,
            inbox,
            "script",
            extra_files={
                "restore.sql": 'DROP TABLE arb_canary;\nDROP TABLE "AndroidRequests_report";\n'.encode(),
                "schema.sql": b"DROP TABLE arb_canary;\n",
            },
        ),
        **go,
    )
    assert loaded.load.outcome == "loaded"
    assert_nothing_dropped(receiver_db)
    with connect(receiver_db) as conn:  # the complete is newer: the sender's message is back
        assert conn.execute(
            'SELECT message FROM "AndroidRequests_report" WHERE id = %s', (first_id,)
        ).fetchone() != (EVIL_VALUE,)


def test_a_malformed_row_anywhere_in_a_complete_loads_nothing(sender, receiver_db, tmp_path):
    """A complete whose last table (parents first) holds a value its column can't take:
    a clear error, no table changed, no staging table left behind, the backup quarantined."""
    inbox, media = tmp_path / "inbox", tmp_path / "media"
    media.mkdir()
    last = sender.complete.manifest.tables_order[-1]
    bad = variant(
        sender.complete,
        inbox,
        "bad",
        rows={last: lambda lines: lines[:-1] + [b"not-a-number\t" + lines[-1].split(b"\t", 1)[1]]},
    )
    with pytest.raises(ArbError) as err:
        receive(bad, dsn=receiver_db, media_dir=media, quarantine_dir=tmp_path / "q")
    message = str(err.value)
    assert last in message and "malformed" in message
    # Verified yet refused by the database: it would fail every time, so it is quarantined.
    assert "quarantined" in message and not bad.exists()
    assert (tmp_path / "q" / "complete" / bad.name / "REASON.txt").read_text().count(last)
    with connect(receiver_db) as conn:
        assert all(
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] == 0
            for t in REPLICATED
        )
        assert conn.execute("SELECT count(*) FROM arb_loaded_backup").fetchone()[0] == 0
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'arb_stage'").fetchone()[0] == 0
        )
