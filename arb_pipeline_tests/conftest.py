"""The suite's fixtures, loaded as plugins from support/ (see support/__init__.py)."""

from __future__ import annotations

import pytest

# Before any support module is imported: their asserts get pytest's explanations too.
pytest.register_assert_rewrite("arb_pipeline_tests.support")

pytest_plugins = [
    "arb_pipeline_tests.support.postgres",
    "arb_pipeline_tests.support.services",
    "arb_pipeline_tests.support.demo",
    "arb_pipeline_tests.support.transappviz",
]
