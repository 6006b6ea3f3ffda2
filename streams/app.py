"""The front door: `build_app(config)` builds the Faust app and everything its stages use.

The stages and their topics: streams/stages/topology.py.  Every stage is run
by `StageConsumer` (batches through one consumer; streams/kafka/stage_consumer.py
says why).  Tenant spend is a replicated table every worker folds from the
`spend` topic (streams/state/tenant_spend.py).  Faust runs the worker around
them: lifecycle and signals, the producer and the web pages; its own Kafka
consumer is switched off (`PipelineBoot`).

Nothing else in the project constructs Kafka clients for the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.app import BootStrategy

from schemas.events import Spend
from streams.adapters.registry import build_adapter
from streams.config import FallbackConfig
from streams.evaluation.circuit import CircuitBreaker
from streams.evaluation.quality import prepare_quality_checks
from streams.evaluation.safety import SafetyScorer
from streams.kafka.client_options import faust_credentials, kafka_client_options
from streams.kafka.publisher import Publisher
from streams.kafka.rotation import TopicRotation
from streams.kafka.stage_consumer import StageConsumer
from streams.kafka.topics import TopicNames
from streams.stages.context import Pipeline
from streams.stages.topology import pipeline_stages, settle_failed_record
from streams.state.recent_keys import RecentKeys
from streams.state.tenant_spend import SpendTable, TenantSpend, build_spend_table
from streams.web.pages import register_pages
from topics.catalog import TopicCatalog

log = logging.getLogger(__name__)

#: per partition; with aiokafka's 16 KiB default a full batch made the stages
#: wait for the one produce request in flight to the broker
PRODUCER_MAX_BATCH_BYTES = 512 * 1024
#: short: each stage's output waits this long for company; load fills batches anyway
WORKER_PRODUCER_LINGER_MS = 2
#: how often start-up looks whether the stage consumer got its partitions yet
ASSIGNMENT_POLL_S = 0.02


class PipelineBoot(BootStrategy):
    """Faust without its Kafka consumer: no group, no tables, no agents to join.
    The producer and the web server start as usual."""

    enable_kafka_consumer = False


class PipelineFaustApp(faust.App):
    """Faust app that starts the spend table and opens the pipeline's resources
    first, starts the stage consumer once everything else runs (producer up,
    table caught up), calls `on_ready` once the stages hold partitions, and
    closes the resources last (so the sink's last batch is written)."""

    BootStrategy = PipelineBoot

    pipeline: Pipeline | None = None
    spend_table: SpendTable | None = None
    stage_consumer: StageConsumer | None = None
    rotation: TopicRotation | None = None
    on_ready: Callable[[], None] | None = None

    async def on_start(self) -> None:
        await super().on_start()
        if self.spend_table is not None:
            # First: it reads while the models warm up and the producer starts.
            self.add_dependency(self.spend_table)
            await self.spend_table.maybe_start()
        if self.pipeline is not None:
            await self.pipeline.open()

    async def on_started(self) -> None:
        await super().on_started()
        if self.spend_table is not None and not self.should_stop:
            # Budgets must see every worker's spend before the first request is routed.
            await self.spend_table.wait_caught_up()
        if self.rotation is not None and not self.should_stop:
            # Before the stage consumer: it sets which topic generations it reads.
            await self.add_runtime_dependency(self.rotation)
        if self.stage_consumer is not None and not self.should_stop:
            # Added last, so stopped first: its final commit still has the producer.
            await self.add_runtime_dependency(self.stage_consumer)
            self.add_future(self._announce_ready(self.stage_consumer))

    async def _announce_ready(self, stages: StageConsumer) -> None:
        while not stages.assignment():
            await asyncio.sleep(ASSIGNMENT_POLL_S)
        if self.on_ready is not None:
            self.on_ready()

    async def on_shutdown(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()
        await super().on_shutdown()


@dataclass
class FallbackApp:
    app: PipelineFaustApp
    pipeline: Pipeline
    topics: TopicCatalog


def build_app(config: FallbackConfig, embedded_broker: bool = False) -> FallbackApp:
    """`embedded_broker`: the broker is the one `fallback broker` runs (shorter
    group timings and topic rotation by default, see `KafkaConfig`)."""
    check_startable(config)
    app = PipelineFaustApp(config.worker.app_id, **faust_settings(config))
    Path(app.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
    names = TopicNames.for_config(config, embedded_broker)
    catalog = names.base
    publisher = Publisher(
        producer=app.producer,
        names=names,
        response_format=config.worker.response_format,
        max_record_bytes=app.conf.producer_max_request_size,
    )
    spend = tenant_spend(config, publisher)
    pipeline = Pipeline(
        config=config,
        publisher=publisher,
        adapters={tier.name: build_adapter(tier) for tier in config.tiers},
        circuits={tier.name: CircuitBreaker.for_tier(tier) for tier in config.tiers},
        safety=safety_scorer(config),
        spend=spend,
        seen_requests=RecentKeys(config.worker.dedupe_window_s),
        seen_attempts=RecentKeys(config.worker.dedupe_window_s),
    )
    stage_consumer = StageConsumer(
        stages=pipeline_stages(pipeline),
        consumer_options=stage_consumer_options(config, embedded_broker),
        producer=app.producer,
        delivery_problem=publisher.delivery_problem,
        on_error=partial(settle_failed_record, pipeline),
        before_commit=spend.publish,
        after_batch=spend.publish_when_due,
        commit_interval_s=config.kafka.commit_interval_s,
        rebalance_timeout_s=config.kafka.rebalance_timeout_s,
        max_queued_records=config.worker.max_queued_records,
        stuck_after_s=config.worker.stuck_after_s,
        shutdown_grace_s=config.worker.shutdown_grace_s,
        membership_group=(None if names.period_s is None else f"{stage_group_id(config)}-members"),
    )
    app.pipeline, app.spend_table, app.stage_consumer = pipeline, spend.table, stage_consumer
    if names.period_s is not None:
        app.rotation = TopicRotation(
            names=names,
            publisher=publisher,
            stage_consumer=stage_consumer,
            client_options={
                **kafka_client_options(config.kafka),
                "client_id": f"{config.worker.app_id}-rotation",
            },
            group_id=stage_group_id(config),
        )
    register_pages(app, pipeline, stage_consumer)
    return FallbackApp(app=app, pipeline=pipeline, topics=catalog)


def check_startable(config: FallbackConfig) -> None:
    """What must fail at start-up, naming the problem, rather than on the first event."""
    if config.kafka.bootstrap_servers is None:
        raise ValueError("kafka.bootstrap_servers is not set (start the embedded broker first)")
    for tier in config.tiers:
        prepare_quality_checks(tier.accept.quality)  # a bad schema/callable fails start-up


def faust_settings(config: FallbackConfig) -> dict[str, Any]:
    """Faust runs the producer, the web server and the lifecycle; its consumer
    is off (`PipelineBoot`), so no consumer or group setting belongs here."""
    kafka, worker = config.kafka, config.worker
    assert kafka.bootstrap_servers is not None  # check_startable
    return {
        "broker": ";".join(f"kafka://{s.strip()}" for s in kafka.bootstrap_servers.split(",")),
        "broker_credentials": faust_credentials(kafka),
        "store": "memory://",
        "datadir": str(Path(worker.data_dir) / "faust" / worker.app_id),
        "autodiscover": False,
        "topic_allow_declare": False,  # topics.declare creates them, with explicit partitions
        "producer_linger": WORKER_PRODUCER_LINGER_MS / 1000,
        "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "web_enabled": True,
        "web_bind": worker.web_host,
        "web_host": worker.web_host,
        "web_port": worker.web_port,
        "web_in_thread": False,
    }


def tenant_spend(config: FallbackConfig, publisher: Publisher) -> TenantSpend:
    """This worker's charges, published to the spend topic, and the table every
    worker reads from it."""
    topic = publisher.topics.spend
    table = build_spend_table(
        topic,
        config.budgets,
        config.worker.dedupe_window_s,
        {**kafka_client_options(config.kafka), "client_id": f"{config.worker.app_id}-spend"},
    )

    async def send(spend: Spend) -> None:
        await publisher.enqueue_avro(topic, spend.tenant, spend)

    return TenantSpend(config.budgets, send, table)


def stage_consumer_options(config: FallbackConfig, embedded_broker: bool) -> dict[str, Any]:
    """The stage consumer's aiokafka options: the worker's one consumer group."""
    kafka = config.kafka
    timings = kafka.group_timings(embedded_broker)
    return {
        **kafka_client_options(kafka),
        "group_id": stage_group_id(config),
        "client_id": f"{config.worker.app_id}-stages",
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        "max_partition_fetch_bytes": kafka.max_partition_fetch_bytes,
        "session_timeout_ms": int(timings.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(timings.heartbeat_interval_s * 1000),
        "rebalance_timeout_ms": int(kafka.rebalance_timeout_s * 1000),
        "max_poll_interval_ms": max(int(kafka.rebalance_timeout_s * 1000), 300_000),
    }


def safety_scorer(config: FallbackConfig) -> SafetyScorer:
    """Load the profanity classifier only if a tier or the input policy uses it:
    importing it (scikit-learn) and unpickling its model took 2-15 s of start-up."""
    used = config.policy.input_safety or any(tier.accept.safety for tier in config.tiers)
    safety = config.safety if used else config.safety.model_copy(update={"classifier": False})
    return SafetyScorer(safety, config.policy.deny_patterns)


def stage_group_id(config: FallbackConfig) -> str:
    """The stage consumer's group, the worker's only consumer group."""
    return f"{config.worker.app_id}-pipeline"
