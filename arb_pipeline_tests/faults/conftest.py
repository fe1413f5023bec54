"""The fault matrix's fixture: one real pipeline per scenario (see harness.py).

The scenarios (tests using ``pipeline``) carry the ``faults`` and ``sshd`` markers; the quick
in-process receiver tests of test_receiver_inbox.py need neither sshd nor the matrix.
"""

from __future__ import annotations

import pytest

from arb_pipeline_tests.faults.harness import Pipeline
from arb_pipeline_tests.support.postgres import fresh_db


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath) and "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.sshd)


@pytest.fixture
def pipeline(pg_cluster, sftp_inbox, tmp_path, request):
    seed = sum(map(ord, request.node.name)) % 10_000
    p = Pipeline(
        pg=pg_cluster,
        sshd=sftp_inbox,
        root=tmp_path,
        sender_dsn=fresh_db(pg_cluster, "sender"),
        receiver_dsn=fresh_db(pg_cluster, "receiver"),
    )
    p.setup(seed)
    try:
        yield p
    finally:
        p.close()
