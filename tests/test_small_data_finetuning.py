"""Issue 22: BatchNorm kept in inference mode, the head fit exactly first, epoch 0 scored."""

import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sktransfer import CNNFeatureExtractor, FineTuneClassifier, FineTuneRegressor
from sktransfer._training.linear_head import LOGISTIC_CS, RIDGE_ALPHAS


def resnet(estimator=FineTuneClassifier, **params):
    return estimator(**{"backbone": "resnet18", "weights": None, "image_size": 16,
                        "device": "cpu", "random_state": 0, "head_init": "probe",
                        "early_stopping": True, **params})


def common_scaling(features):
    """Centre each feature and divide all by one number, their root mean square."""
    mean = features.mean(axis=0)
    return FunctionTransformer(lambda f: (f - mean) / (features - mean).std())


def batchnorm_state(model):
    """(running statistics, affine weights) of every BatchNorm layer, copied."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return ([t.clone() for m in layers for t in (m.running_mean, m.running_var)],
            [m.weight.detach().clone() for m in layers])


@pytest.mark.slow
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


@pytest.mark.slow
def test_all_frozen_with_a_probe_head_is_the_probe(stripes):
    X, y = stripes
    model = resnet(freeze="all", early_stopping=False).fit(X, y)
    assert len(model.history_) == 0  # max_epochs=None: the exact head is the whole fit
    features = CNNFeatureExtractor("resnet18", weights=None, image_size=16,
                                   device="cpu").fit_transform(X)
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    probe = make_pipeline(common_scaling(features), GridSearchCV(
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
    probe = make_pipeline(common_scaling(features),
                          RidgeCV(alphas=RIDGE_ALPHAS)).fit(features, target)
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
                               freeze="all", head_init="random", max_epochs=2).fit(X, y)
    assert [row["epoch"] for row in model.history_] == [1, 2]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_auto_batchnorm_trains_the_statistics_from_enough_images(stripes, monkeypatch):
    import sktransfer._finetuning.base as trainable

    X, y = stripes  # 40 images

    def statistics_after(threshold):
        monkeypatch.setattr(trainable, "BATCHNORM_TRAIN_FROM", threshold)
        model = resnet(freeze=0, max_epochs=1, early_stopping=False, head_init="random",
                       batchnorm="auto").fit(X, y)
        return model.batchnorm_, batchnorm_state(model.net_.module_)[0]

    start = batchnorm_state(resnet(freeze=0, max_epochs=0, early_stopping=False)
                            .fit(X, y).net_.module_)[0]
    mode, few = statistics_after(41)  # 40 images are fewer
    assert mode == "frozen" and all(torch.equal(a, b) for a, b in zip(few, start))
    mode, enough = statistics_after(40)
    assert mode == "train" and not any(torch.equal(a, b) for a, b in zip(enough, start))


@pytest.mark.slow
def test_auto_head_is_the_probe_only_when_every_block_is_frozen(stripes):
    X, y = stripes
    frozen = resnet(freeze="all", head_init="auto").fit(X, y)
    assert frozen.head_init_ == "probe"
    assert [row["epoch"] for row in frozen.history_] == [0]  # the probe scored, no training
    probe = resnet(freeze="all", head_init="probe").fit(X, y)
    np.testing.assert_array_equal(frozen.predict_proba(X), probe.predict_proba(X))
    trained = resnet(freeze=1, head_init="auto", max_epochs=1).fit(X, y)
    assert trained.head_init_ == "random"
    assert [row["epoch"] for row in trained.history_] == [1]  # no probe start to score
    with pytest.raises(ValueError, match="head_init='probe', or max_epochs >= 1"):
        resnet(freeze=1, head_init="auto", max_epochs=0).fit(X, y)


def test_the_resolved_settings_survive_a_safe_file(stripes, tmp_path):
    from sktransfer import load, save

    X, y = stripes
    model = resnet(freeze=1, max_epochs=1, head_init="auto", batchnorm="auto").fit(X, y)
    save(model, tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert (loaded.batchnorm_, loaded.head_init_) == ("frozen", "random")
    assert loaded.net_.module_.batchnorm == "frozen"


def test_the_report_says_what_batchnorm_did():
    import pandas as pd

    from sktransfer.study.report import _finetune_settings

    def sentence(*sizes):
        return _finetune_settings(pd.DataFrame({"n_train": sizes}))

    assert "kept the BatchNorm statistics" in sentence(40, 60)
    assert "updated the BatchNorm statistics" in sentence(1198)
    assert "fewer than 100 training images" in sentence(60, 1198)


def test_auto_early_stopping_needs_a_validation_part_of_enough_images(stripes, monkeypatch):
    import sktransfer._finetuning.base as trainable

    X, y = stripes  # 40 images: a validation part of 6 at the default fraction

    def fit():
        return resnet(freeze=1, head_init="random", max_epochs=2, early_stopping="auto").fit(X, y)

    few = fit()
    assert not few.early_stopping_ and [row["epoch"] for row in few.history_] == [1, 2]
    assert "valid_loss" not in few.history_[-1] and few.best_epoch_ == 2
    monkeypatch.setattr(trainable, "MIN_VALIDATION_IMAGES", 6)
    enough = fit()
    assert enough.early_stopping_ and "valid_loss" in enough.history_[-1]
    monkeypatch.setattr(trainable, "MIN_VALIDATION_IMAGES", 7)
    assert not fit().early_stopping_
