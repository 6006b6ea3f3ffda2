from __future__ import annotations

import asyncio

import pytest

from streams.config import parse_config
from streams.kafka.client_options import kafka_client_options
from streams.kafka.topics import pipeline_topics
from streams.ops.broker import EmbeddedBroker
from topics.declare import declare_topics


def config_for(prefix: str, bootstrap: str | None = None) -> object:
    return parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 3},
            "worker": {"app_id": f"app-{prefix.strip('.')}"},
            "tiers": [
                {"name": "primary", "adapter": {"kind": "digits", "model": "forest"}},
                {"name": "local", "adapter": {"kind": "digits", "model": "naive_bayes"}},
            ],
        }
    )


def test_every_topic_name_comes_from_the_prefix_and_tiers() -> None:
    catalog = pipeline_topics(config_for("acme."))  # type: ignore[arg-type]
    assert catalog.requests == "acme.requests" and catalog.responses == "acme.responses"
    assert catalog.tier("local") == "acme.tier.local"
    assert catalog.attempts("primary") == "acme.attempts.primary"
    names = [spec.name for spec in catalog.specs]
    assert len(names) == len(set(names)) == 9
    assert catalog.spend == "acme.spend"
    assert not any("changelog" in name for name in names)  # no Faust table any more
    assert {s.partitions for s in catalog.specs if "spend" not in s.name} == {3}


@pytest.mark.asyncio(loop_scope="session")
async def test_declare_creates_topics_with_explicit_partitions(broker: EmbeddedBroker) -> None:
    config = config_for("declared.", broker.bootstrap_servers)
    catalog = pipeline_topics(config)  # type: ignore[arg-type]
    options = kafka_client_options(config.kafka)  # type: ignore[attr-defined]
    partitions = await declare_topics(catalog.specs, options)
    assert partitions[catalog.requests] == 3 and partitions[catalog.spend] == 1
    again = await asyncio.wait_for(declare_topics(catalog.specs, options), 30)
    assert again == partitions  # declaring twice changes nothing
