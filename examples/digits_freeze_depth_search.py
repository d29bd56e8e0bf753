"""
Which depth to freeze? A grid search over ``freeze``
====================================================

:class:`~sktransfer.FineTuneClassifier` puts a new head on the embedded,
ImageNet-pretrained efficientnet_lite0 and fine-tunes the blocks above ``freeze``.
:class:`~sklearn.model_selection.GridSearchCV` then finds the depth that suits the data,
like any other hyper-parameter. Frozen blocks are computed once per fit (and cached
across folds with ``memory``), so the deeper the freeze, the cheaper the fit.

Small enough for the documentation build, offline: 450 of the 1,797 digits for
training, upscaled to 48 px, at most 6 epochs per fit, 3 folds. Run it as a script
with ``python examples/digits_freeze_depth_search.py``.
"""

# %%
# The blocks of the backbone
# --------------------------
# ``freeze=k`` keeps the bottom ``k`` blocks fixed; ``"all"`` trains only the new head
# (a linear probe), ``0`` fine-tunes the whole network.

import tempfile
import time

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from sktransfer import FineTuneClassifier, backbone_blocks

digits = load_digits()
X = digits.data / 16.0
X_train, X_test, y_train, y_test = train_test_split(
    X, digits.target, train_size=450, stratify=digits.target, random_state=0)
blocks = backbone_blocks("efficientnet_lite0", image_size=48)
print(f"efficientnet_lite0 has {len(blocks)} blocks: {', '.join(b.name for b in blocks)}")

# %%
# The grid search
# ---------------
# Four depths, three folds: twelve fine-tunings and a refit of the best depth on all
# 450 training digits. ``memory`` caches the frozen blocks' outputs across the folds.

with tempfile.TemporaryDirectory() as cache:
    model = FineTuneClassifier(image_size=48, image_shape=(8, 8), max_epochs=6,
                               lr=2e-3, batch_size=64, random_state=0, memory=cache,
                               progress=False)
    search = GridSearchCV(model, {"freeze": [0, 3, 6, "all"]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0))
    start = time.perf_counter()
    search.fit(X_train, y_train)
    elapsed = time.perf_counter() - start

results = pd.DataFrame(search.cv_results_)
results["freeze"] = [params["freeze"] for params in results["params"]]
results["trainable blocks"] = [0 if f == "all" else len(blocks) - f
                               for f in results["freeze"]]
table = results[["freeze", "trainable blocks", "mean_test_score", "std_test_score",
                 "mean_fit_time"]]
print(f"{len(X_train)} training digits, 3-fold grid search in {elapsed:.0f} s")
print(table.round(3).to_string(index=False))
print(f"best freeze={search.best_params_['freeze']!r}: "
      f"held-out accuracy {search.score(X_test, y_test):.3f} on {len(X_test)} digits")

# %%
# Accuracy and cost against depth
# -------------------------------
# Left: cross-validated accuracy by the number of trainable blocks (0 is the linear
# probe). Right: what one fit costs: the more blocks are trainable, the more each
# fit computes. With 300 training images per fold, which depth wins is for the data
# to say; on the full-size run in the README, the top three blocks (freeze=6) did.

order = table.sort_values("trainable blocks")
fig, (ax_score, ax_time) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
ax_score.errorbar(order["trainable blocks"], order["mean_test_score"],
                  yerr=order["std_test_score"], marker="o", capsize=4, color="#2ca02c")
ax_score.set_xticks(order["trainable blocks"],
                    [f"{t}\n(freeze={f})" for t, f in zip(order["trainable blocks"],
                                                          order["freeze"])])
ax_score.set_xlabel("trainable blocks")
ax_score.set_ylabel("accuracy (mean ± std over 3 folds)")
ax_score.set_title("cross-validated accuracy by freeze depth")
ax_time.bar([str(t) for t in order["trainable blocks"]], order["mean_fit_time"],
            color="#2ca02c")
ax_time.set_xlabel("trainable blocks")
ax_time.set_ylabel("seconds per fit")
ax_time.set_title("cost of one fit")
plt.show()
