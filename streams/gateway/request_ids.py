"""Request ids that land on this replica's partitions of the responses topic.

Every topic is keyed by `request_id`, and the worker's producer picks a
record's partition with aiokafka's default partitioner (murmur2 of the key,
as the Java client).  The gateway creates the id, so it draws ids until one
hashes into a partition this replica owns; its response then arrives on a
partition this replica reads, and no replica reads another's traffic.
Replica i of n owns the partitions p with p % n == i (manual assignment: no
consumer group, so no rebalance ever moves a partition under a waiting call).
"""

from __future__ import annotations

import uuid

from aiokafka.partitioner import murmur2

from schemas.errors import ConfigError


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's `DefaultPartitioner` gives `key` (partitions 0..n-1)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def owned_partitions(replica_index: int, replica_count: int, partitions: int) -> tuple[int, ...]:
    if replica_count > partitions:
        raise ConfigError(
            f"gateway.replica_count ({replica_count}) is above the responses topic's "
            f"{partitions} partitions: some replica would own none"
        )
    return tuple(p for p in range(partitions) if p % replica_count == replica_index)


class RequestIdMinter:
    """New `gw<replica>-<uuid hex>` ids whose partition is one of `owned`.

    About `partitions / len(owned)` draws per id (each ~10 µs)."""

    def __init__(self, replica_index: int, partitions: int, owned: tuple[int, ...]) -> None:
        if not owned:
            raise ValueError("a replica must own at least one partition")
        self.prefix = f"gw{replica_index}-"
        self.partitions = partitions
        self.owned = frozenset(owned)

    def new(self) -> str:
        while True:
            request_id = self.prefix + uuid.uuid4().hex
            if partition_of(request_id.encode(), self.partitions) in self.owned:
                return request_id
