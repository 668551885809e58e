"""Shared fixtures: unique pool names (with the pid) and cleanup of /dev/shm files."""

import itertools
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
