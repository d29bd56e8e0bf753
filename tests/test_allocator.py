"""tune_allocator: a network's activations come from the reused heap, not fresh pages."""

import os
import platform
import subprocess
import sys

import pytest

from sktransfer import tune_allocator

# Allocates 16 MiB with malloc in a fresh process and says whether the block lies in
# the heap (reused memory) or in a mapping of its own (fresh pages from the kernel).
WHERE_IS_A_BLOCK = """
import ctypes, sys
from sktransfer._allocator import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
address = libc.malloc(16 * 2**20)
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
inside = any(int(lo, 16) <= address < int(hi, 16) for lo, hi in (r.split("-") for r in heap))
print("heap" if inside else "own mapping")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
@pytest.mark.parametrize("state, expected", [("default", "own mapping"), ("tuned", "heap")])
def test_large_blocks_come_from_the_heap_once_tuned(state, expected):
    # a process as glibc starts it: no thresholds from the environment, no other malloc
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MALLOC_") and name not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    where = subprocess.run([sys.executable, "-c", WHERE_IS_A_BLOCK, state], check=True,
                           capture_output=True, text=True, env=env).stdout.strip()
    assert where == expected


def test_without_glibc_nothing_is_changed(monkeypatch):
    import sktransfer._allocator as allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert tune_allocator() is False
    monkeypatch.setattr(allocator.sys, "platform", "linux")

    def no_libc(*args, **kwargs):
        raise OSError("no C library here")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert tune_allocator() is False
