"""The front door: `build_app(config)` builds the Faust app and everything its stages use.

Topology (each arrow is a topic, keyed by request_id):

    requests ─▶ router ─▶ tier.<A> ─▶ tier stage A ─▶ attempts.<A> ─▶ evaluator A
                                                                  ├─▶ verdicts ─▶ sink
                                                                  ├─▶ tier.<B> (fallback / retry)
                                                                  └─▶ responses ─▶ callers, sink

Every stage above is run by `StageConsumer` (batches through one consumer;
streams/kafka/stage_consumer.py says why); Faust runs the worker around it and the
spend agent (`spend` topic → tenant spend GlobalTable).

Nothing else in the project constructs Kafka clients for the worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import faust
from faust.types import StreamT

from analytics.errors import AnalyticsError
from schemas.codec import register_faust_codecs
from schemas.errors import EventDecodeError
from streams.adapters.registry import build_adapter
from streams.config import FallbackConfig
from streams.evaluation.circuit import CircuitBreaker
from streams.evaluation.quality import prepare_quality_checks
from streams.evaluation.safety import SafetyScorer
from streams.kafka.client_options import faust_credentials, kafka_client_options
from streams.kafka.consumed_record import ConsumedRecord
from streams.kafka.faust_tuning import set_fetch_max_wait_ms
from streams.kafka.publisher import Publisher, PublishError
from streams.kafka.stage_consumer import ErrorOutcome, Stage, StageConsumer
from streams.kafka.topics import pipeline_topics
from streams.stages.call import call_tier
from streams.stages.context import Pipeline
from streams.stages.evaluate import evaluate_one
from streams.stages.route import route_one
from streams.stages.sink import sink_responses, sink_verdicts
from streams.state.recent_keys import RecentKeys
from streams.state.tenant_spend import TenantSpendLedger, build_spend_table, count_spend
from streams.web.pages import register_pages
from topics.catalog import TopicCatalog

log = logging.getLogger(__name__)

#: records a CPU-only stage (router, evaluator) may hold before its partitions pause
ROUTING_WINDOW = 500
#: per partition; with aiokafka's 16 KiB default a full batch made the stages
#: wait for the one produce request in flight to the broker
PRODUCER_MAX_BATCH_BYTES = 512 * 1024
#: short: each stage's output waits this long for company; load fills batches anyway
WORKER_PRODUCER_LINGER_MS = 2
#: fetch wait of Faust's own consumer (spend topic, spend table changelog)
SPEND_FETCH_MAX_WAIT_MS = 100


class PipelineFaustApp(faust.App):
    """Faust app that opens the pipeline's resources first, starts the stage
    consumer once everything else runs (producer up, spend table recovered),
    and closes the resources last (so the sink's last batch is written)."""

    pipeline: Pipeline | None = None
    stage_consumer: StageConsumer | None = None

    async def on_start(self) -> None:
        await super().on_start()
        if self.pipeline is not None:
            await self.pipeline.open()

    async def on_started(self) -> None:
        await super().on_started()
        if self.stage_consumer is not None and not self.should_stop:
            # Added last, so stopped first: its final commit still has the producer.
            await self.add_runtime_dependency(self.stage_consumer)

    async def on_shutdown(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()
        await super().on_shutdown()


@dataclass
class FallbackApp:
    app: PipelineFaustApp
    pipeline: Pipeline
    topics: TopicCatalog


def build_app(config: FallbackConfig) -> FallbackApp:
    kafka = config.kafka
    if kafka.bootstrap_servers is None:
        raise ValueError("kafka.bootstrap_servers is not set (start the embedded broker first)")
    register_faust_codecs()
    for tier in config.tiers:
        prepare_quality_checks(tier.accept.quality)  # a bad schema/callable fails start-up
    # Faust's consumer only reads the spend topic and the table's changelog: a
    # longer wait there costs no request latency and polls the broker 10x less.
    set_fetch_max_wait_ms(max(kafka.fetch_max_wait_ms, SPEND_FETCH_MAX_WAIT_MS))
    brokers = ";".join(f"kafka://{s.strip()}" for s in kafka.bootstrap_servers.split(","))
    app = PipelineFaustApp(
        config.worker.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        datadir=str(Path(config.worker.data_dir) / "faust" / config.worker.app_id),
        autodiscover=False,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=False,  # topics.declare creates them, with explicit partitions
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_request_timeout=max(kafka.session_timeout_s * 3, 30.0),
        broker_commit_interval=kafka.commit_interval_s,
        producer_linger=WORKER_PRODUCER_LINGER_MS / 1000,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        web_enabled=True,
        web_bind=config.worker.web_host,
        web_host=config.worker.web_host,
        web_port=config.worker.web_port,
        web_in_thread=False,
    )
    Path(app.conf.datadir).parent.mkdir(parents=True, exist_ok=True)
    catalog = pipeline_topics(config)
    pipeline = Pipeline(
        config=config,
        topics=catalog,
        publisher=Publisher(
            producer=app.producer, topics=catalog, response_format=config.worker.response_format
        ),
        adapters={tier.name: build_adapter(tier) for tier in config.tiers},
        circuits={
            tier.name: CircuitBreaker(tier.circuit, tier.accept.max_latency_ms)
            for tier in config.tiers
        },
        safety=SafetyScorer(config.safety, config.policy.deny_patterns),
        spend=TenantSpendLedger(config.budgets),
        seen_requests=RecentKeys(config.worker.dedupe_window_s),
        seen_attempts=RecentKeys(config.worker.dedupe_window_s),
    )

    app.pipeline = pipeline
    pipeline.spend_table = build_spend_table(app)

    async def on_error(record: ConsumedRecord, exc: Exception, stage: str) -> ErrorOutcome:
        if isinstance(exc, PublishError | AnalyticsError):
            # Outputs could not be delivered/written: leave the record un-finished
            # so a restart replays it, rather than dead-letter a good event.
            return ErrorOutcome.LEAVE_UNFINISHED
        await pipeline.publisher.dead_letter(
            record=record,
            reason=f"internal error: {type(exc).__name__}: {exc}",
            error_type=type(exc).__name__,
            stage=stage,
            request_id=None,
        )
        return ErrorOutcome.SETTLED

    stages = pipeline_stages(pipeline, catalog)
    app.stage_consumer = StageConsumer(
        stages=stages,
        consumer_options={
            **kafka_client_options(kafka),
            "group_id": stage_group_id(config),
            "client_id": f"{config.worker.app_id}-stages",
            "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
            "max_partition_fetch_bytes": kafka.max_partition_fetch_bytes,
            "session_timeout_ms": int(kafka.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(kafka.heartbeat_interval_s * 1000),
            "rebalance_timeout_ms": int(kafka.rebalance_timeout_s * 1000),
            "max_poll_interval_ms": max(int(kafka.rebalance_timeout_s * 1000), 300_000),
        },
        producer=app.producer,
        delivery_problem=pipeline.publisher.delivery_problem,
        on_error=on_error,
        before_commit=pipeline.publish_spend,
        after_batch=pipeline.publish_spend_when_due,
        commit_interval_s=kafka.commit_interval_s,
        rebalance_timeout_s=kafka.rebalance_timeout_s,
        max_queued_records=config.worker.max_queued_records,
        stuck_after_s=config.worker.stuck_after_s,
        shutdown_grace_s=config.worker.shutdown_grace_s,
    )

    async def spend_agent(stream: StreamT) -> None:
        async def dead_letter(record: ConsumedRecord, error: EventDecodeError) -> None:
            await pipeline.dead_letter_undecodable(record, error, "count_spend")

        seen = RecentKeys(config.worker.dedupe_window_s)
        await count_spend(pipeline.spend_table, config.budgets, stream, dead_letter, seen)

    spend_topic = app.topic(
        catalog.spend,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(spend_topic, name="count_spend")(spend_agent)
    register_pages(app, pipeline, app.stage_consumer)
    return FallbackApp(app=app, pipeline=pipeline, topics=catalog)


def stage_group_id(config: FallbackConfig) -> str:
    """The stage consumer's group (Faust's own group, `app_id`, reads the spend topic)."""
    return f"{config.worker.app_id}-pipeline"


def pipeline_stages(pipeline: Pipeline, catalog: TopicCatalog) -> list[Stage]:
    config = pipeline.config
    # Priorities: the further along a record is, the sooner it is handled.
    stages = [
        Stage(
            "route_requests",
            catalog.requests,
            partial(route_one, pipeline),
            ROUTING_WINDOW,
            entry=True,
        )
    ]
    for tier in config.tiers:
        stages.append(
            Stage(
                f"call_{tier.name}",
                catalog.tier(tier.name),
                partial(call_tier, pipeline, tier),
                tier.max_in_flight,
                concurrent=True,
                priority=1,
                in_pipeline=True,
            )
        )
        stages.append(
            Stage(
                f"evaluate_{tier.name}",
                catalog.attempts(tier.name),
                partial(evaluate_one, pipeline, tier),
                ROUTING_WINDOW,
                priority=2,
                in_pipeline=True,
            )
        )
    if config.analytics.enabled:
        # Rows wait for a batch write; let a few batches' worth be outstanding.
        window = max(config.analytics.batch_max_rows * 2, 1000)
        stages.append(
            Stage(
                "sink_verdicts",
                catalog.verdicts,
                partial(sink_verdicts, pipeline),
                window,
                priority=3,
            )
        )
        stages.append(
            Stage(
                "sink_responses",
                catalog.responses,
                partial(sink_responses, pipeline),
                window,
                priority=3,
            )
        )
    return stages
