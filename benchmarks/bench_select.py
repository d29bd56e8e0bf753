"""Choosing what to transfer, fast: FineTuneClassifierCV and probe_layers against the plain ways.

1. ``FineTuneClassifierCV`` over 4 depths x 3 folds against
   ``GridSearchCV(FineTuneClassifier(memory=...))`` on the same grid, folds and seeds,
   alternating (each with a fresh cache): speed-up (goal >= 2x) and the same chosen depth.
2. ``probe_layers`` over every block of efficientnet_lite0 against one top-layer
   ``transform`` plus the probes' own fits (goal <= 1.5x).

    python benchmarks/bench_select.py [--image-size 64] [--n-images 450] [--freezes all,8,6,4]
                                      [--epochs 3]
"""

import argparse
import tempfile

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from _common import machine, print_table, race
from sktransfer import CNNFeatureExtractor, FineTuneClassifier, FineTuneClassifierCV, probe_layers

FREEZES = ["all", 8, 6, 4]
SETTINGS = dict(image_size=64, image_shape=(8, 8), max_epochs=3, batch_size=64,
                early_stopping=False, random_state=0, device="cpu", progress=False)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=450)
    parser.add_argument("--freezes", default="all,8,6,4")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-probe", action="store_true")
    args = parser.parse_args()
    FREEZES[:] = [f if f == "all" else int(f) for f in args.freezes.split(",")]
    SETTINGS.update(image_size=args.image_size, max_epochs=args.epochs)
    return args


def with_grid_search(X, y, results):
    with tempfile.TemporaryDirectory() as cache:
        search = GridSearchCV(FineTuneClassifier(**SETTINGS, memory=cache), {"freeze": FREEZES},
                              cv=StratifiedKFold(3)).fit(X, y)
    results["grid"] = (search.best_params_["freeze"], search.cv_results_["mean_test_score"])


def with_cv_estimator(X, y, results):
    search = FineTuneClassifierCV(**SETTINGS, freezes=FREEZES, cv=StratifiedKFold(3)).fit(X, y)
    results["cv"] = (search.freeze_, search.cv_results_["mean_test_score"])


def top_layer_transform(X):
    return CNNFeatureExtractor(image_size=64, image_shape=(8, 8), device="cpu",
                               progress=False).fit_transform(X)


def main():
    args = parse_args()
    print(machine())
    digits = load_digits()
    X, y = digits.data[:args.n_images] / 16.0, digits.target[:args.n_images]
    results = {}
    times = race({"GridSearchCV(memory=)": lambda: with_grid_search(X, y, results),
                  "FineTuneClassifierCV": lambda: with_cv_estimator(X, y, results)},
                 rounds=2, warmup=False)
    grid, cv = results["grid"], results["cv"]
    print_table(
        f"select: depths {FREEZES} x 3 folds, {len(y)} digits at {args.image_size} px, "
        f"efficientnet_lite0, {args.epochs} epochs; median of 2 alternating rounds",
        [{"search": name, "seconds": f"{seconds:.1f}",
          "speed-up (goal >= 2x)": f"{times['GridSearchCV(memory=)'] / seconds:.2f}x"}
         for name, seconds in times.items()],
        ["search", "seconds", "speed-up (goal >= 2x)"])
    print(f"chosen depth: GridSearchCV {grid[0]!r}, FineTuneClassifierCV {cv[0]!r}; "
          f"mean_test_score max difference {np.abs(grid[1] - cv[1]).max():.2e}")
    if args.skip_probe:
        return

    cv3 = StratifiedKFold(3, shuffle=True, random_state=0)
    tables = {}
    probe_times = race({
        "one top-layer transform": lambda: top_layer_transform(X),
        "probe_layers (every block)": lambda: tables.__setitem__("t", probe_layers(
            X, y, image_size=64, image_shape=(8, 8), cv=cv3, device="cpu", pixel_size=None,
            progress=False))},
        rounds=2)
    table = tables["t"]
    own_fits = float(table["seconds"].sum())
    transform = probe_times["one top-layer transform"]
    every_block = probe_times["probe_layers (every block)"]
    print_table(
        f"probe: every block of efficientnet_lite0 ({len(table)} blocks), 450 digits at 64 px, "
        "3-fold standardized logistic regression",
        [{"run": "one top-layer transform", "seconds": f"{transform:.1f}"},
         {"run": "the probes' own fits (all blocks)", "seconds": f"{own_fits:.1f}"},
         {"run": "probe_layers", "seconds": f"{every_block:.1f}"},
         {"run": "probe_layers / (transform + probes' fits), goal <= 1.5x",
          "seconds": f"{every_block / (transform + own_fits):.2f}x"}],
        ["run", "seconds"])


if __name__ == "__main__":
    main()
