"""
The comparison study on a quantity and on tags
==============================================

:func:`sktransfer.compare` fits pixels, HOG, frozen pretrained features, fine-tuning and
training from scratch on the same folds, and reads the kind of target off ``y``:

* float values are a regression target, scored by R² and mean absolute error, with
  ridge regression and an RBF SVR on raw pixels and HOG as the classical baselines;
* a 2-D 0/1 indicator is multi-label, scored by macro F1, subset accuracy and each
  label's F1, with one logistic regression or RBF SVC per label.

Two targets on the digits:

1. the fraction of each digit's pixels that are ink: a number read off the image;
2. three tags per digit: "even", "above 4", "has a loop" (0, 6, 8, 9).

Small enough for the documentation build, offline: the ``quick`` preset (48 px, 3
outer folds) on 450 of the 1,797 digits, at most 4 epochs per network, with two
fine-tuning depths (``"all"`` and two thirds of the blocks frozen) instead of
three. The command line runs the same study on a CSV of image paths and values:
``sktransfer compare data.csv --quick`` (``--task regression`` for integer counts).
Run this script with ``python examples/compare_quantities_and_tags.py``.
"""

# %%
# The two targets
# ---------------
# The same 450 images, two ``y``: a float per image, and a DataFrame of three 0/1
# columns (its column names name the tags in the results).

import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sktransfer import compare, write_report
from sktransfer.datasets import load_digits_images

X, digit = load_digits_images()
X, digit = X[:450], digit[:450]
targets = {
    "ink fraction": (X > 0.5).mean(axis=(1, 2)).astype(float),
    "tags": pd.DataFrame({"even": digit % 2 == 0, "above 4": digit > 4,
                          "loop": np.isin(digit, [0, 6, 8, 9])}).astype(int),
}

# %%
# The comparisons
# ---------------
# ``quick=True`` picks the small preset; ``freeze=`` overrides its depths (a float is a
# fraction of the backbone's blocks). :func:`~sktransfer.write_report` writes
# ``results.csv``, the plots and ``report.md`` with a plain reading of the table, here
# into a temporary folder: its "Reading" section is printed below each table.

all_results = {}
with tempfile.TemporaryDirectory() as out:
    for name, y in targets.items():
        start = time.perf_counter()
        results = compare(X, y, quick=True, freeze=("all", 0.67), max_epochs=4,
                          progress=False)
        seconds = time.perf_counter() - start
        all_results[name] = results
        files = write_report(results, Path(out) / name.replace(" ", "-"),
                             title=f"sktransfer comparison: digits, {name}",
                             description=f"{len(X)} digits; target: {name}; quick preset.")
        columns = list(results.columns)
        scores = columns[columns.index("labels_per_class") + 1:columns.index("fit_seconds")]
        shown = results[["method", "freeze", "chosen", *scores, "fit_seconds"]].round(3)
        print(f"## {name} ({results.attrs['task']}, {seconds:.0f} s)")
        print(shown.astype(object).where(shown.notna(), "").to_string(index=False))
        report = files["report"].read_text()
        reading = report.split("## Reading", 1)[1].split("![", 1)[0].strip()
        print(f"\n{reading}\n")

# %%
# The scores by method
# --------------------
# The primary score of each row (R² for the quantity, macro F1 for the tags) with its
# spread over the outer folds, coloured by kind: grey for the classical models, blue
# for frozen features, green for fine-tuning, red for the same network trained from
# random weights.

colors = {"classical": "#8c8c8c", "features": "#1f77b4", "finetune": "#2ca02c",
          "scratch": "#d62728"}
fig, axes = plt.subplots(2, 1, figsize=(9, 8), layout="constrained")
for ax, (name, results) in zip(axes, all_results.items()):
    metric = results.attrs["metric"]
    labels = [method if pd.isna(freeze) or method.startswith("train from") else
              f"{method}, freeze={freeze}"
              for method, freeze in zip(results["method"], results["freeze"])]
    ax.barh(labels, results[metric], xerr=results[f"{metric}_std"], capsize=3,
            color=[colors.get(kind, "#9467bd") for kind in results["kind"]])
    for position, value in enumerate(results[metric]):
        ax.text(max(value, 0) + 0.02, position + 0.3, f"{value:.3f}", fontsize=8)
    ax.set_xlim(min(0, results[metric].min() - 0.05), 1.1)
    ax.set_xlabel({"r2": "R²", "f1_macro": "macro F1"}.get(metric, metric)
                  + " (mean ± std over 3 folds)")
    ax.set_title(f"{name} ({results.attrs['task']})")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
plt.show()
