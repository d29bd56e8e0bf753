"""GridSearchCV over 4 freeze depths x 3 folds, with memory= caching against without.

With ``memory``, each image's frozen-block output is computed once per depth and
reused by every fold that trains on it. Prints the speed-up (cold cache, and a second
search on a warm cache) and checks that cv_results_ agree.

    python benchmarks/bench_grid.py
"""

import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from _common import machine, print_table
from sktransfer import FineTuneClassifier

GRID = {"freeze": ["all", 8, 6, 4]}


def search(X, y, memory):
    model = FineTuneClassifier(image_size=64, image_shape=(8, 8), max_epochs=3, batch_size=64,
                               early_stopping=False, random_state=0, device="cpu", memory=memory)
    start = time.perf_counter()
    result = GridSearchCV(model, GRID, cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(X, y)
    return time.perf_counter() - start, result.cv_results_["mean_test_score"]


def main():
    print(machine())
    digits = load_digits()
    X, y = digits.data[:450] / 16.0, digits.target[:450]
    plain_seconds, plain_scores = search(X, y, None)
    with tempfile.TemporaryDirectory() as cache:
        cold_seconds, cold_scores = search(X, y, cache)
        warm_seconds, warm_scores = search(X, y, cache)
    same = np.allclose(plain_scores, cold_scores) and np.allclose(cold_scores, warm_scores)
    print_table(
        "grid: GridSearchCV over freeze in (all, 8, 6, 4) x 3 folds, 450 digits at 64 px, "
        "efficientnet_lite0, 3 epochs",
        [{"run": "memory=None", "seconds": f"{plain_seconds:.1f}", "speed-up": "1.00x"},
         {"run": "memory=dir, cold cache", "seconds": f"{cold_seconds:.1f}",
          "speed-up": f"{plain_seconds / cold_seconds:.2f}x"},
         {"run": "memory=dir, warm cache (a second search)", "seconds": f"{warm_seconds:.1f}",
          "speed-up": f"{plain_seconds / warm_seconds:.2f}x"},
         {"run": "same mean_test_score in all three", "seconds": str(same), "speed-up": ""}],
        ["run", "seconds", "speed-up"])
    print("\nmean_test_score:", np.round(plain_scores, 4), np.round(cold_scores, 4))


if __name__ == "__main__":
    main()
