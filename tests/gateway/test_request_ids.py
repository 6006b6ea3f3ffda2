"""Minted ids land where aiokafka's default partitioner (the worker's) puts them."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.errors import ConfigError
from streams.gateway.request_ids import RequestIdMinter, owned_partitions, partition_of


@pytest.mark.parametrize(("count", "partitions"), [(1, 4), (2, 4), (3, 4), (4, 4), (3, 12)])
def test_replicas_split_the_partitions(count: int, partitions: int) -> None:
    owned = [owned_partitions(i, count, partitions) for i in range(count)]
    assert sorted(p for share in owned for p in share) == list(range(partitions))
    assert all(share for share in owned)


def test_more_replicas_than_partitions_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"gateway.replica_count \(5\) is above"):
        owned_partitions(0, 5, 4)


@pytest.mark.parametrize("replica", [0, 1, 2])
def test_minted_ids_land_on_the_replicas_partitions(replica: int) -> None:
    partitions = 8
    owned = owned_partitions(replica, 3, partitions)
    minter = RequestIdMinter(replica, partitions, owned)
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    ids = [minter.new() for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(i.startswith(f"gw{replica}-") for i in ids)
    landed = {partitioner(i.encode(), all_partitions, all_partitions) for i in ids}
    assert landed == set(owned)  # every owned partition gets some, no other gets any
    assert all(partition_of(i.encode(), partitions) in owned for i in ids)
