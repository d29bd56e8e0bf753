"""Beyond single labels: regression, multi-label, sample weights and logits."""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import sktransfer
from sktransfer import FineTuneClassifier, FineTuneClassifierCV, FineTuneRegressor

from ._helpers import tiny_cnn

FAST = dict(image_size=16, max_epochs=30, lr=1e-2, batch_size=16, device="cpu",
            random_state=0, progress=False)


@pytest.fixture(scope="module")
def discs():
    """160 noisy 16x16 images of a bright disc; y: the fraction of the image it covers."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    radius, cx, cy = rng.uniform(2, 7, 160), rng.uniform(5, 11, 160), rng.uniform(5, 11, 160)
    masks = np.stack([(yy - cy[i]) ** 2 + (xx - cx[i]) ** 2 <= radius[i] ** 2
                      for i in range(160)])
    X = (masks[..., None] * 200 + rng.integers(0, 40, (160, 16, 16, 3))).astype(np.uint8)
    return X, masks.mean(axis=(1, 2))


@pytest.fixture(scope="module")
def tagged():
    """160 images with up to three tags: a red top half, a green left half, a blue corner."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 60, (160, 16, 16, 3)).astype(np.uint8)
    Y = rng.integers(0, 2, (160, 3))
    X[Y[:, 0] == 1, :8, :, 0] = 220
    X[Y[:, 1] == 1, :, :8, 1] = 220
    X[Y[:, 2] == 1, 8:, 8:, 2] = 220
    return X, Y


# -- regression -------------------------------------------------------------------------

@pytest.mark.slow
def test_regressor_learns_the_area_of_a_drawn_disc(discs):
    X, y = discs
    reg = FineTuneRegressor(tiny_cnn(), **FAST).fit(X[:120], y[:120])
    assert reg.predict(X[120:]).shape == (40,)
    assert reg.score(X[120:], y[120:]) >= 0.8  # R^2 on images it never saw
    assert reg.target_mean_ == pytest.approx([y[:120].mean()])
    assert reg.transform(X[:3]).shape == (3, 32)


@pytest.mark.slow
def test_regressor_two_targets_in_their_own_units(discs):
    X, y = discs
    Y = np.c_[y, 1000 * y + 50]  # the same quantity in other units: standardized alike
    reg = FineTuneRegressor(tiny_cnn(), **FAST).fit(X[:120], Y[:120])
    predicted = reg.predict(X[120:])
    assert predicted.shape == (40, 2) and reg.n_outputs_ == 2
    # Each output in its own units: both learn the area, neither is swamped by the other.
    assert np.corrcoef(predicted[:, 1], 1000 * predicted[:, 0] + 50)[0, 1] >= 0.98
    from sklearn.metrics import r2_score
    assert r2_score(Y[120:], predicted, multioutput="raw_values").min() >= 0.8


@pytest.mark.parametrize("loss", ["squared_error", "huber"])
def test_regressor_saves_and_pickles(discs, tmp_path, loss):
    X, y = discs
    # A named backbone: safe files hold names and numbers, not modules.
    reg = FineTuneRegressor("resnet18", weights=None, freeze=3, loss=loss,
                            **{**FAST, "max_epochs": 1}).fit(X[:40], y[:40])
    predicted = reg.predict(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), predicted)
    sktransfer.save(reg, tmp_path / "reg.safetensors")
    np.testing.assert_allclose(sktransfer.load(tmp_path / "reg.safetensors").predict(X),
                               predicted, rtol=1e-5, atol=1e-6)


# -- multi-label ------------------------------------------------------------------------

@pytest.mark.slow
def test_multilabel_predicts_an_indicator_matrix(tagged):
    X, Y = tagged
    clf = FineTuneClassifier(tiny_cnn(), **FAST).fit(X[:120], Y[:120])
    predicted = clf.predict(X[120:])
    assert predicted.shape == (40, 3) and set(np.unique(predicted)) <= {0, 1}
    assert list(clf.classes_) == [0, 1, 2]
    assert f1_score(Y[120:], predicted, average=None).min() >= 0.9
    proba = clf.predict_proba(X[120:])
    assert proba.shape == (40, 3) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(axis=1), 1)  # each label its own probability
    np.testing.assert_array_equal(predicted, (proba >= 0.5).astype(int))
    strict = clf.set_params(threshold=0.99).predict(X[120:])
    assert strict.sum() <= predicted.sum()
    assert clf.decision_function(X[:5]).shape == (5, 3)


def test_multilabel_saves_and_warns_about_constant_labels(tagged, tmp_path):
    X, Y = tagged
    Y = np.c_[Y, np.ones(len(Y), dtype=int)]
    with pytest.warns(UserWarning, match=r"Label\(s\) \[3\] are the same"):
        clf = FineTuneClassifier("resnet18", weights=None, freeze=3,
                                 **{**FAST, "max_epochs": 1}).fit(X[:40], Y[:40])
    sktransfer.save(clf, tmp_path / "tags.safetensors")
    loaded = sktransfer.load(tmp_path / "tags.safetensors")
    np.testing.assert_allclose(loaded.predict_proba(X[:40]), clf.predict_proba(X[:40]),
                               atol=1e-6)
    assert loaded.predict(X[:40]).shape == (40, 4)


