"""Topic generation names and the schedule's arithmetic (pure)."""

from __future__ import annotations

from topics.catalog import RetentionHours, topic_catalog
from topics.generations import (
    READ_AFTER_CLOSE,
    catalog_at,
    existing_generations,
    generation_at,
    generation_specs,
    producing_generation,
    readable_generations,
    split_generation,
)

CATALOG = topic_catalog(
    prefix="p.",
    tiers=["big", "g7"],  # a tier named like a generation suffix
    partitions=2,
    replication_factor=1,
    retention=RetentionHours(),
)


def test_generation_is_the_clock_divided_by_the_period() -> None:
    assert generation_at(0.0, 10) == 0
    assert generation_at(19.99, 10) == 1
    assert generation_at(20.0, 10) == 2


def test_rotating_topics_get_the_generation_and_the_others_keep_their_names() -> None:
    at = catalog_at(CATALOG, 5)
    assert at.requests == "p.requests.g5"
    assert at.responses == "p.responses.g5"
    assert at.verdicts == "p.verdicts.g5"
    assert at.tier("g7") == "p.tier.g7.g5"
    assert at.attempts("big") == "p.attempts.big.g5"
    assert at.dlq == "p.dlq"  # nothing reads it in the pipeline: never rotated
    assert at.spend == "p.spend"  # budgets need its whole window
    assert catalog_at(CATALOG, None) is CATALOG


def test_a_generation_name_splits_back_and_a_plain_one_has_none() -> None:
    assert split_generation("p.tier.g7.g5") == ("p.tier.g7", 5)
    assert split_generation("p.requests") == ("p.requests", None)


def test_existing_generations_count_only_this_catalogs_topics() -> None:
    topics = {"p.requests.g3", "p.responses.g4", "q.requests.g9", "p.requests", "p.dlq"}
    assert existing_generations(CATALOG, topics) == {3, 4}


def test_each_rotating_topic_is_declared_per_generation_and_the_others_once() -> None:
    names = [spec.name for spec in generation_specs(CATALOG, {1, 2})]
    assert len(names) == len(set(names))
    assert names.count("p.dlq") == 1 and names.count("p.spend") == 1
    assert {"p.requests.g1", "p.requests.g2", "p.tier.g7.g1", "p.tier.g7.g2"} <= set(names)
    assert "p.requests" not in names


def test_producers_take_the_newest_generation_not_ahead_of_the_clock() -> None:
    assert producing_generation(5, {3, 4, 5, 6}) == 5
    assert producing_generation(5, {3, 4}) == 4  # the next one is late: stay
    assert producing_generation(5, {6}) is None


def test_a_closed_generation_is_read_for_a_while_then_no_more() -> None:
    period = 10.0
    closed_at = 50.0  # generation 4 closes when 5 starts
    just_after = readable_generations({4, 5}, closed_at + 1, period)
    assert just_after == {4, 5}
    later = readable_generations({4, 5}, closed_at + READ_AFTER_CLOSE * period + 0.01, period)
    assert later == {5}
