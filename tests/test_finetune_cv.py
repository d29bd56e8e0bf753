"""FineTuneClassifierCV: the same choice as GridSearchCV over freeze, the trunk run once."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sktransfer
from sktransfer import FineTuneClassifier, FineTuneClassifierCV

from ._helpers import CountImages, counting_cnn

SETTINGS = dict(image_size=16, max_epochs=3, batch_size=8, lr=0.01, device="cpu",
                random_state=0, progress=False)
FREEZES = ["all", 2, 1]


@pytest.mark.slow
def test_same_results_as_grid_search_over_the_same_depths_and_folds(stripes):
    X, y = stripes
    cv = StratifiedKFold(3)
    search = FineTuneClassifierCV(counting_cnn(), freezes=FREEZES, cv=cv, **SETTINGS).fit(X, y)
    grid = GridSearchCV(FineTuneClassifier(counting_cnn(), **SETTINGS), {"freeze": FREEZES},
                        cv=cv).fit(X, y)
    for key in ["split0_test_score", "split1_test_score", "split2_test_score",
                "mean_test_score", "rank_test_score"]:
        np.testing.assert_allclose(search.cv_results_[key], grid.cv_results_[key], atol=1e-12)
    assert search.freeze_ == grid.best_params_["freeze"]
    assert search.best_score_ == pytest.approx(grid.best_score_)
    assert list(pd.DataFrame(search.cv_results_)["param_freeze"]) == FREEZES
    refit = grid.best_estimator_
    np.testing.assert_allclose(search.predict_proba(X), refit.predict_proba(X), atol=1e-5)


@pytest.mark.slow
def test_the_trunk_runs_once_for_all_depths_and_folds(stripes):
    X, y = stripes
    counted = dict(SETTINGS, backend="torch")  # CountImages counts in torch
    CountImages.seen = []
    FineTuneClassifierCV(counting_cnn(), freezes=FREEZES, cv=3, **counted).fit(X, y)
    assert sum(CountImages.seen) == len(X)  # 3 depths x 3 folds + the refit: one pass
    CountImages.seen = []
    GridSearchCV(FineTuneClassifier(counting_cnn(), **counted), {"freeze": FREEZES},
                 cv=3).fit(X, y)
    assert sum(CountImages.seen) > 9 * len(X) * 2 / 3  # each fit its own pass


@pytest.mark.slow
def test_fitted_search_predicts_pickles_and_saves(stripes, tmp_path):
    import pickle

    X, y = stripes
    search = FineTuneClassifierCV("resnet18", weights=None, freezes=["all", 4],
                                  cv=2, **SETTINGS).fit(X, y)
    assert search.n_frozen_ == {"all": 5, 4: 4}[search.freeze_]
    proba = search.predict_proba(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(search)).predict_proba(X), proba)
    sktransfer.save(search, tmp_path / "search.safetensors")
    loaded = sktransfer.load(tmp_path / "search.safetensors")
    assert loaded.freeze_ == search.freeze_ and loaded.n_frozen_ == search.n_frozen_
    pd.testing.assert_frame_equal(pd.DataFrame(loaded.cv_results_),
                                  pd.DataFrame(search.cv_results_), check_dtype=False)
    np.testing.assert_array_equal(loaded.predict_proba(X), proba)


def test_no_test_fold_leaks_into_the_fold_models(stripes, monkeypatch):
    """Each fold's model trains on exactly its fold's training rows (recorded, not guessed)."""
    from sklearn.model_selection import KFold

    from sktransfer._finetuning.base import FineTuneBase

    X, y = stripes
    trained_on = []
    fit = FineTuneBase._fit

    def recording_fit(self, X_fit, y_fit, sample_weight, *, trunk_inputs=None, **kwargs):
        n_inputs = None if trunk_inputs is None else len(trunk_inputs)
        trained_on.append(({image.tobytes() for image in X_fit}, len(X_fit), n_inputs))
        return fit(self, X_fit, y_fit, sample_weight, trunk_inputs=trunk_inputs, **kwargs)

    monkeypatch.setattr(FineTuneBase, "_fit", recording_fit)
    cv = KFold(4, shuffle=True, random_state=0)
    FineTuneClassifierCV(counting_cnn(), freezes=[1, 2], cv=cv, image_size=16, max_epochs=1,
                         early_stopping=False, refit=True, device="cpu", random_state=0,
                         progress=False).fit(X, y)
    assert len({image.tobytes() for image in X}) == len(X)  # images tell rows apart
    folds = [(set(train), set(test)) for train, test in cv.split(X, y)]
    assert len(trained_on) == 2 * len(folds) + 1  # 2 depths x 4 folds, then the refit
    rows = {image.tobytes(): i for i, image in enumerate(X)}
    fits = []
    for images, n_images, n_inputs in trained_on[:-1]:
        seen = {rows[image] for image in images}
        train, test = next((train, test) for train, test in folds if train == seen)
        assert seen.isdisjoint(test)  # no test-fold row among the training rows
        assert n_images == n_inputs == len(train)  # the shared trunk rows: the fold's too
        fits.append(frozenset(train))
    assert sorted(map(sorted, fits)) == sorted(sorted(train) for train, _ in folds for _ in (1, 2))
    assert trained_on[-1][1:] == (len(X), len(X))  # the refit: every row


def test_a_search_offers_no_partial_fit_and_no_find_lr():
    assert not hasattr(FineTuneClassifierCV(), "partial_fit")
    assert not hasattr(FineTuneClassifierCV(), "find_lr")
    assert hasattr(FineTuneClassifier(), "partial_fit")


def test_folds_too_small_to_stop_early_are_told_before_training(stripes, monkeypatch):
    X, y = stripes
    monkeypatch.setattr(FineTuneClassifier, "_fit", lambda *a, **k: pytest.fail("trained"))
    search = FineTuneClassifierCV(counting_cnn(), freezes=FREEZES, cv=2, early_stopping=True,
                                  **SETTINGS)
    with pytest.raises(ValueError, match=r"Fold 0 trains on 5 of the 10 samples.*"
                                         r"early_stopping=False.*fewer folds"):
        search.fit(X[:10], y[:10])


def test_search_candidates_share_the_images_and_trunk_outputs_uncopied():
    """GridSearchCV clones its estimator per depth and fold: the data must not be copied."""
    import torch
    from sklearn.base import clone

    from sktransfer._finetuning.candidates import DepthCandidate, SearchData

    data = SearchData(np.zeros((4, 8, 8)), {1: torch.zeros(4, 2)}, {}, ["a", "b"])
    candidate = clone(DepthCandidate(freeze=1, shared=data)).set_params(freeze=2)
    assert candidate.shared is data
