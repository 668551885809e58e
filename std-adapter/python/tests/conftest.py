"""Shared fixtures: unique pool names (with the pid), cleanup of /dev/shm files, and child
processes that cannot hang a test."""

import itertools
import multiprocessing as mp
import os

import pytest

import dragon_channels as dc

_counter = itertools.count()


def unique_name(tag="t"):
    """A pool name unique to this process and call (pool names are at most 29 bytes)."""
    return f"dcpy-{tag}-{os.getpid()}-{next(_counter)}"[:29]


@pytest.fixture
def pool_name():
    name = unique_name()
    yield name
    path = os.path.join("/dev/shm", name)
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture
def pool(pool_name):
    p = dc.MemoryPool(1 << 20, pool_name, 0, None)
    yield p
    try:
        p.destroy()
    except dc.ChannelError:
        pass


@pytest.fixture
def channel(pool):
    ch = dc.Channel(pool, 1)
    yield ch
    try:
        ch.destroy()
    except dc.ChannelError:
        pass


@pytest.fixture
def handles(channel):
    s = channel.sendh()
    s.open()
    r = channel.recvh()
    r.open()
    return s, r


@pytest.fixture
def big_pool():
    """An 8 MiB pool, destroyed and its file removed afterwards."""
    name = unique_name("b")
    p = dc.MemoryPool(8 << 20, name, 0, None)
    yield p
    try:
        p.destroy()
    except dc.ChannelError:
        pass
    path = os.path.join("/dev/shm", name)
    if os.path.exists(path):
        os.unlink(path)


SPAWN = mp.get_context("spawn")


def start_child(target, *args):
    """A started child process (spawned: no state inherited from the test)."""
    p = SPAWN.Process(target=target, args=args)
    p.start()
    return p


def join_child(p, timeout=120):
    """The child's exit code; kills it and fails the test if it outlives `timeout`."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        pytest.fail("child process hung")
    return p.exitcode
