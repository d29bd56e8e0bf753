"""Test-time augmentation: outputs averaged over fixed views, at predict time only."""

import copy

import numpy as np
import pytest
import torch

from sktransfer import FineTuneClassifier, FineTuneRegressor
from sktransfer._engine.inference import TTAViews
from sktransfer.datasets import load_digits_images

from ._helpers import tiny_cnn

FAST = dict(image_size=16, max_epochs=8, lr=1e-2, batch_size=32, device="cpu",
            random_state=0, progress=False)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_images()
    return X[:240], y[:240]


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return FineTuneClassifier(tiny_cnn(), **FAST).fit(X[:200], y[:200])


@pytest.mark.slow
def test_tta_changes_predictions_but_not_training(digits, fitted):
    X, y = digits
    with_tta = FineTuneClassifier(tiny_cnn(), tta="flip", **FAST).fit(X[:200], y[:200])
    for name, weights in fitted.net_.module_.state_dict().items():
        torch.testing.assert_close(with_tta.net_.module_.state_dict()[name], weights,
                                   rtol=0, atol=0)  # fit never sees the views
    plain = fitted.predict_proba(X[200:])
    flipped = with_tta.predict_proba(X[200:])
    assert np.abs(plain - flipped).max() > 0.05  # digits are not mirror-symmetric
    np.testing.assert_allclose(flipped.sum(axis=1), 1, rtol=1e-6)
    assert np.array_equal(with_tta.predict(X[200:]), with_tta.classes_[flipped.argmax(1)])
    np.testing.assert_allclose(with_tta.transform(X[200:]), fitted.transform(X[200:]))


def test_flip_gives_a_mirrored_image_the_same_prediction(digits, fitted):
    X, _ = digits
    model = copy.deepcopy(fitted).set_params(tta="flip")
    mirrored = X[200:, :, ::-1]
    np.testing.assert_allclose(model.predict_proba(mirrored), model.predict_proba(X[200:]),
                               atol=1e-5)
    assert np.array_equal(model.predict(mirrored), model.predict(X[200:]))
    # Without TTA a mirror is another image.
    assert np.abs(fitted.predict_proba(mirrored) - fitted.predict_proba(X[200:])).max() > 0.05


def test_light_views_are_fixed_whatever_the_batch(digits, fitted):
    X, _ = digits
    fitted.set_params(tta=6)
    try:
        whole = fitted.predict_proba(X[200:])
        np.testing.assert_allclose(fitted.predict_proba(X[200:210]), whole[:10], atol=1e-5)
        np.testing.assert_array_equal(fitted.predict_proba(X[200:]), whole)
        fitted.set_params(tta=1)  # the image alone
        plain = fitted.predict_proba(X[200:])
    finally:
        fitted.set_params(tta=None)
    np.testing.assert_allclose(plain, fitted.predict_proba(X[200:]), atol=1e-6)
    assert np.abs(whole - plain).max() > 0.01
    views = TTAViews(6).views
    assert len(views) == 6 and views[:2] == [(1.0, 0.0, 0.0, False), (1.0, 0.0, 0.0, True)]
    assert all(0.85 <= scale <= 1 and abs(dx) <= 1 - scale for scale, dx, _, _ in views)


def test_regressor_averages_its_predictions_over_the_views(digits):
    X, y = digits
    ink = (X > 0.5).mean(axis=(1, 2))
    model = FineTuneRegressor(tiny_cnn(), **FAST).fit(X[:200], ink[:200])
    plain = model.predict(X[200:])
    model.set_params(tta="flip")
    both = model.predict(X[200:])
    model.set_params(tta=None)
    mirror = model.predict(X[200:, :, ::-1])
    np.testing.assert_allclose(both, (plain + mirror) / 2, atol=1e-5)
    assert not np.allclose(plain, mirror, atol=1e-3)


@pytest.mark.parametrize("tta", ["mirror", 0, 1.5])
def test_a_bad_tta_is_named(digits, tta):
    X, y = digits
    with pytest.raises(ValueError, match="'tta' parameter"):
        FineTuneClassifier(tiny_cnn(), tta=tta, **FAST).fit(X[:20], y[:20])


@pytest.mark.parametrize("tta", [0, "mirror", -1, True])
def test_a_tta_set_after_fit_is_checked_at_predict(digits, fitted, tta):
    X, _ = digits
    model = copy.deepcopy(fitted).set_params(tta=tta)
    with pytest.raises(ValueError, match=f"tta={tta!r}"):
        model.predict(X[:5])
