"""FineTuneClassifier: freezing, learning rates, early stopping, caching, sklearn API."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import log_loss
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import make_pipeline

from sktransfer import CNNFeatureExtractor, FineTuneClassifier
from sktransfer._training import trunk as _trunk

from ._helpers import CountImages, counting_cnn, tiny_cnn


def tiny(**params):
    defaults = dict(backbone=tiny_cnn(), image_size=16, max_epochs=4, batch_size=8,
                    device="cpu", random_state=0, lr=0.01)
    return FineTuneClassifier(**{**defaults, **params})


def states(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_learns_and_round_trips_string_labels(stripes):
    X, y = stripes
    clf = tiny(freeze=0, max_epochs=15, early_stopping=False).fit(X, y)
    assert list(clf.classes_) == ["h", "v"]
    assert set(clf.predict(X)) <= {"h", "v"} and clf.predict(X).dtype == y.dtype
    assert clf.score(X, y) >= 0.9
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))


def test_non_contiguous_integer_labels(stripes):
    X, y = stripes
    labels = np.where(y == "h", 7, 3)
    clf = tiny(freeze=0, max_epochs=10, early_stopping=False).fit(X, labels)
    assert list(clf.classes_) == [3, 7]
    assert set(clf.predict(X)) <= {3, 7} and clf.score(X, labels) >= 0.8


@pytest.mark.parametrize("augment", [None, "light"])
def test_frozen_blocks_are_bit_for_bit_unchanged(stripes, augment):
    X, y = stripes
    backbone = tiny_cnn()
    before = states(backbone)
    clf = tiny(backbone=backbone, freeze=2, augment=augment, early_stopping=False,
               batchnorm="train").fit(X, y)  # the trainable block's statistics do move
    after = states(clf.net_.module_.blocks)
    for key in before:
        block = int(key.split(".")[0])
        if block < 2:  # frozen: weights and BatchNorm buffers identical
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["2.0.weight"], after["2.0.weight"])
    assert not torch.equal(before["2.1.running_mean"], after["2.1.running_mean"])
    assert clf.n_frozen_ == 2 and clf.n_blocks_ == 3


def test_freeze_all_features_equal_the_untouched_extractor(stripes):
    X, y = stripes
    clf = FineTuneClassifier("resnet18", weights=None, freeze="all", image_size=32,
                             max_epochs=2, random_state=0, device="cpu").fit(X, y)
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=32, device="cpu").fit(X)
    np.testing.assert_array_equal(clf.transform(X), extractor.transform(X))


@pytest.mark.parametrize("freeze, n_frozen", [(0, 0), (1, 1), (-1, 2), ("all", 3), (3, 3)])
def test_freeze_depths(freeze, n_frozen, stripes):
    X, y = stripes
    clf = tiny(freeze=freeze, max_epochs=1).fit(X, y)
    assert clf.n_frozen_ == n_frozen
    trainable = [name for name, p in clf.net_.module_.named_parameters() if p.requires_grad]
    assert {int(n.split(".")[1]) for n in trainable if n.startswith("blocks")} == set(range(n_frozen, 3))


def test_per_block_learning_rates(stripes):
    X, y = stripes
    clf = tiny(freeze=1, lr=0.01, layer_lr_decay=0.5, max_epochs=1).fit(X, y)
    lr_of = {}
    parameters = dict(clf.net_.module_.named_parameters())
    for group in clf.net_.optimizer_.param_groups:
        for name, parameter in parameters.items():
            if any(parameter is p for p in group["params"]):
                lr_of[name] = group["lr"]
    assert lr_of["head.weight"] == pytest.approx(0.01)
    assert lr_of["blocks.2.0.weight"] == pytest.approx(0.005)
    assert lr_of["blocks.1.0.weight"] == pytest.approx(0.0025)
    frozen = parameters["blocks.0.0.weight"]
    assert not frozen.requires_grad and frozen.grad is None  # frozen: no gradient, no step


def test_early_stopping_restores_the_best_epoch(stripes):
    X, y = stripes
    clf = tiny(freeze=0, optimizer="sgd", lr=0.5, max_epochs=25, patience=3,
               validation_fraction=0.25, early_stopping=True).fit(X, y)
    losses, epochs = clf.history_[:, "valid_loss"], clf.history_[:, "epoch"]
    kept = losses[epochs.index(clf.best_epoch_)]
    assert len(losses) < 25 and kept <= min(losses) * (1 + 1e-4)  # skorch's relative threshold
    assert clf.best_epoch_ < epochs[-1]
    # The split is stratified and seeded by random_state: rebuild it and score the kept weights.
    seed = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    encoded = np.searchsorted(clf.classes_, y)
    _, valid = train_test_split(np.arange(40), test_size=10, stratify=encoded, random_state=seed)
    loss = log_loss(encoded[valid], clf.predict_proba(X[valid]), labels=[0, 1])
    assert loss == pytest.approx(kept, rel=1e-4, abs=1e-6)


def test_cached_and_uncached_training_agree(stripes, monkeypatch):
    X, y = stripes
    cached = tiny(freeze=2, max_epochs=3).fit(X, y)
    assert cached.history_[-1, "train_loss"] > 0
    monkeypatch.setattr(_trunk, "MAX_CACHED_BYTES", 0)  # forces the frozen blocks to run every step
    uncached = tiny(freeze=2, max_epochs=3).fit(X, y)
    np.testing.assert_allclose(cached.predict_proba(X), uncached.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(cached.history_[:, "train_loss"], uncached.history_[:, "train_loss"], rtol=1e-5)


@pytest.mark.parametrize("freeze", ["all", 2])
def test_memory_reuses_frozen_outputs_across_fits_and_folds(stripes, tmp_path, freeze):
    X, y = stripes
    CountImages.seen = []
    settings = dict(backbone=counting_cnn(), freeze=freeze, max_epochs=2,
                    backend="torch")  # counted in torch
    with_memory = tiny(**settings, memory=str(tmp_path)).fit(X[:30], y[:30])
    assert sum(CountImages.seen) == 30  # once per image, not once per epoch
    tiny(**settings, memory=str(tmp_path)).fit(X[10:], y[10:])
    assert sum(CountImages.seen) == 40  # only the 10 images not seen before
    proba = with_memory.predict_proba(X)
    assert sum(CountImages.seen) == 40  # predict's frozen part comes from the same cache
    plain = tiny(**settings).fit(X[:30], y[:30])
    np.testing.assert_allclose(proba, plain.predict_proba(X), atol=1e-5)


def test_same_random_state_same_predictions(stripes):
    X, y = stripes
    first = tiny(freeze=1, augment="light").fit(X, y).predict_proba(X)
    second = tiny(freeze=1, augment="light").fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    other = tiny(freeze=1, augment="light", random_state=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other)


def test_pickle_and_joblib_round_trip(stripes, tmp_path):
    X, y = stripes
    clf = tiny(freeze=1).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    joblib.dump(clf, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").predict(X), clf.predict(X))
    assert len(pickle.dumps(clf)) < 3 * len(pickle.dumps(clf.net_.module_.state_dict())) + 200_000


def test_warm_start_and_partial_fit_continue_training(stripes):
    X, y = stripes
    clf = tiny(freeze=0, max_epochs=2, early_stopping=False, warm_start=True).fit(X, y)
    weights = states(clf.net_.module_)
    clf.fit(X, y)
    assert len(clf.history_) == 4
    assert not torch.equal(weights["head.weight"], clf.net_.module_.head.weight)
    online = tiny(freeze=0, early_stopping=False)
    online.partial_fit(X, y)
    online.partial_fit(X, y)
    assert len(online.history_) == 2
    with pytest.raises(ValueError, match="classes \\['x'\\]"):
        online.partial_fit(X[:2], np.array(["h", "x"]))


def test_cross_val_score_in_a_pipeline_equals_fitting_each_fold_by_hand(stripes):
    X, y = stripes
    clf = tiny(freeze=1, max_epochs=3)
    scores = cross_val_score(make_pipeline(clf), X, y, cv=StratifiedKFold(2))
    by_hand = [clone(clf).fit(X[train], y[train]).score(X[test], y[test])
               for train, test in StratifiedKFold(2).split(X, y)]
    np.testing.assert_array_equal(scores, by_hand)
    assert not hasattr(clf, "net_")  # cross-validation fitted clones, not the original


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_freeze(stripes, n_jobs):
    X, y = stripes
    search = GridSearchCV(tiny(max_epochs=3), {"freeze": [0, 1, "all"]}, cv=2, n_jobs=n_jobs).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_["freeze"] == [0, 1, "all"][int(np.argmax(scores))]
    if n_jobs == 2:
        # Each of the 2 loky workers runs torch on 1 thread (joblib limits it); float
        # reductions depend on the thread count, so the serial run gets 1 thread too.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            serial = GridSearchCV(tiny(max_epochs=3), {"freeze": [0, 1, "all"]}, cv=2, n_jobs=1).fit(X, y)
        finally:
            torch.set_num_threads(threads)
        np.testing.assert_array_equal(scores, serial.cv_results_["mean_test_score"])
    else:  # each candidate scored as fitting it on each fold by hand would
        for index, freeze in enumerate([0, 1, "all"]):
            for k, (train, test) in enumerate(StratifiedKFold(2).split(X, y)):
                by_hand = tiny(max_epochs=3, freeze=freeze).fit(X[train], y[train])
                assert search.cv_results_[f"split{k}_test_score"][index] == \
                    by_hand.score(X[test], y[test])


def test_class_weight(stripes):
    X, y = stripes
    clf = tiny(freeze=0, class_weight={"h": 5.0}, max_epochs=1).fit(X, y)
    assert clf.net_.criterion_.class_weight.tolist() == [5.0, 1.0]
    balanced = tiny(class_weight="balanced", max_epochs=1, early_stopping=False).fit(X[:25], y[:25])
    expected = 25 / (2 * np.bincount(np.searchsorted(["h", "v"], y[:25])))
    np.testing.assert_allclose(balanced.net_.criterion_.class_weight.numpy(), expected, rtol=1e-6)


def test_predict_before_fit(stripes):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        tiny().predict(stripes[0])


def test_partial_fit_validates_parameters_on_every_call(stripes):
    X, y = stripes
    online = tiny(freeze=0, early_stopping=False)
    online.partial_fit(X, y)
    online.set_params(lr=-1.0)
    with pytest.raises(ValueError, match="'lr' parameter"):
        online.partial_fit(X, y)
    assert len(online.history_) == 1
