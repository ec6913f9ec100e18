"""Quotas without processes: the token bucket, limit resolution, and spend reconciliation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from auth import Principal
from gateway.config import QuotaConfig
from gateway.mcp.quotas import Quotas, TokenBucket
from gateway.tracking.pricing import Pricing, arguments_text, count_tokens
from gateway.tracking.records import ToolCalled


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(calls_per_minute=60, capacity=2, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == 1.0          # one token per second
    assert bucket.take(0.5) == 0.5
    assert bucket.take(1.0) == 0
    assert bucket.recent() == 3
    assert bucket.take(61.0) == 0 and bucket.recent() == 1


def _principal(user: str, tenant: str, role: str = "member") -> Principal:
    return Principal(user_id=user, tenant_id=tenant, role=role, token_kind="jwt_hs")  # type: ignore[arg-type]


def test_limits_resolve_role_then_tenant_override() -> None:
    config = QuotaConfig.model_validate({
        "tenant_daily_budget": 10,
        "roles": {"member": {"calls_per_minute": 30, "daily_budget": 1}},
        "tenants": {"big": {"tenant_daily_budget": 100, "roles": {"member": {"daily_budget": 5}}}}})
    quotas = Quotas(config, Pricing())
    small = quotas.limits_for("small", "member")
    assert (small.calls_per_minute, small.burst, small.user_daily_budget, small.tenant_daily_budget) == \
        (30, 30, Decimal("1"), Decimal("10"))
    big = quotas.limits_for("big", "member")
    assert (big.calls_per_minute, big.user_daily_budget, big.tenant_daily_budget) == (30, Decimal("5"), Decimal("100"))
    admin = quotas.limits_for("small", "admin")
    assert (admin.calls_per_minute, admin.user_daily_budget, admin.tenant_daily_budget) == (None, None, Decimal("10"))


def _call(tenant: str, user: str) -> ToolCalled:
    return ToolCalled(id=uuid.uuid4(), session_id=uuid.uuid4(), session_key="k", tenant_id=tenant, user_id=user,
                      tool_name="echo", status="success", error_message=None, duration_ms=1.0,
                      at=datetime.now(UTC), client_type=None, arguments={"text": "hello"}, result_text="hello")


def test_local_spend_counts_until_the_database_has_it() -> None:
    config = QuotaConfig.model_validate({"roles": {"member": {"daily_budget": 0.025}}})
    quotas = Quotas(config, Pricing(call_price=Decimal("0.01"), input_price_per_mtok=Decimal(0),
                                    output_price_per_mtok=Decimal(0)))
    alice = _principal("alice", "acme")
    calls = [_call("acme", "alice") for _ in range(3)]
    for call in calls[:2]:
        assert quotas.check(alice) is None
        quotas.on_recorded(call)
    assert call.prompt_tokens is not None and call.completion_tokens is not None  # the writer reuses them
    assert quotas.spent("acme", "alice") == (Decimal("0.02"), Decimal("0.02"))
    assert quotas.check(alice) is None
    quotas.on_recorded(calls[2])
    refused = quotas.check(alice)
    assert refused is not None and refused[1]["limit"] == "user_daily_budget" and refused[1]["current"] == 0.03
    # A refresh saw two of them in the database: database figure + the one still pending, nothing twice.
    quotas._db_day = datetime.now(UTC).date()
    quotas._db_user = {("acme", "alice"): Decimal("0.02")}
    quotas._db_tenant = {"acme": Decimal("0.02")}
    quotas._confirmed({calls[0].id, calls[1].id})
    assert quotas.spent("acme", "alice") == (Decimal("0.03"), Decimal("0.03"))
    assert quotas.spent("acme", "bob") == (Decimal(0), Decimal("0.03"))


def test_prices_held_by_calls_in_flight_count_against_the_budget_until_released() -> None:
    config = QuotaConfig.model_validate({"roles": {"member": {"daily_budget": 3}}, "tenant_daily_budget": 4})
    quotas = Quotas(config, Pricing(call_price=Decimal("1"), input_price_per_mtok=Decimal(0),
                                    output_price_per_mtok=Decimal(0)))
    alice, bob = _principal("alice", "acme"), _principal("bob", "acme")
    price = quotas.price_of("echo", {"text": "hi"})
    assert price == Decimal("1")
    held = [quotas.admit(alice, price) for _ in range(5)]
    assert [refused is None for refused, _ in held] == [True, True, True, False, False]
    refused = held[3][0]
    assert refused is not None and refused[1]["limit"] == "user_daily_budget" and refused[1]["current"] == 3.0
    # The tenant's budget sees alice's held prices too: bob gets one call of the tenant's 4.
    assert quotas.admit(bob, price)[0] is None
    assert quotas.admit(bob, price)[0][1]["limit"] == "tenant_daily_budget"  # type: ignore[index]
    # A call that ends releases its hold; its cost (if it ran) arrives through its record.
    quotas.release(held[0][1])
    quotas.release(held[1][1])
    assert quotas.reserved("acme", "alice", datetime.now(UTC).date()) == (Decimal("1"), Decimal("2"))
    quotas.on_recorded(_call("acme", "alice"))  # one of them ran and cost $1
    assert quotas.admit(alice, price)[0] is None  # spent 1 + held 1 < 3
    assert quotas.admit(alice, price)[0] is not None  # spent 1 + held 2 = 3


def test_a_budgeted_calls_arguments_are_tokenized_once_unless_they_changed(monkeypatch: Any) -> None:
    """Priced before the call and recorded after it: one count for the same, unchanged arguments (each
    count is ~30 us on a loaded server); changed arguments are counted again, as recorded."""
    import gateway.mcp.quotas as quotas_module

    counted: list[str] = []

    def counting(text: str | None) -> int:
        counted.append(text or "")
        return count_tokens(text)

    monkeypatch.setattr(quotas_module, "count_tokens", counting)
    quotas = Quotas(QuotaConfig.model_validate({"roles": {"member": {"daily_budget": 10}}}), Pricing())
    call = _call("acme", "alice")
    call.arguments = {"text": "hello there, how are you"}
    price = quotas.price_of("echo", call.arguments)
    assert price == Pricing().cost("echo", 0, count_tokens(arguments_text(call.arguments)))
    quotas.on_recorded(call)
    assert call.completion_tokens == count_tokens(arguments_text(call.arguments))
    assert counted == ['{"text":"hello there, how are you"}', "hello"]  # arguments once, then the result

    counted.clear()
    changed = _call("acme", "alice")
    changed.arguments = {"text": "first"}
    quotas.price_of("echo", changed.arguments)
    changed.arguments["text"] = "changed while the call ran"
    quotas.on_recorded(changed)
    assert changed.completion_tokens == count_tokens('{"text":"changed while the call ran"}')
    assert counted[-2] == '{"text":"changed while the call ran"}'
    assert quotas._argument_tokens == {}  # nothing kept once recorded
