"""Shards of a detector's work: instance ``i`` of ``N`` handles the keys that hash to ``i``.

On replicas sharing one database each shard instance is a detector of its own name, so
coordination leases it separately and the keys (runs, GPU nodes, budgets) spread over the
replicas (docs/scale-out.md). Finding ids do not depend on the shard.

>>> shard_of("run-a", 1), shard_of("run-a", 8) == shard_of("run-a", 8)
(0, True)
>>> shard_name("gpu_health", (2, 8)), shard_name("gpu_health", (0, 1))
('gpu_health[2/8]', 'gpu_health')
>>> [in_shard(k, (0, 1)) for k in ("a", "b")]
[True, True]
"""

from __future__ import annotations

import zlib

#: (index, count): the instance handles the keys with ``shard_of(key, count) == index``.
Shard = tuple[int, int]

#: The whole key space, one instance.
WHOLE: Shard = (0, 1)


def shard_of(key: object, count: int) -> int:
    """The shard of ``key`` among ``count`` (stable across processes, unlike ``hash``)."""
    return zlib.crc32(str(key).encode()) % count


def in_shard(key: object, shard: Shard) -> bool:
    index, count = shard
    return count <= 1 or shard_of(key, count) == index


def shard_name(name: str, shard: Shard) -> str:
    """The detector name of one shard instance: ``name[i/N]``, or ``name`` when unsharded."""
    index, count = shard
    return f"{name}[{index}/{count}]" if count > 1 else name


def shards(count: int) -> list[Shard]:
    """Every shard of ``count``."""
    return [(i, count) for i in range(count)]
