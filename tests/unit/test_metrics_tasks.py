"""``bgplb_asyncio_tasks``: the tasks not done on the agent's loop, read at scrape time from
the worker thread /metrics renders in (the soak, bench/soak.py, watches it for leaks)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from bgplb.metrics import Metrics


def tasks(m: Metrics) -> float:
    for family in text_string_to_metric_families(m.exposition().decode()):
        if family.name == "bgplb_asyncio_tasks":
            return float(family.samples[0].value)
    raise AssertionError("bgplb_asyncio_tasks not exposed")


async def test_counts_the_loops_tasks_from_the_scrape_thread() -> None:
    m = Metrics()
    m.set_observed_source(None)  # Agent.start does this on the agent's loop
    before = await asyncio.to_thread(tasks, m)
    stop = asyncio.Event()
    extra = [asyncio.create_task(stop.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    assert await asyncio.to_thread(tasks, m) == before + 5
    stop.set()
    await asyncio.gather(*extra)
    assert await asyncio.to_thread(tasks, m) == before


def test_zero_before_the_agent_started() -> None:
    assert tasks(Metrics()) == 0.0
