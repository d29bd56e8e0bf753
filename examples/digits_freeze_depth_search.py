"""Which depth to freeze? A grid search over ``freeze`` on the built-in digits.

``FineTuneClassifier`` puts a new head on the embedded, ImageNet-pretrained
efficientnet_lite0 and fine-tunes the blocks above ``freeze``. ``GridSearchCV``
then finds the depth that suits the data, like any other hyper-parameter. Frozen
blocks are computed once per fit (and cached across folds with ``memory``), so the
deeper the freeze, the cheaper the fit. Runs offline in a few minutes on 2 CPU cores.

    python examples/digits_freeze_depth_search.py
"""

import tempfile
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from sktransfer import FineTuneClassifier, backbone_blocks


def main():
    digits = load_digits()
    X = digits.data / 16.0
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, train_size=600, stratify=digits.target, random_state=0)
    blocks = backbone_blocks("efficientnet_lite0", image_size=48)
    print(f"efficientnet_lite0 has {len(blocks)} blocks: {', '.join(b.name for b in blocks)}")

    with tempfile.TemporaryDirectory() as cache:
        model = FineTuneClassifier(image_size=48, image_shape=(8, 8), max_epochs=10,
                                   lr=2e-3, batch_size=64, random_state=0, memory=cache)
        search = GridSearchCV(model, {"freeze": [0, 3, 6, "all"]},
                              cv=StratifiedKFold(3, shuffle=True, random_state=0))
        start = time.perf_counter()
        search.fit(X_train, y_train)
        elapsed = time.perf_counter() - start

    print(f"\n{len(X_train)} training digits, 3-fold grid search in {elapsed:.0f} s\n")
    print(f"{'freeze':>8s} {'trainable blocks':>17s} {'cv accuracy':>14s} {'fit s':>7s}")
    results = search.cv_results_
    for params, mean, std, fit_time in zip(results["params"], results["mean_test_score"],
                                           results["std_test_score"], results["mean_fit_time"]):
        freeze = params["freeze"]
        trainable = 0 if freeze == "all" else len(blocks) - freeze
        print(f"{freeze!s:>8s} {trainable:>17d} {mean:8.3f} ± {std:.3f} {fit_time:7.1f}")
    print(f"\nbest freeze={search.best_params_['freeze']!r}: "
          f"held-out accuracy {search.score(X_test, y_test):.3f} on {len(X_test)} digits")


if __name__ == "__main__":
    main()
