"""Regression, multi-label tags, sample weights and calibrated probabilities, on the digits.

Offline, on 2 cores in about 3.5 minutes: efficientnet_lite0's embedded ImageNet weights,
digits upscaled to 48 px, the top three blocks fine-tuned (freeze=6).

1. FineTuneRegressor learns a number from each image: the digit's value, and the
   fraction of its pixels that are ink (R^2 and MAE on held-out digits, against ridge
   regression on the pixels).
2. A multi-label FineTuneClassifier tags each digit "even", "above 4" and "has a loop"
   (0, 6, 8, 9) at once: per-tag F1 and subset accuracy.
3. Sample weights: with only 8 training images of digit 3, weighting them 10x
   recalls more 3s.
4. decision_function (the logits) feeds CalibratedClassifierCV (temperature scaling
   where scikit-learn has it, else sigmoid).

    python examples/beyond_single_labels.py
"""

import time

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import RidgeCV
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import FineTuneClassifier, FineTuneRegressor, PixelFeatures
from sktransfer.datasets import load_digits_images

SETTINGS = dict(freeze=6, image_size=48, max_epochs=8, batch_size=32, random_state=0,
                progress=False)


def main():
    X, digit = load_digits_images()
    X, digit = X[:900], digit[:900]
    ink = (X.reshape(len(X), -1) > 0.5).mean(axis=1)  # fraction of ink pixels (X in [0, 1])
    tags = np.c_[digit % 2 == 0, digit > 4, np.isin(digit, [0, 6, 8, 9])].astype(int)
    train, test = train_test_split(np.arange(len(X)), test_size=0.3, random_state=0,
                                   stratify=digit)

    for name, target in [("digit value", digit.astype(float)), ("ink fraction", ink)]:
        start = time.perf_counter()
        regressor = FineTuneRegressor(**SETTINGS).fit(X[train], target[train])
        predicted = regressor.predict(X[test])
        ridge = make_pipeline(PixelFeatures(16), StandardScaler(), RidgeCV())
        baseline = ridge.fit(X[train], target[train]).predict(X[test])
        print(f"1. {name}: fine-tuned R^2 {r2_score(target[test], predicted):.3f}, MAE "
              f"{mean_absolute_error(target[test], predicted):.3f}; ridge on pixels R^2 "
              f"{r2_score(target[test], baseline):.3f}, MAE "
              f"{mean_absolute_error(target[test], baseline):.3f} "
              f"({time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    tagger = FineTuneClassifier(**SETTINGS).fit(X[train], tags[train])
    predicted = tagger.predict(X[test])
    f1 = f1_score(tags[test], predicted, average=None)
    print(f"2. tags even / above 4 / has a loop: F1 {f1[0]:.3f} / {f1[1]:.3f} / {f1[2]:.3f}, "
          f"subset accuracy {accuracy_score(tags[test], predicted):.3f} "
          f"({time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    threes = train[digit[train] == 3]
    scarce = np.setdiff1d(train, threes[8:])  # only 8 training images of digit 3
    weight = np.where(digit[scarce] == 3, 10.0, 1.0)
    plain = FineTuneClassifier(**SETTINGS).fit(X[scarce], digit[scarce])
    weighted = FineTuneClassifier(**SETTINGS).fit(X[scarce], digit[scarce],
                                                  sample_weight=weight)
    is_three = digit[test] == 3
    print(f"3. recall of digit 3 from 8 training images: "
          f"{np.mean(plain.predict(X[test])[is_three] == 3):.3f} plain, "
          f"{np.mean(weighted.predict(X[test])[is_three] == 3):.3f} weighted 10x "
          f"(accuracy {plain.score(X[test], digit[test]):.3f} and "
          f"{weighted.score(X[test], digit[test]):.3f}; {time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    methods = CalibratedClassifierCV._parameter_constraints["method"][0].options
    method = "temperature" if "temperature" in methods else "sigmoid"
    model = FineTuneClassifier(**SETTINGS).fit(X[train], digit[train])
    calibrated = CalibratedClassifierCV(FineTuneClassifier(**SETTINGS), method=method,
                                        cv=3).fit(X[train], digit[train])
    print(f"4. log loss on held-out digits: {log_loss(digit[test], model.predict_proba(X[test])):.3f} "
          f"softmax, {log_loss(digit[test], calibrated.predict_proba(X[test])):.3f} with "
          f"CalibratedClassifierCV(method={method!r}) on decision_function "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
