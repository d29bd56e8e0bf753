"""The comparison study on a quantity and on tags: R²/MAE and macro F1 instead of accuracy.

``sktransfer compare`` reads the kind of target off ``y``: float values are a regression
target (scored by R² and mean absolute error, with ridge regression and an RBF SVR on
raw pixels as the classical baselines), a 2-D 0/1 indicator is multi-label (macro F1,
subset accuracy and each label's F1, with one logistic regression or RBF SVC per label).
Both run on all 1,797 digits with the quick preset and write a report each:

1. the fraction of each digit's pixels that are ink: a number read off the image;
2. three tags per digit: "even", "above 4", "has a loop" (0, 6, 8, 9).

    python examples/compare_quantities_and_tags.py [OUT_DIR]

About 4 minutes on a 2-core AVX-512 EPYC (several times longer on an AVX2-only CPU).
The command line does the same on a CSV of image paths and values:
``sktransfer compare data.csv --quick`` (``--task regression`` for integer counts).
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sktransfer import compare, write_report
from sktransfer.datasets import load_digits_images


def main(out=Path("compare-targets")):
    X, digit = load_digits_images()
    targets = {
        "ink": (X > 0.5).mean(axis=(1, 2)).astype(float),
        "tags": pd.DataFrame({"even": digit % 2 == 0, "above 4": digit > 4,
                              "loop": np.isin(digit, [0, 6, 8, 9])}).astype(int),
    }
    for name, y in targets.items():
        start = time.perf_counter()
        results = compare(X, y, quick=True, progress=False)
        seconds = time.perf_counter() - start
        files = write_report(results, out / name, title=f"sktransfer comparison: digits, {name}",
                             description=f"{len(X)} digits of scikit-learn; target: {name}; "
                                         f"quick preset; {seconds:.0f} s.")
        print(f"\n## {name} ({results.attrs['task']}, {seconds:.0f} s): {files['report']}\n")
        columns = list(results.columns)
        scores = columns[columns.index("labels_per_class") + 1:columns.index("fit_seconds")]
        shown = results[["method", "freeze", "chosen", *scores, "fit_seconds"]].round(3)
        print(shown.astype(object).where(shown.notna(), "").to_string(index=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("compare-targets"))
