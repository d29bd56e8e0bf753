"""GridSearchCV over freeze depths on a dask LocalCluster: 2 workers against 1.

Each worker is a process with 1 thread (torch then runs 1 thread in it). joblib's dask
backend runs a search whose cluster has a single worker thread in the client process
itself (its effective n_jobs is 1), so "1 worker" is measured as that: a serial search
in this process, torch on all cores. A first round warms the workers up (imports,
weights) and is not counted; contenders alternate; median of 2 rounds.

    python benchmarks/bench_dask.py      # needs: pip install "sktransfer[dask]"
"""

import logging
import statistics
import time
from contextlib import nullcontext

import joblib
import numpy as np
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from _common import machine, print_table
from sktransfer import FineTuneClassifier


def search(X, y, n_jobs):
    model = FineTuneClassifier(image_size=48, image_shape=(8, 8), max_epochs=3, batch_size=64,
                               early_stopping=False, random_state=0, device="cpu")
    return GridSearchCV(model, {"freeze": ["all", 8, 6, 4]}, n_jobs=n_jobs, refit=False,
                        cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(X, y)


def main():
    print(machine())
    digits = load_digits()
    X, y = digits.data[:360] / 16.0, digits.target[:360]
    clusters = {"dask, 2 workers x 1 thread": LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR)}
    contenders = {"1 worker: serial, torch on all cores": None, **clusters}
    times = {name: [] for name in contenders}
    scores = {}
    try:
        for round_ in range(3):
            for name, cluster in contenders.items():
                context = nullcontext() if cluster is None else Client(cluster)
                backend = nullcontext() if cluster is None else joblib.parallel_config(backend="dask")
                with context, backend:
                    start = time.perf_counter()
                    scores[name] = search(X, y, None if cluster is None else 2).cv_results_["mean_test_score"]
                    if round_:
                        times[name].append(time.perf_counter() - start)
    finally:
        for cluster in clusters.values():
            cluster.close()
    median = {name: statistics.median(t) for name, t in times.items()}
    one, two = contenders
    print_table(
        "dask: GridSearchCV over freeze (all, 8, 6, 4) x 3 folds, 360 digits at 48 px, 3 epochs",
        [{"run": name, "seconds": f"{median[name]:.1f}",
          "speed-up over 1 worker": f"{median[one] / median[name]:.2f}x"} for name in contenders]
        + [{"run": "same cv_results_ (they differ in torch threads per fit)",
            "seconds": str(np.array_equal(scores[one], scores[two]))}],
        ["run", "seconds", "speed-up over 1 worker"])


if __name__ == "__main__":
    main()
