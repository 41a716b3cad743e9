"""Schemathesis over the whole OpenAPI schema of a running ``ae-serve``: no 5xx, responses as documented.

Every operation gets generated requests, valid and invalid (negative mode), sent over real HTTP;
each response must not be a 5xx and must match the schema (status code, content type, headers,
body). The example count per operation is bounded so the whole run takes seconds.

Not checked: that every schema-valid request is accepted. The schema cannot say "a 28×28 image"
or "as many numbers as the model's code", so a schema-valid upload of a 1×1 PNG is rightly a 422.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from service.main import create_app
from tests.hardening.conftest import LiveServer

# Each test here bounds its own wait: a hang fails it within 300 s, not at the suite-wide 600 s.
pytestmark = pytest.mark.timeout(300)

# The schema the running server publishes: building the app loads nothing, so this is cheap.
schema = schemathesis.openapi.from_dict(create_app().openapi())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_and_never_5xx(
    case: schemathesis.Case, server: LiveServer
) -> None:
    case.call_and_validate(base_url=server.url, timeout=30, excluded_checks=[positive_data_acceptance])