# -- sample weights ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: FineTuneClassifier(tiny_cnn(), class_weight="balanced", **FAST),
    lambda: FineTuneRegressor(tiny_cnn(), **FAST),
], ids=["classifier", "regressor"])
def test_weights_of_one_train_the_same_model_as_no_weights(discs, make):
    X, y = discs
    target = (y > np.median(y)).astype(int) if "Classifier" in make().__class__.__name__ else y
    target = target[:60]
    plain = make().set_params(max_epochs=3, early_stopping=True).fit(X[:60], target)
    ones = make().set_params(max_epochs=3, early_stopping=True).fit(X[:60], target,
                                                                    sample_weight=np.ones(60))
    np.testing.assert_allclose(ones.transform(X), plain.transform(X), atol=1e-6)
    assert [e["valid_loss"] for e in ones.history_] == [e["valid_loss"] for e in plain.history_]


@pytest.mark.slow
def test_heavier_weights_pull_predictions_toward_their_samples(discs):
    """Labels that contradict each other: the weighted class wins the disputed images."""
    X, _ = discs
    y = np.arange(160) % 2  # random with respect to the images
    weight = np.where(y == 1, 20.0, 1.0)
    plain = FineTuneClassifier(tiny_cnn(), freeze="all", early_stopping=False,
                               **{**FAST, "max_epochs": 10}).fit(X, y)
    weighted = FineTuneClassifier(tiny_cnn(), freeze="all", early_stopping=False,
                                  **{**FAST, "max_epochs": 10}).fit(X, y, sample_weight=weight)
    assert weighted.predict(X).mean() > max(0.9, plain.predict(X).mean())


def test_weights_reach_the_model_through_pipeline_and_grid_search(discs):
    X, y = discs
    X, y = X[:60], (y[:60] > np.median(y[:60])).astype(int)
    weight = np.random.default_rng(0).uniform(0.1, 3, 60)
    settings = {**FAST, "max_epochs": 3}
    direct = FineTuneClassifier(tiny_cnn(), freeze=1, **settings).fit(X, y, sample_weight=weight)
    unweighted = FineTuneClassifier(tiny_cnn(), freeze=1, **settings).fit(X, y)
    assert not np.allclose(direct.predict_proba(X), unweighted.predict_proba(X))
    with sklearn.config_context(enable_metadata_routing=True):
        requested = (FineTuneClassifier(tiny_cnn(), **settings).set_fit_request(sample_weight=True)
                     .set_score_request(sample_weight=False))
        pipeline = make_pipeline(sklearn.base.clone(requested).set_params(freeze=1))
        pipeline.fit(X, y, sample_weight=weight)
        search = GridSearchCV(requested, {"freeze": [1]}, cv=2).fit(X, y, sample_weight=weight)
    for model in (pipeline, search):
        np.testing.assert_allclose(model.predict_proba(X), direct.predict_proba(X), atol=1e-6)


@pytest.mark.slow
def test_search_passes_weights_to_every_fold(discs):
    X, y = discs
    X, y = X[:60], (y[:60] > np.median(y[:60])).astype(int)
    weight = np.random.default_rng(0).uniform(0.1, 3, 60)
    settings = {**FAST, "max_epochs": 3, "freezes": ["all", 1], "cv": 2}
    search = FineTuneClassifierCV(tiny_cnn(), **settings)
    grid = GridSearchCV(FineTuneClassifier(tiny_cnn(), **{**FAST, "max_epochs": 3}),
                        {"freeze": ["all", 1]}, cv=2)
    search.fit(X, y, sample_weight=weight)
    grid.fit(X, y, sample_weight=weight)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               grid.cv_results_["mean_test_score"], atol=1e-12)


# -- logits -----------------------------------------------------------------------------

@pytest.mark.slow
def test_decision_function_feeds_calibration(discs):
    X, y = discs
    labels = np.where(y > np.median(y), "big", "small")
    clf = FineTuneClassifier(tiny_cnn(), **{**FAST, "max_epochs": 10}).fit(X, labels)
    scores = clf.decision_function(X)
    assert scores.shape == (160,)
    logits = clf._head_outputs(X).numpy()
    np.testing.assert_allclose(scores, logits[:, 1] - logits[:, 0])
    assert ((scores > 0) == (clf.predict(X) == clf.classes_[1])).all()
    methods = ["sigmoid"]
    if "temperature" in CalibratedClassifierCV._parameter_constraints["method"][0].options:
        methods.append("temperature")
    for method in methods:
        calibrated = CalibratedClassifierCV(
            FineTuneClassifier(tiny_cnn(), **{**FAST, "max_epochs": 10}), method=method,
            cv=2).fit(X[:120], labels[:120])
        proba = calibrated.predict_proba(X[120:])
        assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1)
        assert calibrated.score(X[120:], labels[120:]) >= 0.8


