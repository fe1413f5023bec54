"""The package reader fuzzed: malformed JSON, wrong types, huge values, odd names —
always a clear ManifestError/VerifyError, never another exception, never a load."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arb_pipeline.package.manifest import Manifest, ManifestError
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline_tests.backups import make_partial, seeded_sender, traffic

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_clearly(data):
    with pytest.raises(ManifestError):
        Manifest.from_json(data)


@pytest.fixture(scope="module")
def good_manifest(tmp_path_factory, pg_cluster):
    from arb_pipeline_tests.conftest import _fresh_db

    tmp = tmp_path_factory.mktemp("fuzz")
    with seeded_sender(_fresh_db(pg_cluster, "sender"), tmp, seed=13) as (dsn, media, work):
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
def test_odd_file_names_and_sizes_never_escape_or_pass_verification(good_manifest, tmp_path_factory, name, size):
    folder, doc = good_manifest
    doc = json.loads(json.dumps(doc))
    work = tmp_path_factory.mktemp("v") / "partial" / doc["backup_id"]
    shutil.copytree(folder, work)
    doc["files"][0]["name"], doc["files"][0]["bytes"] = name, size
    (work / "manifest.json").write_text(json.dumps(doc))
    changed = (name, size) != (json.loads((folder / "manifest.json").read_text())["files"][0]["name"],
                               json.loads((folder / "manifest.json").read_text())["files"][0]["bytes"])
    if changed:
        with pytest.raises(VerifyError):
            verify_files(work)
