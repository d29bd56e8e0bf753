"""Precision: bf16 only where the CPU runs it natively; fp16 only on CUDA."""

import warnings

import numpy as np
import pytest

from sktransfer import CNNFeatureExtractor, FineTuneClassifier
from sktransfer._engine import device as _device
from sktransfer._engine.device import SlowPrecisionWarning

from ._helpers import tiny_cnn


def native_bf16(monkeypatch, available):
    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: available)


def extractor(**params):
    return CNNFeatureExtractor(tiny_cnn(), image_size=16, device="cpu", **params)


def test_bf16_without_native_support_warns_and_runs_in_fp32(rgb_images, monkeypatch):
    native_bf16(monkeypatch, False)
    with pytest.warns(SlowPrecisionWarning, match="20x slower.*no native bfloat16.*fp32"):
        model = extractor(precision="bf16").fit(rgb_images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at fit: not on every transform
        features = model.transform(rgb_images)
    np.testing.assert_array_equal(features, extractor().fit(rgb_images).transform(rgb_images))


def test_bf16_with_native_support_runs_in_bf16(rgb_images, monkeypatch):
    native_bf16(monkeypatch, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        model = extractor(precision="bf16").fit(rgb_images)
    assert model._inference.precision == "bf16"
    fp32 = extractor().fit(rgb_images).transform(rgb_images)
    bf16 = model.transform(rgb_images)
    assert not np.array_equal(bf16, fp32)  # bfloat16 rounding shows...
    np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=0.05)  # ...but only rounding


def test_training_in_bf16_falls_back_too(stripes, monkeypatch):
    native_bf16(monkeypatch, False)
    X, y = stripes
    settings = dict(image_size=16, max_epochs=2, device="cpu", random_state=0)
    with pytest.warns(SlowPrecisionWarning) as record:
        bf16 = FineTuneClassifier(tiny_cnn(), precision="bf16", **settings).fit(X, y)
    assert sum(issubclass(w.category, SlowPrecisionWarning) for w in record) == 1  # told once
    fp32 = FineTuneClassifier(tiny_cnn(), **settings).fit(X, y)
    np.testing.assert_array_equal(bf16.predict_proba(X), fp32.predict_proba(X))


@pytest.mark.parametrize("native", [False, True])
def test_fp16_on_the_cpu_never_advises_a_slow_bf16(rgb_images, monkeypatch, native):
    native_bf16(monkeypatch, native)
    with pytest.raises(ValueError, match="fp16.*CUDA.*'fp32'") as error:
        extractor(precision="fp16").fit(rgb_images)
    advice = "which this CPU runs natively" if native else "no native bf16"
    assert advice in str(error.value)

