"""Topic generations: the embedded broker's retention.

The embedded broker (Tansu, memory storage) never deletes a record, and every
fetch that finds new data lists every batch its partition ever stored, so a
long run slows down until fetches return nothing.  Deleting a topic is the one
thing that frees it.  With `kafka.topic_rotation_s` set, each rotating topic
(`TopicSpec.rotates`) is a series of generations, `<name>.g<N>` with
N = floor(unix time / period): producers write to the newest generation,
consumers read every generation that still exists, and a generation is deleted
once it is closed, old enough and read to its end (streams/kafka/rotation.py).
A partition then holds at most about one period of batches.

Plain values in, names out; the clock is passed in.
"""

from __future__ import annotations

import dataclasses
import math
import re

from topics.catalog import TopicCatalog, TopicSpec

GENERATION_SUFFIX = ".g"
#: where in its period the next generation is made (and closed ones deleted):
#: late, so the previous one has long been closed, with time left before the switch
PREPARE_AT = 0.9
#: how long callers read a closed generation's responses, in periods: until
#: well before it can be deleted (a reader that asks for a deleted topic's
#: metadata makes Tansu create it again)
READ_AFTER_CLOSE = 0.5
_GENERATION = re.compile(r"^(?P<base>.+)\.g(?P<generation>\d+)$")


def generation_at(now_s: float, period_s: float) -> int:
    """The generation producers write to at `now_s` (unix seconds)."""
    return math.floor(now_s / period_s)


def generation_starts_at(generation: int, period_s: float) -> float:
    return generation * period_s


def generation_topic(base: str, generation: int) -> str:
    return f"{base}{GENERATION_SUFFIX}{generation}"


def split_generation(topic: str) -> tuple[str, int | None]:
    """`fallback.requests.g42` -> (`fallback.requests`, 42); a plain name -> (name, None)."""
    match = _GENERATION.match(topic)
    if match is None:
        return topic, None
    return match["base"], int(match["generation"])


def catalog_at(catalog: TopicCatalog, generation: int | None) -> TopicCatalog:
    """The catalog whose rotating topics carry `generation` (None: the plain names)."""
    if generation is None:
        return catalog
    rotating = {spec.name for spec in catalog.specs if spec.rotates}

    def name(base: str) -> str:
        return generation_topic(base, generation) if base in rotating else base

    return dataclasses.replace(
        catalog,
        requests=name(catalog.requests),
        responses=name(catalog.responses),
        verdicts=name(catalog.verdicts),
        dlq=name(catalog.dlq),
        spend=name(catalog.spend),
        tier_topics={tier: name(topic) for tier, topic in catalog.tier_topics.items()},
        attempt_topics={tier: name(topic) for tier, topic in catalog.attempt_topics.items()},
        specs=tuple(dataclasses.replace(spec, name=name(spec.name)) for spec in catalog.specs),
    )


def rotating_bases(catalog: TopicCatalog) -> frozenset[str]:
    return frozenset(spec.name for spec in catalog.specs if spec.rotates)


def existing_generations(catalog: TopicCatalog, topics: set[str]) -> set[int]:
    """Generations of which at least one rotating topic exists among `topics`."""
    bases = rotating_bases(catalog)
    found = set()
    for topic in topics:
        base, generation = split_generation(topic)
        if generation is not None and base in bases:
            found.add(generation)
    return found


def generation_specs(catalog: TopicCatalog, generations: set[int]) -> list[TopicSpec]:
    """The topics to declare: each rotating topic per generation, the others once."""
    specs = [spec for spec in catalog.specs if not spec.rotates]
    for generation in sorted(generations):
        specs += [spec for spec in catalog_at(catalog, generation).specs if spec.rotates]
    return specs


def producing_generation(now_generation: int, existing: set[int]) -> int | None:
    """The generation a producer writes to: the newest that exists, not ahead of the clock."""
    return max((g for g in existing if g <= now_generation), default=None)


def readable_generations(existing: set[int], now_s: float, period_s: float) -> set[int]:
    """The generations whose responses a caller reads: the current one, the next,
    and a closed one for `READ_AFTER_CLOSE` of a period (nothing is written to
    a closed generation's responses; see streams/kafka/rotation.py)."""
    return {g for g in existing if now_s < (g + 1 + READ_AFTER_CLOSE) * period_s}
