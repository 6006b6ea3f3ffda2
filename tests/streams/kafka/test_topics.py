"""The names producers use now, and where a response goes (`TopicNames`)."""

from __future__ import annotations

from streams.kafka.topics import TopicNames
from topics.catalog import RetentionHours, topic_catalog

CATALOG = topic_catalog(
    prefix="p.", tiers=["big"], partitions=2, replication_factor=1, retention=RetentionHours()
)


def test_with_rotation_a_request_on_a_plain_name_is_answered_on_the_plain_name() -> None:
    names = TopicNames(CATALOG, 10.0)
    assert names.reply_topic("p.requests") == "p.responses"
    # From a generation: the current responses topic (None: the producer's default).
    assert names.reply_topic("p.requests.g7") is None


def test_without_rotation_every_response_goes_to_the_one_responses_topic() -> None:
    names = TopicNames(CATALOG, None)
    assert names.current is CATALOG
    assert names.reply_topic("p.requests") is None
