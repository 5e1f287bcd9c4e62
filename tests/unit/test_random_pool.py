"""meta_data.json's seeds come from a pool of kernel random bytes: never the same bytes twice, not even across a fork."""

from __future__ import annotations

import os

from netmeta.metadata.app import RandomPool


def test_bytes_are_never_handed_out_twice() -> None:
    pool = RandomPool(chunk=2048)
    seeds = [pool(512) for _ in range(20)]  # five refills
    assert all(len(seed) == 512 for seed in seeds)
    assert len(set(seeds)) == 20
    assert len(pool(4096)) == 4096  # more than a chunk: straight from the kernel


def _child_and_parent_seed(pool: RandomPool) -> tuple[bytes, bytes]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a metadata worker forked from the service
        try:
            os.write(write, pool(512))
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while len(child) < 512:
        chunk = os.read(read, 512)
        if not chunk:
            break
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return child, pool(512)


def test_a_forked_worker_never_gets_its_parent_s_next_bytes() -> None:
    pool = RandomPool()
    pool(512)  # the pool is filled before the fork
    child, parent = _child_and_parent_seed(pool)
    assert len(child) == 512 and child != parent


def test_without_the_reset_a_fork_would_share_the_seeds() -> None:
    # What the reset guards against: the same pool state on both sides of a fork.
    unguarded = RandomPool.__new__(RandomPool)  # made without registering its reset
    unguarded.chunk, unguarded.pool, unguarded.at = 64 * 1024, os.urandom(64 * 1024), 0
    child, parent = _child_and_parent_seed(unguarded)
    assert child == parent
