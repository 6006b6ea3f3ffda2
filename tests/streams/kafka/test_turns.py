"""Turns: record handling gives the event loop back every few milliseconds."""

from __future__ import annotations

import asyncio
import time

from streams.kafka.turns import Turns


def busy(seconds: float) -> None:
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        pass


async def test_other_work_runs_between_turns_while_many_callers_are_ready() -> None:
    """100 callers of 1 ms each, ready at once: without turns they ran in one
    loop iteration; with a 5 ms budget an other task (here a probe standing in
    for the web server) gets the loop after every few of them."""
    turns = Turns(budget_s=0.005)
    finished = 0

    async def caller() -> None:
        nonlocal finished
        await turns.take()
        busy(0.001)
        finished += 1

    seen_per_step: list[int] = []

    async def probe() -> None:
        last = 0
        while finished < 100:
            await asyncio.sleep(0)
            seen_per_step.append(finished - last)
            last = finished

    await asyncio.gather(probe(), *(caller() for _ in range(100)))
    assert finished == 100
    assert max(seen_per_step) <= 20, seen_per_step  # 100 in one step without turns


async def test_queued_callers_go_in_order_and_a_cancelled_one_is_skipped() -> None:
    turns = Turns(budget_s=0.005)
    turns.wake = 1  # one per turn: the order is all there is to see
    order: list[int] = []

    async def caller(n: int) -> None:
        await turns.take()
        order.append(n)
        busy(0.006)  # over the budget: the next caller waits for the next turn

    tasks = [asyncio.create_task(caller(n)) for n in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4]


async def test_a_caller_goes_on_at_once_while_the_turn_has_room() -> None:
    turns = Turns(budget_s=10.0)
    await turns.take()  # opens the first turn
    steps = 0

    async def count_steps() -> None:
        nonlocal steps
        while True:
            await asyncio.sleep(0)
            steps += 1

    counter = asyncio.create_task(count_steps())
    for _ in range(50):
        await turns.take()
    counter.cancel()
    assert steps == 0  # never suspended
