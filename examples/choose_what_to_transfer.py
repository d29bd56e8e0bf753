"""
Choosing what to transfer: which layer, how deep to freeze
==========================================================

Two questions decide how to reuse a pretrained network, and both can be answered by
data, cheaply:

1. :func:`~sktransfer.probe_layers`: which block's features transfer best? A linear
   probe on the pooled features of every block of efficientnet_lite0, from one forward
   pass per image, against raw pixels. It looks at all folds, so it is a diagnostic
   for choosing ``CNNFeatureExtractor(layer=...)``, not an unbiased score.
2. :class:`~sktransfer.FineTuneClassifierCV`: how deep to freeze when fine-tuning? The
   depth is chosen by 3-fold cross-validation on the training part only (the frozen
   trunk is computed once for all depths and folds), then scored on held-out digits.

Small enough for the documentation build, offline: 600 training digits at 48 px, three
candidate depths, at most 4 epochs per fine-tuning. Run it as a script with
``python examples/choose_what_to_transfer.py``.
"""

# %%
# The layer probe
# ---------------
# One forward pass yields every block's pooled output; a standardized logistic
# regression is cross-validated on each block's columns. ``attrs["pixels"]`` holds the
# same probe on raw pixels: the no-transfer baseline.

import time

import matplotlib.pyplot as plt
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

# %%
# :func:`~sktransfer.plot_layer_probe` draws the probe's accuracy against depth, raw
# pixels as a dashed line. Features improve up the network and fall again toward the
# top blocks, the most ImageNet-specific: on digits, the middle of the network
# transfers best.

fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
plot_layer_probe(table, ax=ax)
plt.show()

# %%
# The freeze depth, by inner cross-validation
# -------------------------------------------
# :class:`~sktransfer.FineTuneClassifierCV` runs a grid search over ``freezes`` (here
# ``"all"``: the head only, and 7 and 5 frozen bottom blocks) and refits the best
# depth on all 600 training digits; the held-out digits score the refitted model.

start = time.perf_counter()
search = FineTuneClassifierCV(freezes=["all", 7, 5], image_size=48, max_epochs=4,
                              batch_size=32, cv=3, random_state=0, progress=False)
search.fit(X_train, y_train)
results = pd.DataFrame(search.cv_results_)[["param_freeze", "mean_test_score",
                                            "std_test_score", "mean_fit_time"]]
print(f"FineTuneClassifierCV ({time.perf_counter() - start:.0f} s):")
print(results.round(3).to_string(index=False))
held_out = search.score(X_test, y_test)
print(f"chosen freeze={search.freeze_!r}; held-out accuracy {held_out:.3f} "
      f"on {len(y_test)} digits")

# %%
# The inner cross-validation's accuracy for each depth, with the chosen one marked,
# and its accuracy on the held-out digits.

labels = [str(f) for f in results["param_freeze"]]
chosen = labels.index(str(search.freeze_))
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.errorbar(labels, results["mean_test_score"], yerr=results["std_test_score"],
            marker="o", capsize=4, color="#2ca02c", label="inner 3-fold CV")
ax.plot(labels[chosen], held_out, marker="*", markersize=14, linestyle="none",
        color="#d62728", label=f"chosen depth, held-out ({held_out:.3f})")
ax.set_xlabel("freeze (frozen bottom blocks; 'all' trains only the head)")
ax.set_ylabel("accuracy")
ax.set_title("FineTuneClassifierCV: accuracy by freeze depth")
ax.legend()
plt.show()
