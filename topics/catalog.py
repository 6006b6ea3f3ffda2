"""Every topic of the pipeline, derived from the config.  Agents never format names."""

from __future__ import annotations

from dataclasses import dataclass

from streams.config import FallbackConfig

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    purpose: str
    compacted: bool = False


@dataclass(frozen=True)
class TopicCatalog:
    """Names under `kafka.topic_prefix`: requests, tier.<name>, attempts.<name>,
    verdicts, responses, dlq."""

    requests: str
    responses: str
    verdicts: str
    dlq: str
    spend: str
    spend_changelog: str
    tier_topics: dict[str, str]
    attempt_topics: dict[str, str]
    specs: tuple[TopicSpec, ...]

    def tier(self, name: str) -> str:
        return self.tier_topics[name]

    def attempts(self, name: str) -> str:
        return self.attempt_topics[name]


SPEND_TABLE = "tenant_spend"


def spend_changelog_topic(config: FallbackConfig) -> str:
    """Faust names a table's changelog `<app id>-<table>-changelog`."""
    return f"{config.worker.app_id}-{SPEND_TABLE}-changelog"


def topic_catalog(config: FallbackConfig) -> TopicCatalog:
    kafka = config.kafka
    prefix = kafka.topic_prefix
    retention = kafka.retention

    def spec(name: str, hours: float, purpose: str) -> TopicSpec:
        return TopicSpec(
            name=prefix + name,
            partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
            retention_ms=int(hours * HOUR_MS),
            purpose=purpose,
        )

    specs = [
        spec("requests", retention.requests_hours, "callers' requests (JSON)"),
        spec("responses", retention.responses_hours, "one final response per request (JSON)"),
        spec("verdicts", retention.internal_hours, "one verdict per attempt (Avro)"),
        spec("dlq", retention.dlq_hours, "events no stage could process, with the reason"),
        # One partition: the budget table is a Faust GlobalTable whose changelog
        # partition follows the spend event's partition (see streams/spend_table.py).
        TopicSpec(
            name=prefix + "spend",
            partitions=1,
            replication_factor=kafka.replication_factor,
            retention_ms=int(retention.internal_hours * HOUR_MS),
            purpose="charged attempts keyed by tenant (Avro)",
        ),
        TopicSpec(
            name=spend_changelog_topic(config),
            partitions=1,
            replication_factor=kafka.replication_factor,
            retention_ms=-1,
            purpose="Faust changelog of the tenant spend table",
            compacted=True,
        ),
    ]
    for tier in config.tiers:
        specs.append(
            spec(f"tier.{tier.name}", retention.internal_hours, f"requests for {tier.name}")
        )
        specs.append(
            spec(f"attempts.{tier.name}", retention.internal_hours, f"answers of {tier.name}")
        )
    return TopicCatalog(
        requests=prefix + "requests",
        responses=prefix + "responses",
        verdicts=prefix + "verdicts",
        dlq=prefix + "dlq",
        spend=prefix + "spend",
        spend_changelog=spend_changelog_topic(config),
        tier_topics={t.name: f"{prefix}tier.{t.name}" for t in config.tiers},
        attempt_topics={t.name: f"{prefix}attempts.{t.name}" for t in config.tiers},
        specs=tuple(specs),
    )
