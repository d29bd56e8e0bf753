"""
Beyond single labels: regression, tags, sample weights, calibration
===================================================================

Fine-tuning is not only for one class label per image. On the digits:

1. :class:`~sktransfer.FineTuneRegressor` learns a number from each image: the digit's
   value, and the fraction of its pixels that are ink (R² and MAE on held-out digits,
   against ridge regression on the pixels).
2. A multi-label :class:`~sktransfer.FineTuneClassifier` tags each digit "even",
   "above 4" and "has a loop" (0, 6, 8, 9) at once: per-tag F1 and subset accuracy.
3. Sample weights: with only 8 training images of digit 3, weighting them 10x
   recalls more 3s.
4. ``decision_function`` (the logits) feeds
   :class:`~sklearn.calibration.CalibratedClassifierCV` (temperature scaling where
   scikit-learn has it, else sigmoid).

Small enough for the documentation build, offline, with efficientnet_lite0's embedded
ImageNet weights: 750 digits upscaled to 48 px, the top three blocks fine-tuned
(``freeze=6``) for at most 6 epochs. Run it as a script with
``python examples/beyond_single_labels.py``.
"""

# %%
# Data and settings
# -----------------
# ``X`` holds 8x8 images in [0, 1]. From the same images come a number (the ink
# fraction), the digit as a number and as a class, and three 0/1 tags per digit.

import time

import matplotlib.pyplot as plt
import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.linear_model import RidgeCV
from sklearn.metrics import (accuracy_score, f1_score, log_loss, mean_absolute_error,
                             r2_score, recall_score)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import FineTuneClassifier, FineTuneRegressor, PixelFeatures
from sktransfer.datasets import load_digits_images

SETTINGS = dict(freeze=6, image_size=48, max_epochs=6, batch_size=32, random_state=0,
                progress=False)

X, digit = load_digits_images()
X, digit = X[:750], digit[:750]
ink = (X.reshape(len(X), -1) > 0.5).mean(axis=1)  # fraction of ink pixels
tags = np.c_[digit % 2 == 0, digit > 4, np.isin(digit, [0, 6, 8, 9])].astype(int)
train, test = train_test_split(np.arange(len(X)), test_size=0.3, random_state=0,
                               stratify=digit)

# %%
# 1. Regression: a number read off each image
# -------------------------------------------
# :class:`~sktransfer.FineTuneRegressor` puts a one-output head on the network and
# trains it on the squared error; ridge regression on the raw pixels is the classical
# baseline.

predictions = {}
for name, target in [("digit value", digit.astype(float)), ("ink fraction", ink)]:
    start = time.perf_counter()
    regressor = FineTuneRegressor(**SETTINGS).fit(X[train], target[train])
    predicted = regressor.predict(X[test])
    ridge = make_pipeline(PixelFeatures(16), StandardScaler(), RidgeCV())
    baseline = ridge.fit(X[train], target[train]).predict(X[test])
    predictions[name] = (target[test], predicted, baseline)
    print(f"{name}: fine-tuned R^2 {r2_score(target[test], predicted):.3f}, MAE "
          f"{mean_absolute_error(target[test], predicted):.3f}; ridge on pixels R^2 "
          f"{r2_score(target[test], baseline):.3f}, MAE "
          f"{mean_absolute_error(target[test], baseline):.3f} "
          f"({time.perf_counter() - start:.0f} s)")

# %%
# Predicted against true values on the held-out digits. The network wins where the
# quantity is a property of the shape (the digit's value); a linear model on the pixels
# can nearly read the ink fraction off them, while globally pooled ImageNet features
# at 48 px blur that count.

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
rng = np.random.default_rng(0)
for ax, (name, (true, predicted, baseline)) in zip(axes, predictions.items()):
    jitter = rng.uniform(-0.15, 0.15, len(true)) if name == "digit value" else 0
    ax.scatter(true + jitter, baseline, s=8, alpha=0.5, color="#8c8c8c",
               label=f"ridge on pixels (R² {r2_score(true, baseline):.2f})")
    ax.scatter(true + jitter, predicted, s=8, alpha=0.5, color="#2ca02c",
               label=f"fine-tuned (R² {r2_score(true, predicted):.2f})")
    low, high = true.min(), true.max()
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.set_title(name)
    ax.legend(fontsize=8)
plt.show()

# %%
# 2. Tags: a multi-label classifier
# ---------------------------------
# A 2-D 0/1 ``y`` makes :class:`~sktransfer.FineTuneClassifier` multi-label: one
# sigmoid output per tag, all tags learned by one network.

