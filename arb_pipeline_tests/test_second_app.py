"""A second Django app, not TranSapp, replicated by its catalog file alone (issue 14, item 2).

"library" (support/second_app/: DDL as Django creates it, and library.toml): authors, books
with a cover image, loans with a column that never leaves the sender, and shelf places
keyed by two columns. Every step runs as an operator runs it, in subprocesses with only
ARB_CATALOG pointing at library.toml: `arb migrate` on both databases, the sender's
`dagster asset materialize` of partials and a complete, the receiver's of the same. The
receiver reaches parity with the sender (rows and cover files) after the partials, and again
after the complete carries what partials cannot (an edit that moves no cursor, a delete).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pytest

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.dagster_cli import materialize
from arb_pipeline_tests.support.existing import arb, django_db
from arb_pipeline_tests.support.roles import make_receiver_role

UTC = timezone.utc
HERE = Path(__file__).resolve().parent / "support" / "second_app"
DDL, CATALOG = HERE / "library.sql", HERE / "library.toml"
TABLES = ("library_author", "library_book", "library_loan", "library_shelfitem")


def _write(dsn, media: Path, at: datetime, n: int, first: int) -> None:
    """The library app at ``at``: n authors each with a book (and its cover file), a loan and a
    shelf place; and the loans of the previous batch returned (an update moving updatedAt)."""
    with connect(dsn) as conn, conn.transaction():
        conn.execute(
            'UPDATE library_loan SET "returnedAt" = %s, "updatedAt" = %s WHERE "returnedAt" IS NULL', (at, at)
        )
        for i in range(first, first + n):
            author = conn.execute(
                "INSERT INTO library_author (name, born) VALUES (%s, %s) RETURNING id",
                (f"Author {i}", None if i % 3 else datetime(1950 + i, 1, 1).date()),
            ).fetchone()[0]
            cover = f"cover_{i}.{'png' if i % 2 else 'JPG'}" if i % 4 else None  # some books have none
            if cover:
                (media / cover).write_bytes(f"image {i}".encode() * 50)
            book = conn.execute(
                'INSERT INTO library_book (title, isbn, cover, "updatedAt", author_id) '
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (f"Book {i}", f"978{i:010d}", cover, at, author),
            ).fetchone()[0]
            conn.execute(
                'INSERT INTO library_loan (reader, "readerEmail", "borrowedAt", "updatedAt", book_id) '
                "VALUES (%s, %s, %s, %s, %s)",
                (f"reader{i}", f"reader{i}@example.org", at, at, book),
            )
            conn.execute(
                'INSERT INTO library_shelfitem (shelf, position, "placedAt", book_id) '
                "VALUES (%s, %s, %s, %s)",
                (f"S{i % 2}", i, at, book),
            )


def _key(at: datetime) -> str:
    return PARTIAL.get_partition_key_for_timestamp(at.timestamp())


def _assert_parity(sender, receiver, sender_media, receiver_media):
    # The receiver has the sender's columns, readerEmail too (left empty, never shipped):
    # parity, under the library's catalog, does not compare what the catalog excludes.
    with mock.patch.dict(os.environ, {"ARB_CATALOG": str(CATALOG)}):
        report = compare_tables(sender, receiver, tables=TABLES, max_diffs=1000)
    for table in report.tables:
        assert table.ok, table.format()
        assert table.sender.rows > 0, table.table
    media = compare_media(sender_media, receiver_media)
    assert media.ok, media


@pytest.fixture
def library(pg_cluster, tmp_path):
    sender = django_db(pg_cluster, "library", DDL)
    receiver = django_db(pg_cluster, "libraryviz", DDL)
    paths = {name: tmp_path / name for name in ("media", "rx-media", "inbox", "quarantine", "staging")}
    for name in ("media", "rx-media", "home"):
        (tmp_path / name).mkdir()
    common = {"ARB_CATALOG": str(CATALOG), "DAGSTER_HOME": str(tmp_path / "home")}
    sender_env = {
        **os.environ,
        **common,
        "ARB_SENDER_DSN": sender,
        "ARB_TRANSPORT": "local",
        "ARB_INBOX_DIR": str(paths["inbox"]),
        "ARB_SENDER_MEDIA_DIR": str(paths["media"]),
        "ARB_STAGING_DIR": str(paths["staging"]),
    }
    return sender, receiver, paths, common, sender_env


def test_a_second_app_replicates_by_its_catalog_file_alone(pg_cluster, library):
    sender, receiver, paths, common, sender_env = library
    dry = arb(
        "migrate", "--role", "receiver", "--dry-run", "--dsn", receiver, "--sender-dsn", sender, env=common
    )
    fits = {m.group(1) for m in re.finditer(r"^\s*OK\s+(\S+)", dry.stdout, flags=re.M)}  # every table fits
    assert dry.returncode == 0 and fits == set(TABLES), dry.stdout + dry.stderr
    for role, dsn in (("sender", sender), ("receiver", receiver)):
        done = arb("migrate", "--role", role, "--dsn", dsn, env=common)
        assert done.returncode == 0, done.stderr
    with connect(receiver) as conn:  # the pipeline's own objects, and nothing of TranSapp
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert not {t for t in tables if t.startswith("AndroidRequests_")}
        for t in TABLES:
            cols = {d.name for d in conn.execute(f"SELECT * FROM {t} LIMIT 0").description}
            assert "arb_synced_at" in cols, t
    _, role_dsn = make_receiver_role(pg_cluster, receiver)
    receiver_env = {
        **os.environ,
        **common,
        "ARB_RECEIVER_DSN": role_dsn,
        "ARB_INBOX_DIR": str(paths["inbox"]),
        "ARB_RECEIVER_MEDIA_DIR": str(paths["rx-media"]),
        "ARB_QUARANTINE_DIR": str(paths["quarantine"]),
        "ARB_MIN_FREE_MB": "0",
    }

    # Two closed 5-minute windows; the second returns the first one's loans.
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=45)
    keys = [_key(base), _key(base + timedelta(minutes=5))]
    for i, key in enumerate(keys):
        _write(
            sender, paths["media"], PARTIAL.start_time_for_partition_key(key) + timedelta(minutes=1), 6, 6 * i
        )
        materialize("sender", "sender_partial", key, sender_env)
    for key in keys:
        materialize("receiver", "receiver_partial", key, receiver_env)
    with connect(receiver) as conn:
        loaded = conn.execute("SELECT kind, outcome FROM arb_loaded_backup ORDER BY kind").fetchall()
    assert loaded == [("partial", "loaded")] * 2
    _assert_parity(sender, receiver, paths["media"], paths["rx-media"])

    # What only a complete carries: an edit that moves no cursor, and a delete.
    with connect(sender) as conn:
        conn.execute("UPDATE library_author SET name = name || ' (ed.)' WHERE id = 1")
        conn.execute("DELETE FROM library_shelfitem WHERE (shelf, position) = ('S1', 1)")
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    materialize("sender", "sender_complete", day, sender_env)
    materialize("receiver", "receiver_complete", day, receiver_env)
    with connect(receiver) as conn:
        assert conn.execute("SELECT name FROM library_author WHERE id = 1").fetchone()[0].endswith("(ed.)")
        assert not conn.execute(
            "SELECT FROM library_shelfitem WHERE (shelf, position) = ('S1', 1)"
        ).fetchone()
        emails = conn.execute('SELECT count(*) FROM library_loan WHERE "readerEmail" IS NOT NULL').fetchone()[
            0
        ]
    assert emails == 0  # excluded in the catalog: never shipped
    _assert_parity(sender, receiver, paths["media"], paths["rx-media"])
