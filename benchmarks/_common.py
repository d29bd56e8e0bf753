"""Helpers shared by the benchmarks: side-by-side timing and the machine's description."""

import os
import platform
import statistics
import time

import torch


def machine():
    """One line on the CPU, cores and torch threads."""
    cpu = platform.processor() or "unknown CPU"
    flags = []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        present = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        flags = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in present]
    except (OSError, StopIteration):
        pass
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (f"{cpu}; flags: {' '.join(flags) or 'unknown'}; {os.cpu_count()} cores; torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads; CPU bf16 support: {bf16}")


def race(contenders, rounds=3, warmup=True):
    """Time each contender ``rounds`` times, alternating them; return median seconds.

    Parameters
    ----------
    contenders : dict of str to callable
        Each is called with no arguments.
    """
    if warmup:
        for run in contenders.values():
            run()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(title, rows, columns):
    """Print a markdown table of dict rows."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
