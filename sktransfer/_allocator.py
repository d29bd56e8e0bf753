"""The C allocator's thresholds, which decide how fast a CPU runs a network.

glibc's ``malloc`` serves every block over its mmap threshold (128 KiB at the start of
a process) with fresh pages from the kernel and returns them on ``free``. A network's
activations are megabytes, so each batch then faults in, zeroes and unmaps its memory
again: efficientnet_lite0 at 224 px transformed at 63-69 img/s in a fresh process and at
100-105 with the thresholds raised (2-core AMD EPYC, benchmarks/bench_extract.py).
glibc raises the threshold by itself only after a large block is freed, so a process's
speed depended on what it had run before. jemalloc and tcmalloc (PyTorch's CPU tuning
guides preload them) avoid the problem the same way.
"""

import ctypes
import sys

#: Blocks up to this size come from the heap, reused, not from fresh pages (glibc's
#: largest mmap threshold on 64-bit systems).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory kept for reuse before it is returned to the kernel.
TRIM_THRESHOLD = 256 * 2**20

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def tune_allocator():
    """Raise glibc's mmap and trim thresholds for this process, so that a network's
    activations reuse heap memory instead of fresh pages from the kernel.

    1.5x faster CPU inference in a fresh process (efficientnet_lite0, 224 px, 2-core
    AMD EPYC; benchmarks/). Process-wide and not undone: up to 256 MiB of freed memory
    per malloc arena (one per thread that allocates, at most) stays with the process
    for reuse. ``sktransfer`` commands call it; a library user
    can call it once at the start, or set ``MALLOC_MMAP_THRESHOLD_=33554432`` and
    ``MALLOC_TRIM_THRESHOLD_=268435456`` in the environment before Python starts.

    Returns
    -------
    bool
        Whether the thresholds were set (False where the C library is not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs
    except (OSError, AttributeError):  # no mallopt in this C library
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
