"""The package reader fuzzed: malformed JSON, wrong types, huge values, odd names —
always a clear ManifestError/VerifyError, never another exception, never a load. And
tampered table files driven through verify and the real load into a receiver database:
they load, or fail with an ArbError leaving every table as it was (never a partial load)."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil

import pytest
import zstandard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.errors import ArbError
from arb_pipeline.package.manifest import Manifest, ManifestError
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline_tests.support.backups import make_partial, seeded_sender
from arb_pipeline_tests.support.postgres import fresh_db
from arb_pipeline_tests.support.traffic import traffic

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_clearly(data):
    with pytest.raises(ManifestError):
        Manifest.from_json(data)


@pytest.fixture(scope="module")
def good_manifest(tmp_path_factory, pg_cluster):
    tmp = tmp_path_factory.mktemp("fuzz")
    with seeded_sender(fresh_db(pg_cluster, "sender"), tmp, seed=13) as (dsn, media, work):
        traffic(work, 40)
        built = make_partial(dsn, tmp / "staging", media)
    return built.staged.root, built.manifest.to_dict()


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_field_replaced_by_anything_is_accepted_or_refused_clearly(good_manifest, data):
    _, doc = good_manifest
    doc = json.loads(json.dumps(doc))
    paths = list(_paths(doc))
    path = data.draw(st.sampled_from(paths))
    _set(doc, path, data.draw(json_values))
    try:
        Manifest.from_json(json.dumps(doc).encode())
    except ManifestError as exc:
        assert str(exc)  # a message, naming something
    except RecursionError:
        pytest.fail("deeply nested input must be refused, not crash")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=60), size=st.integers(min_value=0, max_value=2**63 - 1))
def test_odd_file_names_and_sizes_never_escape_or_pass_verification(
    good_manifest, tmp_path_factory, name, size
):
    folder, doc = good_manifest
    doc = json.loads(json.dumps(doc))
    work = tmp_path_factory.mktemp("v") / "partial" / doc["backup_id"]
    shutil.copytree(folder, work)
    doc["files"][0]["name"], doc["files"][0]["bytes"] = name, size
    (work / "manifest.json").write_text(json.dumps(doc))
    changed = (name, size) != (
        json.loads((folder / "manifest.json").read_text())["files"][0]["name"],
        json.loads((folder / "manifest.json").read_text())["files"][0]["bytes"],
    )
    if changed:
        with pytest.raises(VerifyError):
            verify_files(work)


# -- tampered table files through the load path: a clear error and nothing loaded -------------

_variants = itertools.count()
MUTATIONS = ("replace line", "set field", "drop field", "truncate line", "duplicate line", "text field")


@pytest.fixture(scope="module")
def fuzz_receiver(pg_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-receiver")
    (root / "media").mkdir()
    return fresh_db(pg_cluster, "receiver"), root


def _receiver_state(dsn: str) -> dict:
    """Row count and content digest of every table a load writes, and the staging schema."""
    state = {}
    with connect(dsn) as conn:
        for table in list(current_catalog().table_names) + ["arb_loaded_backup"]:
            state[table] = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x"
                ).format(sql.Identifier(table))
            ).fetchone()
        state["arb_stage"] = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'arb_stage'"
        ).fetchone()
    return state


def _mutate(lines: list[bytes], data) -> list[bytes]:
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if kind == "replace line":
        lines[i] = data.draw(st.binary(max_size=80), label="bytes")
    elif kind == "truncate line":
        lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]) - 1)), label="at")]
    elif kind == "duplicate line":
        lines.insert(i, lines[i])
    else:
        doc = json.loads(lines[i])
        field = data.draw(st.sampled_from(sorted(doc)), label="field")
        if kind == "drop field":
            del doc[field]
        else:
            doc[field] = data.draw(
                json_values if kind == "set field" else st.text(max_size=30), label="value"
            )
        lines[i] = json.dumps(doc).encode()
    return lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_tampered_table_file_loads_cleanly_or_not_at_all(good_manifest, fuzz_receiver, data):
    """A table file whose content was changed (and its size, hash and maybe row count made
    to match, as a faulty sender would publish it) goes through verify and the real load:
    it loads, or it fails with an ArbError and the receiver's tables are exactly as before
    (no partial load, no staging table left)."""
    folder, doc = good_manifest
    dsn, root = fuzz_receiver
    doc = json.loads(json.dumps(doc))
    tables = [f for f in doc["files"] if f["kind"] == "table"]
    entry = data.draw(st.sampled_from(tables), label="file")
    doc["backup_id"] = f"{doc['backup_id'].rsplit('-', 1)[0]}-fz{next(_variants)}"
    work = root / "inbox" / "partial" / doc["backup_id"]
    shutil.copytree(folder, work)
    path = work / entry["name"]
    lines = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().split(b"\n")[:-1]
    content = b"".join(line + b"\n" for line in _mutate(lines, data))
    path.write_bytes(zstandard.ZstdCompressor().compress(content))
    raw = path.read_bytes()
    entry["bytes"], entry["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
    if data.draw(st.booleans(), label="rows match"):
        entry["rows"] = content.count(b"\n")
    (work / "manifest.json").write_text(json.dumps(doc))
    before = _receiver_state(dsn)
    try:
        receive(work, dsn=dsn, media_dir=root / "media", quarantine_dir=root / "quarantine")
    except ArbError as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(exc)
        assert _receiver_state(dsn) == before
    else:
        event("loaded")
