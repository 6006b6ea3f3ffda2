"""Run one worker: declare topics, prepare models and analytics, start Faust,
and say so in one line once it serves."""

from __future__ import annotations

import asyncio
import gc
import logging

import faust

from streams.app import build_app
from streams.config import FallbackConfig
from streams.kafka.client_options import kafka_client_options
from streams.kafka.cluster import broker_is_embedded
from streams.kafka.topics import TopicNames
from streams.observability import tracing
from topics.declare import declare_topics
from topics.generations import generation_specs

log = logging.getLogger(__name__)

#: the ready line starts with this (bench/startup.py looks for it)
READY_LINE_PREFIX = "fallback worker ready:"


def prepare_broker(config: FallbackConfig) -> bool:
    """Declare the topics; True if the broker is the embedded one (`fallback broker`)."""
    options = kafka_client_options(config.kafka)

    async def prepare() -> bool:
        embedded = await broker_is_embedded(options)
        names = TopicNames.for_config(config, embedded)
        if names.generation is None:
            await declare_topics(names.base.specs, options)
        else:
            # This generation and the next (read from the start), and the plain
            # topics: they share the partitions out (StageConsumer.membership),
            # and callers that know nothing of generations produce to them.
            generations = {names.generation, names.generation + 1}
            plain = [spec for spec in names.base.specs if spec.rotates]
            specs = [*plain, *generation_specs(names.base, generations)]
            await declare_topics(specs, options)
        return embedded

    return asyncio.run(prepare())


def ready_line(config: FallbackConfig, embedded_broker: bool, web_url: str) -> str:
    """What a user needs to see once: where it connects, where to look, what it serves."""
    kafka = config.kafka
    broker = f"{kafka.bootstrap_servers}{' (embedded)' if embedded_broker else ''}"
    period = kafka.rotation_period(embedded_broker)
    if period is not None:
        broker += f", topics rotate every {period:g} s"
    tiers = " > ".join(tier.name for tier in config.tiers)
    return f"{READY_LINE_PREFIX} broker {broker}, web {web_url}, tiers {tiers}"


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal spinner.  The spinner handler also sets
    the root logger to DEBUG, so every aiokafka debug call built a log record
    that was then thrown away: measurable CPU per event."""

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        logger.setLevel(level)


def run_worker(config: FallbackConfig, loglevel: str = "warning") -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM)."""
    embedded_broker = prepare_broker(config)
    if embedded_broker and config.kafka.rotation_period(embedded_broker) is None:
        log.warning(
            "kafka.topic_rotation_s is 0: the embedded broker slows with every batch it "
            "stores (at 200 req/s p99 went past 1 s within 2 minutes); see the README's Limits"
        )
    tracing.configure_from_env()  # off unless OTEL_TRACES_EXPORTER is set
    fallback = build_app(config, embedded_broker=embedded_broker)
    web_url = f"http://{config.worker.web_host}:{config.worker.web_port}/"
    # Printed, not logged: it must show at every log level, once.
    fallback.app.on_ready = lambda: print(ready_line(config, embedded_broker, web_url), flush=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = QuietWorker(
        fallback.app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    tune_garbage_collector()
    worker.execute_from_commandline()


def tune_garbage_collector() -> None:
    """Every request allocates many short-lived objects (events, futures, records),
    so at CPython's default gen-0 threshold of 700 the collector ran all the time,
    and each full pass walked everything start-up loaded (Faust, pydantic, models).
    Freeze the start-up heap and collect less often: 6-10% more served req/s in
    four paired runs here.  Almost everything is freed by reference counting anyway."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
