"""Schemathesis drives every endpoint from /openapi.json: no 5xx, every response as the schema says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import private_app

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, corpus_build, corpus_settings, encoder):
    index_dir = tmp_path_factory.mktemp("fuzz") / "index"
    limits = {"rate_limit": "", "write_rate_limit": ""}
    app = private_app(index_dir, corpus_settings, encoder, api_keys=KEY, **limits)
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def test_every_endpoint_against_its_schema(api_schema):
    # Driven with Hypothesis directly: schemathesis' own pytest plugin does not run under pytest 9.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})

        check()
