"""schemathesis against the service's own OpenAPI document, with an admin token.

Generated requests of every operation must never meet a server error, and
every answer must match what the document says (status, content type,
schema). The run is bounded so CI can afford it on every build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Err
from service_helpers import Server, Store, make_pool, served_store, token

EXAMPLES = 12


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, Server, str]]:
    folder = tmp_path_factory.mktemp(f"schema-{request.param}")
    for store, server in served_store(request.param, folder):
        secret = token(store, "admin")
        with server.client(secret) as admin:
            make_pool(admin, "st", ["ST-1", "ST-2", "ST-3"])
        yield store, server, secret


#: Checks that expect business rules the document cannot state (e.g. that any
#: well-formed request succeeds); every other check runs.
EXCLUDED = [checks.positive_data_acceptance]


def test_api_keeps_its_description(served: tuple[Store, Server, str]) -> None:
    _store, server, secret = served
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    operations: list[Any] = []
    for result in schema.get_all_operations():
        assert not isinstance(result, Err), result
        operations.append(result.ok())
    assert len(operations) >= 18
    headers = {"Authorization": f"Bearer {secret}"}
    tried: list[str] = []
    for operation in operations:
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def exercise(case: Any) -> None:
                case.call_and_validate(
                    base_url=server.url, headers=headers, excluded_checks=EXCLUDED, timeout=60
                )

            try:
                exercise()
            except Unsatisfiable:
                # No parameter to get wrong (e.g. GET /healthz): nothing negative to send.
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue
            except Exception as exc:
                exc.add_note(f"operation: {operation.label} ({mode.value} data)")
                raise
            tried.append(operation.label)
    assert len(tried) >= len(operations)
