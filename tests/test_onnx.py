"""backend="auto": ONNX Runtime runs every inference on the CPU, exported once per process."""

import pickle
import threading
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

import sktransfer._engine.inference as inference_module
import sktransfer._engine.onnx as onnx_backend
from sktransfer import (
    CNNFeatureExtractor,
    FineTuneClassifier,
    FineTuneRegressor,
    OnnxFallbackWarning,
    read_images,
)
from sktransfer._engine.inference import run_blocks

from ._helpers import tiny_cnn

pytestmark = pytest.mark.filterwarnings("error::sktransfer.OnnxFallbackWarning")


@pytest.fixture
def exports(monkeypatch):
    """An empty process cache of sessions, and the list of modules exported from now;
    backend="auto" exports for jobs of any size."""
    monkeypatch.setattr(onnx_backend, "_SESSIONS", OrderedDict())
    monkeypatch.setattr(inference_module, "EXPORT_FROM_VALUES", 0)
    exported = []
    real_export = onnx_backend.export_bytes
    monkeypatch.setattr(onnx_backend, "export_bytes",
                        lambda module, *args, **kwargs: exported.append(module)
                        or real_export(module, *args, **kwargs))
    return exported


def images(n=13, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def eager_features(extractor, X):
    """The features as the unfolded network computes them in plain torch."""
    blocks = extractor.backbone_.blocks.eval()
    batch = next(read_images(X).batches(len(X), extractor.preprocessing_))[1]
    with torch.inference_mode():
        return run_blocks(blocks, batch, extractor.layers_, extractor.pooling).numpy()


def relative_error(got, expected):
    return np.abs(got - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize("backbone, weights", [("efficientnet_lite0", "imagenet"),
                                               ("resnet18", None),
                                               ("mobilenet_v3_small", None)])
def test_default_backend_gives_torch_eager_features(backbone, weights, exports):
    X = images()
    extractor = CNNFeatureExtractor(backbone, weights=weights, image_size=32, layer=[1, -1],
                                    device="cpu", progress=False).fit(X)
    features = extractor.transform(X)
    assert extractor._inference.backend == "onnxruntime"
    assert not any(module.training for module in extractor._inference.blocks.modules())
    assert len(exports) == 1 and all(extractor._inference.networks.values())
    assert relative_error(features, eager_features(extractor, X)) <= 1e-4


def test_export_is_cached_for_the_process(exports):
    X = images()
    first = CNNFeatureExtractor(tiny_cnn(), image_size=32, device="cpu").fit(X)
    expected = first.transform(X)
    again = CNNFeatureExtractor(tiny_cnn(), image_size=32, device="cpu").fit(X[:4])
    np.testing.assert_array_equal(again.transform(X), expected)
    np.testing.assert_array_equal(clone(first).fit(X[5:]).transform(X), expected)  # a fold
    assert len(exports) == 1
    first.set_params(layer=1).fit(X).transform(X)  # another computation: exported
    trained = tiny_cnn()
    with torch.no_grad():
        trained[0][0].weight.add_(0.1)  # other weights: exported
    CNNFeatureExtractor(trained, image_size=32, device="cpu").fit(X).transform(X)
    assert len(exports) == 3


class Cumulative(nn.Module):
    """A block ONNX has no operator for (cummax)."""

    def forward(self, x):
        return x.cummax(-1).values


def test_a_network_that_cannot_export_runs_on_torch_with_one_warning(exports):
    X = images()
    blocks = nn.Sequential(*tiny_cnn(), Cumulative())
    extractor = CNNFeatureExtractor(blocks, image_size=32, device="cpu").fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = extractor.transform(X)
        extractor.transform(X)
        CNNFeatureExtractor(blocks, image_size=32, device="cpu").fit(X).transform(X)
    fallbacks = [w for w in caught if issubclass(w.category, OnnxFallbackWarning)]
    assert len(fallbacks) == 1 and len(caught) == 1
    assert "cummax" in str(fallbacks[0].message) and fallbacks[0].filename == __file__
    expected = extractor.set_params(backend="torch").transform(X)
    np.testing.assert_array_equal(features, expected)
    lower = CNNFeatureExtractor(blocks, image_size=32, layer=1, device="cpu").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the blocks below the bad one export
        lower.transform(X)


def test_four_threads_equal_serial(exports):
    X = images(40)
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=32, batch_size=4,
                                    device="cpu", progress=False).fit(X)
    parts = [slice(0, 10), slice(10, 25), slice(25, 40), slice(0, 40)]
    results = [None] * len(parts)
    start = threading.Barrier(len(parts))

    def run(index):
        start.wait()  # all at once: the first transform exports while the others wait
        results[index] = extractor.transform(X[parts[index]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serial = extractor.transform(X)
    for part, result in zip(parts, results):
        np.testing.assert_array_equal(result, serial[part])
    assert len(exports) == 1


def test_pickle_round_trip_rebuilds_the_session(exports):
    X = images()
    extractor = CNNFeatureExtractor(tiny_cnn(), image_size=32, device="cpu").fit(X)
    expected = extractor.transform(X)
    restored = pickle.loads(pickle.dumps(extractor))  # a session would not pickle
    assert restored._inference.networks == {}
    np.testing.assert_array_equal(restored.transform(X), expected)
    assert len(exports) == 1  # the same network: from the process cache


def test_fine_tuned_predictions_equal_torch_and_fit_uses_onnx(stripes, exports, monkeypatch):
    X, y = stripes
    runs = []
    real_call = onnx_backend.OnnxNetwork.__call__
    monkeypatch.setattr(onnx_backend.OnnxNetwork, "__call__",
                        lambda self, array: runs.append(len(array)) or real_call(self, array))
    settings = dict(image_size=16, max_epochs=2, random_state=0, device="cpu")
    clf = FineTuneClassifier(tiny_cnn(), freeze=1, tta="flip", **settings).fit(X, y)
    assert sum(runs) >= len(X)  # the frozen block's pass over the training images
    proba = clf.predict_proba(X)
    torch_proba = clf.set_params(backend="torch").predict_proba(X)
    np.testing.assert_allclose(proba, torch_proba, rtol=1e-4, atol=1e-6)
    reg = FineTuneRegressor(tiny_cnn(), **settings).fit(X, X.mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(reg.predict(X), reg.set_params(backend="torch").predict(X),
                               rtol=1e-4)


def test_auto_exports_once_a_job_repays_it(exports, monkeypatch):
    X = images()
    monkeypatch.setattr(inference_module, "EXPORT_FROM_VALUES", 13 * 3 * 32 * 32)
    extractor = CNNFeatureExtractor(tiny_cnn(), image_size=32, device="cpu").fit(X)
    small = extractor.transform(X[:12])  # 12 images: torch, nothing exported
    assert exports == [] and not extractor._inference.networks
    np.testing.assert_array_equal(small, extractor.set_params(backend="torch").transform(X[:12]))
    large = extractor.set_params(backend="auto").transform(X)  # 13 images: exported
    assert len(exports) == 1
    np.testing.assert_allclose(large[:12], small, rtol=1e-4, atol=1e-6)
    runs = []
    real_call = onnx_backend.OnnxNetwork.__call__
    monkeypatch.setattr(onnx_backend.OnnxNetwork, "__call__",
                        lambda self, array: runs.append(len(array)) or real_call(self, array))
    extractor.transform(X[:1])  # exported already: ONNX Runtime, whatever the size
    assert runs == [1]
    chosen = CNNFeatureExtractor(tiny_cnn(), layer=1, image_size=32, device="cpu",
                                 backend="onnxruntime").fit(X)
    chosen.transform(X[:1])  # a chosen backend is kept for the smallest job
    assert len(exports) == 2


def test_backend_settings_are_checked_at_fit(monkeypatch):
    from sktransfer._engine import device as _device

    X = images(2)
    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: True)
    with pytest.raises(ValueError, match="backend='onnxruntime' runs fp32 on the CPU.*"
                                         "backend='auto'"):
        CNNFeatureExtractor(tiny_cnn(), backend="onnxruntime", precision="bf16",
                            device="cpu").fit(X)
    auto = CNNFeatureExtractor(tiny_cnn(), precision="bf16", device="cpu").fit(X)
    assert auto._inference.backend == "torch"  # bf16 runs in torch
    with pytest.raises(ValueError, match="backend"):
        CNNFeatureExtractor(tiny_cnn(), backend="tensorrt").fit(X)
