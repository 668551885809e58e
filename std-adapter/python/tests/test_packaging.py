"""Packaging: the wheel installs into a fresh venv (no registry needed) and runs the seed's
example; the package's stubs satisfy `mypy --strict` on a program using every public name."""

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CRATE = os.path.dirname(HERE)
TYPING_PROGRAM = os.path.join(HERE, "typing", "uses_every_name.py")

SEED = """
from dragon_channels.managed_memory import MemoryPool
from dragon_channels.channels import Channel, ChannelRecvH, ChannelSendH, Message

# The seed's example; its pool of 32678 bytes is too small for a channel of Dragon's
# default attributes, which needs 131072 bytes.
mpool = MemoryPool(1 << 20, "NAME", 0, None)
ch = Channel(mpool, 1)
sendh = ch.sendh()
sendh.open()
recvh = ch.recvh()
recvh.open()
msg = Message.create_alloc(mpool, 512)
msg_view = msg.bytes_memview()
msg_view[0:5] = b"Hello"
sendh.send(msg)
recv_msg = recvh.recv()
recv_msgview = recv_msg.bytes_memview()
print(f"{bytes(msg_view[0:5]).decode()} -- {bytes(recv_msgview[0:5]).decode()}")
mpool.destroy()
"""


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)


@pytest.mark.skipif(shutil.which("maturin") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "maturin")), reason="maturin not installed")
def test_wheel_installs_into_a_fresh_venv_and_runs_the_seed_example():
    maturin = shutil.which("maturin") or os.path.join(os.path.dirname(sys.executable), "maturin")
    name = f"dcpy-wheel-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        out = _run([maturin, "build", "--release", "-q", "-o", tmp], cwd=CRATE)
        assert out.returncode == 0, out.stderr
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        # One wheel for CPython 3.9 and later: the stable ABI of 3.9 (cp39-abi3).
        assert len(wheels) == 1 and "-cp39-abi3-" in wheels[0], wheels
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            names = set(z.namelist())
            meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        for f in ("_native.pyi", "py.typed", "channels.py", "managed_memory.py", "dtypes.py",
                  "_native.abi3.so"):
            assert f"dragon_channels/{f}" in names
        assert "Requires-Python: >=3.9" in meta.splitlines(), meta
        venv = os.path.join(tmp, "venv")
        assert _run([sys.executable, "-m", "venv", venv]).returncode == 0
        py = os.path.join(venv, "bin", "python")
        out = _run([py, "-m", "pip", "install", "-q", "--no-index",
                    os.path.join(tmp, wheels[0])])
        assert out.returncode == 0, out.stderr
        try:
            out = _run([py, "-c", SEED.replace("NAME", name)], cwd=tmp)
        finally:
            if os.path.exists(f"/dev/shm/{name}"):
                os.unlink(f"/dev/shm/{name}")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["Hello -- Hello"]


def test_program_using_every_public_name_runs():
    out = _run([sys.executable, TYPING_PROGRAM])
    assert out.returncode == 0, out.stderr


def test_mypy_strict_sees_every_public_name():
    pytest.importorskip("mypy")
    out = _run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                TYPING_PROGRAM])
    assert out.returncode == 0, out.stdout + out.stderr
