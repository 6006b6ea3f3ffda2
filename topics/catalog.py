"""Every topic of the pipeline, derived from plain values (prefix, tiers, retention).

Stages never format topic names; `streams/kafka/topics.py` feeds the config in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    purpose: str
    compacted: bool = False
    #: renamed per generation when topic rotation is on (topics/generations.py)
    rotates: bool = False


@dataclass(frozen=True)
class TopicCatalog:
    """Names under `kafka.topic_prefix`: requests, tier.<name>, attempts.<name>,
    verdicts, responses, dlq, spend."""

    requests: str
    responses: str
    verdicts: str
    dlq: str
    spend: str
    tier_topics: dict[str, str]
    attempt_topics: dict[str, str]
    specs: tuple[TopicSpec, ...]

    def tier(self, name: str) -> str:
        return self.tier_topics[name]

    def attempts(self, name: str) -> str:
        return self.attempt_topics[name]


@dataclass(frozen=True)
class RetentionHours:
    """How long each kind of topic keeps its records."""

    requests: float = 168
    internal: float = 24
    responses: float = 168
    dlq: float = 720


def topic_catalog(
    *,
    prefix: str,
    tiers: Sequence[str],
    partitions: int,
    replication_factor: int,
    retention: RetentionHours,
) -> TopicCatalog:

    def spec(name: str, hours: float, purpose: str, rotates: bool = True) -> TopicSpec:
        return TopicSpec(
            name=prefix + name,
            partitions=partitions,
            replication_factor=replication_factor,
            retention_ms=int(hours * HOUR_MS),
            purpose=purpose,
            rotates=rotates,
        )

    specs = [
        spec("requests", retention.requests, "callers' requests (JSON)"),
        spec("responses", retention.responses, "one final response per request (JSON)"),
        spec("verdicts", retention.internal, "one verdict per attempt (Avro)"),
        # Not rotated: nothing in the pipeline reads it, so it never slows a fetch.
        spec("dlq", retention.dlq, "events no stage could process, with the reason", False),
        # One partition: every worker reads all of it into its tenant spend table
        # (streams/state/tenant_spend.py), and a worker sends only ~10 events/s.
        # Not rotated: budgets need its whole window.
        TopicSpec(
            name=prefix + "spend",
            partitions=1,
            replication_factor=replication_factor,
            retention_ms=int(retention.internal * HOUR_MS),
            purpose="charged attempts keyed by tenant (Avro)",
        ),
    ]
    for tier in tiers:
        specs.append(spec(f"tier.{tier}", retention.internal, f"requests for {tier}"))
        specs.append(spec(f"attempts.{tier}", retention.internal, f"answers of {tier}"))
    return TopicCatalog(
        requests=prefix + "requests",
        responses=prefix + "responses",
        verdicts=prefix + "verdicts",
        dlq=prefix + "dlq",
        spend=prefix + "spend",
        tier_topics={t: f"{prefix}tier.{t}" for t in tiers},
        attempt_topics={t: f"{prefix}attempts.{t}" for t in tiers},
        specs=tuple(specs),
    )
