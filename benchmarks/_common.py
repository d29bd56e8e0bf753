"""Helpers shared by the benchmarks: side-by-side timing and the machine's description."""

import os
import platform
import statistics
import time

import torch


def machine():
    """One line on the CPU, cores and torch threads."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; CPU bf16 support: {bf16}")


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
