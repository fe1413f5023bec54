"""The backup id: built by the sender, parsed back by the manifest reader, verify's
messages and the inbox sensor, all through package/backup_id.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arb_pipeline.package.backup_id import BackupId, build_backup_id, parse_backup_id

partition_keys = st.one_of(
    st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    st.datetimes().map(lambda t: t.strftime("%Y-%m-%d-%H-%M")),
).filter(lambda key: len(key.split("-")[0]) == 4)
uniques = st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=40)


@given(st.sampled_from(["partial", "complete"]), partition_keys, uniques)
def test_a_built_id_parses_back_to_its_parts(kind, key, unique):
    built = build_backup_id(kind, key, unique)
    assert parse_backup_id(built) == BackupId(kind, key, unique.lower()[:12])
    assert str(parse_backup_id(built)) == built


def test_the_sender_s_ids_as_they_are_built():
    run_id = "6F1C2B7A-0D4E-4B8E-9A51-3C2D1E0F9A8B".replace(
        "-", ""
    )  # a Dagster run id, as the asset passes it
    assert build_backup_id("partial", "2026-11-26-10-05", run_id) == "partial-2026-11-26-10-05-6f1c2b7a0d4e"
    assert build_backup_id("complete", "2026-11-26", "c") == "complete-2026-11-26-c"


@pytest.mark.parametrize(
    "name",
    [
        "partial-2026-11-26-10-05-abc123",
        "complete-2026-11-26-0",
        "complete-2026-11-26-" + "a" * 32,
    ],
)
def test_accepted_names(name):
    assert parse_backup_id(name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "partial-2026-11-26-10-05",  # no unique part
        "full-2026-11-26-abc",  # not a kind
        "complete-26-11-26-abc",  # not a date
        "partial-2026-11-26-10-abc",  # half a time
        "complete-2026-11-26-ABC",  # upper case is never built
        "complete-2026-11-26-a_b",
        "complete-2026-11-26-" + "a" * 33,
        "../complete-2026-11-26-abc",
    ],
)
def test_refused_names(name):
    assert parse_backup_id(name) is None
