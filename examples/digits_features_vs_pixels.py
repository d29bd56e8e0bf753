"""Pretrained CNN features + logistic regression against raw pixels + SVC, on the digits.

Both pipelines run in one ``cross_validate`` on the same ``X``: scikit-learn's built-in
8x8 digits, read as images through ``image_shape``. Runs offline (the default backbone's
ImageNet weights are embedded) in about a minute on 2 CPU cores.

    python examples/digits_features_vs_pixels.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sktransfer import CNNFeatureExtractor, PixelFeatures


def main():
    digits = load_digits()
    X = digits.data / 16.0  # pixels in [0, 1]
    y = digits.target
    models = {
        "raw pixels + SVC": make_pipeline(PixelFeatures(size=8, grayscale=True, image_shape=(8, 8)), SVC()),
        "efficientnet_lite0 features + logistic regression": make_pipeline(
            CNNFeatureExtractor(image_size=64, image_shape=(8, 8), progress=False),
            StandardScaler(),
            LogisticRegression(max_iter=1000),
        ),
    }
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    print(f"{len(X)} digits, 3-fold cross-validation\n")
    print(f"{'method':52s} {'accuracy':>14s} {'fit s':>7s} {'score s':>8s}")
    for name, model in models.items():
        result = cross_validate(model, X, y, cv=cv)
        scores = result["test_score"]
        print(f"{name:52s} {scores.mean():8.3f} ± {scores.std():.3f} "
              f"{np.mean(result['fit_time']):7.1f} {np.mean(result['score_time']):8.1f}")


if __name__ == "__main__":
    main()
