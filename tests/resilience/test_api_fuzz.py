"""Fuzz the REST API from its own OpenAPI document (schemathesis): whatever arrives, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from fastmcp import Client
from schemathesis import GenerationMode

from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase

TOOLS = ("serve", "--tools", "tests.sample_tools:mcp")
EXAMPLES = 20  # per operation and mode: bounded, the whole test stays well under a minute


@pytest.mark.parametrize("role", ["admin", "member"])
async def test_rest_api_never_answers_5xx(database: TestDatabase, tmp_path: Path, role: str) -> None:
    with running_gateway(database, tmp_path, args=TOOLS) as gateway:
        token = make_jwt("fuzzer", "acme", role)
        async with Client(gateway.mcp_url, auth=token, mode="legacy") as client:  # something to find
            await client.call_tool("echo", {"text": "seed"})
            await client.call_tool("explode", {}, raise_on_error=False)
        headers = {"Authorization": f"Bearer {token}"}
        document = httpx.get(gateway.base_url + "/api/openapi.json", headers=headers, timeout=10)
        assert document.status_code == 200, document.text[:500]
        schema = schemathesis.openapi.from_dict(document.json())
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 5, [op.label for op in operations]
        failures: list[str] = []
        calls = 0
        statuses: dict[int, int] = {}

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                                     suppress_health_check=list(hypothesis.HealthCheck))
                @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
                def probe(case: schemathesis.Case) -> None:
                    nonlocal calls
                    calls += 1
                    try:
                        response = case.call(base_url=gateway.base_url, headers=headers, timeout=15)
                    except Exception as exc:  # a transport failure is a server failure too
                        failures.append(f"{case.method} {case.formatted_path}: {type(exc).__name__}: {exc}")
                        return
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code >= 500:
                        failures.append(f"{response.status_code} for {case.as_curl_command(headers={})}"
                                        f" -> {response.text[:200]}")

                probe()
        print(f"fuzz {role}: {calls} requests over {len(operations)} operations, statuses {sorted(statuses.items())}")
        assert calls >= len(operations) * 2
        assert set(statuses) - {401, 404}, "every request was turned away before reaching an endpoint"
        assert not failures, "\n".join(failures[:10]) + "\n" + gateway.log()[-2000:]
