"""Issue 22: BatchNorm kept in inference mode, the head fit exactly first, epoch 0 scored."""

import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor, FineTuneClassifier, FineTuneRegressor
from sktransfer._linear_head import LOGISTIC_CS, RIDGE_ALPHAS


def resnet(estimator=FineTuneClassifier, **params):
    return estimator(**{"backbone": "resnet18", "weights": None, "image_size": 16,
                        "device": "cpu", "random_state": 0, "head_init": "probe", **params})


def batchnorm_state(model):
    """(running statistics, affine weights) of every BatchNorm layer, copied."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return ([t.clone() for m in layers for t in (m.running_mean, m.running_var)],
            [m.weight.detach().clone() for m in layers])


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_frozen_batchnorm_keeps_its_statistics_while_its_weights_train(stripes, batchnorm):
    X, y = stripes
    start_stats, start_weights = batchnorm_state(
        resnet(freeze=0, max_epochs=0, early_stopping=False).fit(X, y).net_.module_)
    stats, weights = batchnorm_state(resnet(
        freeze=0, max_epochs=2, early_stopping=False, batchnorm=batchnorm).fit(X, y).net_.module_)
    same = [torch.equal(a, b) for a, b in zip(stats, start_stats)]
    assert all(same) if batchnorm == "frozen" else not any(same)
    assert not any(torch.equal(a, b) for a, b in zip(weights, start_weights))  # they trained


def test_all_frozen_with_a_probe_head_is_the_probe(stripes):
    X, y = stripes
    model = resnet(freeze="all", early_stopping=False).fit(X, y)
    assert len(model.history_) == 0  # max_epochs=None: the exact head is the whole fit
    features = CNNFeatureExtractor("resnet18", weights=None, image_size=16,
                                   device="cpu").fit_transform(X)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    probe = make_pipeline(StandardScaler(), GridSearchCV(
        LogisticRegression(max_iter=1000), {"C": LOGISTIC_CS}, scoring="neg_log_loss",
        cv=StratifiedKFold(3, shuffle=True, random_state=seed))).fit(features, y)
    np.testing.assert_allclose(model.predict_proba(X), probe.predict_proba(features), atol=1e-4)
    assert model.predict(X).tolist() == probe.predict(features).tolist()


def test_a_regressor_all_frozen_is_the_ridge_probe(stripes):
    X, y = stripes
    target = np.where(y == "h", 3.0, -1.0) + X.mean(axis=(1, 2, 3)) / 50
    model = resnet(FineTuneRegressor, freeze="all", early_stopping=False).fit(X, target)
    features = CNNFeatureExtractor("resnet18", weights=None, image_size=16,
                                   device="cpu").fit_transform(X)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(features, target)
    np.testing.assert_allclose(model.predict(X), probe.predict(features), rtol=1e-4, atol=1e-4)


def test_epoch_0_is_scored_and_can_be_the_restored_best(stripes):
    X, y = stripes
    probe_only = resnet(freeze=0, max_epochs=0).fit(X, y)
    assert [row["epoch"] for row in probe_only.history_] == [0]
    diverging = resnet(freeze=0, max_epochs=3, patience=3, lr=5.0).fit(X, y)
    epochs = [row["epoch"] for row in diverging.history_]
    assert epochs == [0, 1, 2, 3]
    losses = [row["valid_loss"] for row in diverging.history_]
    assert not any(loss <= losses[0] for loss in losses[1:])  # lr=5 only made it worse
    assert diverging.best_epoch_ == 0
    np.testing.assert_allclose(diverging.predict_proba(X), probe_only.predict_proba(X), atol=1e-5)


def test_a_random_head_starts_training_at_epoch_1(stripes):
    X, y = stripes
    model = FineTuneClassifier("resnet18", weights=None, image_size=16, device="cpu",
                               freeze="all", max_epochs=2).fit(X, y)  # the default head
    assert [row["epoch"] for row in model.history_] == [1, 2]


def test_sample_weights_change_the_probe(stripes):
    X, y = stripes
    plain = resnet(freeze="all", early_stopping=False).fit(X, y)
    weight = np.where(y == "h", 20.0, 1.0)
    weighted = resnet(freeze="all", early_stopping=False).fit(X, y, sample_weight=weight)
    h = list(plain.classes_).index("h")

    def log_odds_of_h(model):
        p = model.predict_proba(X)[:, h]
        return np.log(p) - np.log1p(-p)

    assert (log_odds_of_h(weighted) - log_odds_of_h(plain)).mean() > 0.5


@pytest.mark.parametrize("n_classes, validation_fraction", [(4, 0.15), (3, 0.3), (2, 0.5)])
def test_the_few_samples_message_names_a_number_that_fits(n_classes, validation_fraction):
    rng = np.random.default_rng(0)

    def fit(per_class):
        X = rng.integers(0, 256, (per_class * n_classes, 8, 8, 3), dtype=np.uint8)
        y = np.repeat(np.arange(n_classes), per_class)
        return resnet(freeze="all", image_size=8, validation_fraction=validation_fraction).fit(X, y)

    with pytest.raises(ValueError, match=r"at least \d+ images of each class") as info:
        fit(1)
    needed = int(re.search(r"at least (\d+) images", str(info.value)).group(1))
    fit(needed)  # fits
    with pytest.raises(ValueError, match=f"at least {needed} images of each class"):
        fit(needed - 1)
