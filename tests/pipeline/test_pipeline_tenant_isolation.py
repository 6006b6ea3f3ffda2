"""One tenant's bad requests leave another tenant's service unchanged (issue 10, item 3).

A real worker serves three digits tiers and a chat tier on a local server
speaking OpenAI's protocol (one that, like Anthropic's endpoint, refuses an
assistant prefill with a 400).  Tenant `good` sends a fixed workload alone,
then again while tenant `evil` floods every tier with requests that each tier
rejects: chat messages sent to the digits tiers, and prefilled chats that the
upstream answers with 400 `assistant_prefill_not_supported`.  Those errors are
the request's fault (`bad_request`), so no circuit may open and good's answers
must be the same, tier for tier and label for label, as without the flood.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas.events import Request, Response
from streams.adapters.digits import digits_holdout
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config
from tests.fakes import FakeOpenAIServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

GOOD_DIGITS = 60
GOOD_CHATS = 20
EVIL_DIGITS_FLOOD = 300  # chat messages at the digits tiers, each rejected by all three
EVIL_PREFILL_FLOOD = 60  # prefilled chats: a 400 from the upstream each
WAVES = 5
# A breaker that opens on 20 failures at 50% in 10 s: the flood is far above that.
CIRCUIT = {"window_s": 10, "min_calls": 20, "failure_rate": 0.5, "open_s": 5}


def digits_tier(name: str, model: str, min_confidence: float, cache_dir: Path) -> dict[str, Any]:
    return {
        "name": name,
        "adapter": {"kind": "digits", "model": model, "cache_dir": str(cache_dir)},
        "price": {"per_call_usd": 0.001},
        # Generous: the shared machine must not turn this into a latency test.
        "timeout_ms": 10_000,
        "max_in_flight": 100,
        "accept": {"min_confidence": min_confidence},
        "circuit": CIRCUIT,
    }


def good_workload(run: str) -> list[Request]:
    features, _ = digits_holdout()
    requests = [
        Request(
            request_id=f"good-{run}-digits-{index}",
            tenant="good",
            input={"features": features[index]},
            tags=["digits"],
        )
        for index in range(GOOD_DIGITS)
    ]
    requests += [
        Request(
            request_id=f"good-{run}-chat-{index}",
            tenant="good",
            input={"messages": [{"role": "user", "content": f"Question {index}?"}]},
            tags=["chat"],
        )
        for index in range(GOOD_CHATS)
    ]
    return requests


def evil_flood() -> list[Request]:
    chat = [{"role": "user", "content": "Ignore the features, tell me a joke."}]
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure,"}]
    flood = [
        Request(
            request_id=f"evil-digits-{i}", tenant="evil", input={"messages": chat}, tags=["digits"]
        )
        for i in range(EVIL_DIGITS_FLOOD)
    ]
    flood += [
        Request(
            request_id=f"evil-chat-{i}", tenant="evil", input={"messages": prefill}, tags=["chat"]
        )
        for i in range(EVIL_PREFILL_FLOOD)
    ]
    return flood


def served(response: Response) -> tuple[str, str | None, Any]:
    """What the caller got, without ids and timings."""
    return response.status, response.served_by, response.output


async def test_a_flood_of_bad_requests_leaves_other_tenants_unchanged(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    with FakeOpenAIServer(reply="Forty-two.", supports_prefill=False) as upstream:
        chat_tier = {
            "name": "chat",
            "adapter": {"kind": "openai_chat", "base_url": upstream.base_url, "model": "fake"},
            "price": {"per_call_usd": 0.001},
            "timeout_ms": 10_000,
            "max_in_flight": 50,
            "default_confidence": 0.9,
            "accept": {"min_confidence": 0.5},
            "circuit": CIRCUIT,
        }
        config = pipeline_config(
            broker,
            tmp_path,
            [
                chat_tier,
                digits_tier("primary", "forest", 0.55, models),
                digits_tier("backup", "logistic", 0.8, models),
                digits_tier("local", "naive_bayes", 0.0, models),
            ],
            analytics={"enabled": False},
            policy={
                "rules": [
                    {"name": "chat", "tags": ["chat"], "allow_tiers": ["chat"]},
                    {"name": "digits", "tags": ["digits"], "deny_tiers": ["chat"]},
                ]
            },
        )
        async with harness_for(config, tmp_path) as pipeline:
            # 1. Good alone: the baseline.
            alone = await pipeline.ask_many(good_workload("alone"), timeout_s=120)
            assert all(r.status == "served" for r in alone)
            served_by = {r.served_by for r in alone}
            assert {"chat", "primary"} <= served_by, served_by

            # 2. The same workload while evil floods every tier with bad requests, in
            # waves: each wave's verdicts are in before the next good requests are
            # routed, so a breaker that counted them would be open by then.
            flood, workload = evil_flood(), good_workload("flood")
            during: list[Response] = []
            evil: list[Response] = []
            for wave in range(WAVES):
                evil_wave = flood[wave::WAVES]
                good_wave = workload[wave::WAVES]
                evil_waiters = [await pipeline.send(r) for r in evil_wave]
                good_waiters = [await pipeline.send(r) for r in good_wave]
                await pipeline.client.producer.flush()
                evil += await asyncio.wait_for(asyncio.gather(*evil_waiters), 120)
                during += await asyncio.wait_for(asyncio.gather(*good_waiters), 120)
            order = {r.request_id: index for index, r in enumerate(workload)}
            during.sort(key=lambda r: order[r.request_id])

            changed = sum(served(a) != served(b) for a, b in zip(alone, during, strict=True))
            opened = pipeline.worker.get("/stats/")["circuits"]
            print(
                f"tenant isolation: good {len(during)} requests, {changed} answered differently "
                f"under a flood of {len(evil)} bad requests; circuits opened "
                f"{sum(state['times_opened'] for state in opened.values())} times"
            )
            assert [served(r) for r in during] == [served(r) for r in alone]
            # Evil's requests were refused on every tier they reached, as bad requests.
            assert all(r.status == "unavailable" for r in evil)
            bad = {a.trigger.value for r in evil for a in r.attempts if a.called and a.trigger}
            assert bad == {"bad_request"}, bad
            assert upstream.request_count >= EVIL_PREFILL_FLOOD + 2 * GOOD_CHATS

            circuits = pipeline.worker.get("/circuits/")
            assert {name: state["state"] for name, state in circuits.items()} == {
                "chat": "closed",
                "primary": "closed",
                "backup": "closed",
                "local": "closed",
            }
            assert all(state["times_opened"] == 0 for state in opened.values()), opened
