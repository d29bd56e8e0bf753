"""sktransfer.dask without a distributed client: dask's local threaded scheduler."""

import numpy as np
import pytest

from sktransfer import CNNFeatureExtractor

da = pytest.importorskip("dask.array", reason="the dask extra is not installed")

pytestmark = pytest.mark.dask


@pytest.mark.slow
def test_extract_features_without_a_client(rgb_images):
    from sktransfer.dask import extract_features

    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu").fit(rgb_images)
    expected = extractor.transform(rgb_images)
    lazy = da.from_array(rgb_images, chunks=(2, 10, 24, 3))
    features = extract_features(lazy, extractor)
    assert features.chunks[0] == (2, 2, 2)
    np.testing.assert_allclose(features.compute(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="0 images"):
        extract_features([], extractor)
    with pytest.raises(ValueError, match="partition_size"):
        extract_features(rgb_images, extractor, partition_size=0)


def test_extract_features_of_a_fine_tuned_classifier(stripes):
    from sktransfer import FineTuneClassifier
    from sktransfer.dask import extract_features

    from ._helpers import tiny_cnn

    X, y = stripes
    model = FineTuneClassifier(tiny_cnn(), image_size=16, max_epochs=1, device="cpu").fit(X, y)
    features = extract_features(X, model, partition_size=16)
    assert features.shape == (40, 32) and features.npartitions == 3
    np.testing.assert_allclose(features.compute(), model.transform(X), rtol=1e-5, atol=1e-6)


def test_dask_threads_share_one_onnx_export(rgb_images, monkeypatch):
    import sktransfer._engine.onnx as onnx
    from sktransfer.dask import extract_features

    from ._helpers import tiny_cnn

    exports = []
    real_export = onnx.export_bytes
    monkeypatch.setattr(onnx, "export_bytes",
                        lambda *args, **kwargs: exports.append(1) or real_export(*args, **kwargs))
    monkeypatch.setattr(onnx, "_SESSIONS", type(onnx._SESSIONS)())
    extractor = CNNFeatureExtractor(tiny_cnn(), image_size=32, batch_size=2, device="cpu",
                                    progress=False, backend="onnxruntime").fit(rgb_images)
    expected = extractor.set_params(backend="torch").transform(rgb_images)
    features = extract_features(rgb_images, extractor.set_params(backend="onnxruntime"),
                                partition_size=2)
    assert features.npartitions == 3
    np.testing.assert_allclose(features.compute(scheduler="threads"), expected, rtol=1e-4,
                               atol=1e-5)
    assert len(exports) == 1  # the partitions' threads shared one export
