"""Choosing what to transfer on the digits: which layer's features, how deep to freeze.

1. ``probe_layers``: a linear probe on the pooled features of every block of
   efficientnet_lite0, from one forward pass per image (a diagnostic: it looks at all
   folds), against raw pixels. Writes layers.png.
2. ``FineTuneClassifierCV``: the freeze depth chosen by 3-fold cross-validation on the
   training part only (the trunk computed once for all depths and folds), then scored on
   held-out digits.

    python examples/choose_what_to_transfer.py
"""

import time

import pandas as pd
from sklearn.model_selection import train_test_split

from sktransfer import FineTuneClassifierCV, plot_layer_probe, probe_layers
from sktransfer.datasets import load_digits_images

X, y = load_digits_images()
X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=600, stratify=y,
                                                    random_state=0)

start = time.perf_counter()
table = probe_layers(X_train, y_train, image_size=48, cv=3, progress=False)
print(f"Linear probe on every block ({time.perf_counter() - start:.0f} s, one forward pass "
      f"of {table.attrs['extract_seconds']:.1f} s):")
print(table.round(3).to_string(index=False))
print(f"raw pixels: {table.attrs['pixels'][0]:.3f}")
plot_layer_probe(table, "layers.png")

start = time.perf_counter()
search = FineTuneClassifierCV(freezes=["all", 7, 5, 3], image_size=48, max_epochs=5,
                              batch_size=32, cv=3, random_state=0, progress=False)
search.fit(X_train, y_train)
results = pd.DataFrame(search.cv_results_)[["param_freeze", "mean_test_score",
                                            "std_test_score", "mean_fit_time"]]
print(f"\nFineTuneClassifierCV ({time.perf_counter() - start:.0f} s):")
print(results.round(3).to_string(index=False))
print(f"chosen freeze={search.freeze_!r}; held-out accuracy "
      f"{search.score(X_test, y_test):.3f} on {len(y_test)} digits")