def test_multiclass_decision_function_is_the_logits(tagged):
    X, Y = tagged
    y = Y @ [1, 2, 4]  # 8 classes from the tag combinations
    clf = FineTuneClassifier(tiny_cnn(), early_stopping=False, **{**FAST, "max_epochs": 2})
    clf.fit(X, y)
    scores = clf.decision_function(X)
    assert scores.shape == (160, len(np.unique(y)))
    np.testing.assert_array_equal(clf.classes_[scores.argmax(1)], clf.predict(X))


# -- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("make, y, message", [
    (FineTuneClassifier, lambda y: y, "continuous values.*FineTuneRegressor"),
    (FineTuneClassifier, lambda y: np.c_[y > 0.2, y > 0.3].astype(int) * 2,
     "indicator matrix.*MultiOutputClassifier"),
    (FineTuneClassifier, lambda y: np.c_[y, y], "continuous values.*FineTuneRegressor"),
    (FineTuneClassifier, lambda y: np.where(y > 0.2, 1.0, np.nan), "NaN"),
    (FineTuneRegressor, lambda y: np.where(y > 0.2, y, np.nan), "NaN.*Drop the samples"),
])
def test_targets_that_do_not_fit_the_estimator_are_named(discs, make, y, message):
    X, area = discs
    with pytest.raises(ValueError, match=message):
        make(tiny_cnn(), **FAST).fit(X[:20], y(area[:20]))


# scikit-learn's own checks (_check_sample_weight), with its wording.
@pytest.mark.parametrize("weight, error, message", [
    (-np.ones(20), ValueError, "Negative values in data passed to `sample_weight`"),
    (np.r_[np.nan, np.ones(19)], ValueError, "sample_weight contains NaN"),
    (np.r_[np.inf, np.ones(19)], ValueError, "sample_weight contains infinity"),
    (np.ones(19), ValueError, r"sample_weight.shape == \(19,\), expected \(20,\)"),
    (np.zeros(20), ValueError, "at least one non-zero number"),
    (["heavy"] * 20, ValueError, "could not convert string to float: 'heavy'"),
])
@pytest.mark.parametrize("make", [FineTuneClassifier, FineTuneRegressor])
def test_bad_sample_weights_are_named(discs, make, weight, error, message):
    X, area = discs
    y = (area[:20] > 0.2).astype(int) if make is FineTuneClassifier else area[:20]
    with pytest.raises(error, match=message):
        make(tiny_cnn(), **FAST).fit(X[:20], y, sample_weight=weight)


def test_warnings_are_not_raised_for_a_plain_fit(discs):
    X, y = discs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FineTuneRegressor(tiny_cnn(), **{**FAST, "max_epochs": 1}).fit(X[:40], y[:40])


def test_balanced_class_weights_count_the_sample_weights(discs):
    X, area = discs
    y = (np.arange(100) < 90).astype(int)  # 90 of class 1, 10 of class 0
    weight = np.where(np.arange(100) < 80, 0.0, 1.0)  # 10 and 10 count
    clf = FineTuneClassifier(tiny_cnn(), class_weight="balanced", early_stopping=False,
                             **{**FAST, "max_epochs": 1}).fit(X[:100], y, sample_weight=weight)
    np.testing.assert_allclose(clf.net_.criterion_.class_weight.numpy(), [1.0, 1.0])


def test_a_bad_weight_leaves_the_fitted_model_as_it_was(tagged):
    X, Y = tagged
    clf = FineTuneClassifier(tiny_cnn(), **{**FAST, "max_epochs": 1}).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="Negative values"):
        clf.fit(X, Y, sample_weight=-np.ones(len(X)))
    assert list(clf.classes_) == [0, 1] and clf.predict(X).shape == (160,)


def test_a_warm_fit_takes_the_loss_set_since(discs):
    X, y = discs
    reg = FineTuneRegressor(tiny_cnn(), warm_start=True, **dict(FAST, max_epochs=1))
    reg.fit(X[:40], y[:40])
    assert isinstance(reg.net_.criterion_.loss, torch.nn.MSELoss)
    reg.set_params(loss="huber", huber_delta=0.5).fit(X[:40], y[:40])
    assert isinstance(reg.net_.criterion_.loss, torch.nn.HuberLoss)
    assert reg.net_.criterion_.loss.delta == 0.5
    clf = FineTuneClassifier(tiny_cnn(), warm_start=True, early_stopping=False,
                             **dict(FAST, max_epochs=1))
    labels = (y[:40] > np.median(y[:40])).astype(int)
    labels[:5] = 0  # unequal classes: balanced weights differ from none
    clf.fit(X[:40], labels)
    assert clf.net_.criterion_.class_weight is None
    clf.set_params(class_weight="balanced").fit(X[:40], labels)
    weights = clf.net_.criterion_.class_weight.numpy()
    np.testing.assert_allclose(weights, 40 / (2 * np.bincount(labels)), rtol=1e-6)