start = time.perf_counter()
tagger = FineTuneClassifier(**SETTINGS).fit(X[train], tags[train])
predicted_tags = tagger.predict(X[test])
tag_names = ["even", "above 4", "has a loop"]
f1 = f1_score(tags[test], predicted_tags, average=None)
subset = accuracy_score(tags[test], predicted_tags)
print(f"tags {' / '.join(tag_names)}: F1 {' / '.join(f'{v:.3f}' for v in f1)}, "
      f"subset accuracy {subset:.3f} ({time.perf_counter() - start:.0f} s)")

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.bar(tag_names + ["all three\n(subset accuracy)"], [*f1, subset],
       color=["#2ca02c"] * 3 + ["#1f77b4"])
for position, value in enumerate([*f1, subset]):
    ax.text(position, value + 0.01, f"{value:.3f}", ha="center", fontsize=9)
ax.set_ylim(0, 1.08)
ax.set_ylabel("F1 on held-out digits")
ax.set_title("one network, three tags")
plt.show()

# %%
# 3. Sample weights for a scarce class
# ------------------------------------
# Keep only 8 training images of digit 3, then fit twice: plainly, and with those 8
# images weighted 10x (``sample_weight`` weighs each image's loss, also in the
# validation loss that early stopping watches).

start = time.perf_counter()
threes = train[digit[train] == 3]
scarce = np.setdiff1d(train, threes[8:])  # only 8 training images of digit 3
weight = np.where(digit[scarce] == 3, 10.0, 1.0)
plain = FineTuneClassifier(**SETTINGS).fit(X[scarce], digit[scarce])
weighted = FineTuneClassifier(**SETTINGS).fit(X[scarce], digit[scarce],
                                              sample_weight=weight)
recalls = {name: recall_score(digit[test], model.predict(X[test]), average=None)
           for name, model in [("plain", plain), ("weighted 10x", weighted)]}
print(f"recall of digit 3 from 8 training images: {recalls['plain'][3]:.3f} plain, "
      f"{recalls['weighted 10x'][3]:.3f} weighted 10x (accuracy "
      f"{plain.score(X[test], digit[test]):.3f} and "
      f"{weighted.score(X[test], digit[test]):.3f}; {time.perf_counter() - start:.0f} s)")

# %%
# Recall of every digit: the weights move the scarce class, and cost the others
# little.

fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
classes = np.arange(10)
ax.bar(classes - 0.2, recalls["plain"], width=0.4, color="#8c8c8c", label="plain")
ax.bar(classes + 0.2, recalls["weighted 10x"], width=0.4, color="#2ca02c",
       label="digit 3 weighted 10x")
ax.set_xticks(classes)
ax.set_xlabel("digit (only 8 training images of 3)")
ax.set_ylabel("recall on held-out digits")
ax.set_ylim(0, 1.2)
ax.legend(loc="upper center", ncols=2)
plt.show()

# %%
# 4. Calibrated probabilities through ``decision_function``
# ---------------------------------------------------------
# ``decision_function`` returns the logits, which is what
# :class:`~sklearn.calibration.CalibratedClassifierCV` needs; temperature scaling
# arrived in scikit-learn 1.8, sigmoid calibration is the fallback before it.

start = time.perf_counter()
version = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
method = "temperature" if version >= (1, 8) else "sigmoid"
model = FineTuneClassifier(**SETTINGS).fit(X[train], digit[train])
calibrated = CalibratedClassifierCV(FineTuneClassifier(**SETTINGS), method=method,
                                    cv=2).fit(X[train], digit[train])
probabilities = {"softmax": model.predict_proba(X[test]),
                 f"CalibratedClassifierCV({method!r})": calibrated.predict_proba(X[test])}
for name, proba in probabilities.items():
    print(f"log loss on held-out digits, {name}: {log_loss(digit[test], proba):.3f}")
print(f"({time.perf_counter() - start:.0f} s)")

# %%
# A reliability diagram of the top-1 prediction: the fraction of correct predictions
# against the confidence given to them. Points on the diagonal are calibrated. The
# fine-tuned network's softmax is already close to it here, so temperature scaling
# has little to fix.

fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
ax.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--",
        label="perfectly calibrated")
for (name, proba), color in zip(probabilities.items(), ["#2ca02c", "#1f77b4"]):
    correct = (proba.argmax(axis=1) == digit[test]).astype(int)
    fraction, confidence = calibration_curve(correct, proba.max(axis=1), n_bins=8,
                                             strategy="quantile")
    ax.plot(confidence, fraction, marker="o", color=color,
            label=f"{name}, log loss {log_loss(digit[test], proba):.3f}")
ax.set_xlabel("confidence of the top prediction")
ax.set_ylabel("fraction correct")
ax.set_title("reliability on held-out digits")
ax.legend(fontsize=8)
plt.show()
