"""Scale-out on a real dask.distributed LocalCluster: 2 worker processes, 1 thread each."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import GridSearchCV

from sktransfer import CNNFeatureExtractor, FineTuneClassifier

from ._helpers import tiny_cnn

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def search():
    return GridSearchCV(FineTuneClassifier(tiny_cnn(), image_size=16, max_epochs=3, lr=0.01,
                                           device="cpu", random_state=0),
                        {"freeze": [0, 1, "all"]}, cv=2)


@pytest.mark.slow
def test_grid_search_on_dask_equals_the_serial_run(client, stripes):
    import joblib

    X, y = stripes
    with joblib.parallel_config(backend="dask"):
        on_dask = search().fit(X, y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each dask worker runs with (OMP_NUM_THREADS=1)
    try:
        serial = search().fit(X, y)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(on_dask.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])
    assert on_dask.best_params_ == serial.best_params_


def test_unfitted_estimators_serialize_small():
    import cloudpickle

    for estimator in (CNNFeatureExtractor(), FineTuneClassifier(), FineTuneClassifier("resnet50")):
        assert len(cloudpickle.dumps(estimator)) < 4_000  # names, not weights


class CountingExtractor(CNNFeatureExtractor):
    """Counts, per process, how often a fitted extractor is deserialized."""

    loads = 0

    def __setstate__(self, state):
        type(self).loads += 1
        super().__setstate__(state)


def _loads():
    return CountingExtractor.loads


@pytest.fixture
def image_files(tmp_path, rgb_images):
    paths = []
    for i in range(18):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rgb_images[i % 6][:, ::-1] if i >= 6 else rgb_images[i]).save(paths[-1])
    return paths


@pytest.mark.slow
def test_extract_features_equals_transform_and_ships_the_network_once(client, image_files):
    from sktransfer.dask import extract_features

    extractor = CountingExtractor("resnet18", weights=None, image_size=16, device="cpu").fit(image_files)
    expected = extractor.transform(image_files)
    features = extract_features(image_files, extractor, partition_size=3)
    assert isinstance(features, da.Array) and features.shape == expected.shape
    assert features.npartitions == 6
    np.testing.assert_allclose(features.compute(), expected, rtol=1e-5, atol=1e-6)
    loads = client.run(_loads)
    # scattered once to each worker, not shipped with each of the 6 partitions (under
    # load, distributed has been seen to deserialize a worker's copy a second time)
    assert sum(loads.values()) <= 3 and max(loads.values()) <= 2


@pytest.mark.slow
def test_extract_features_from_a_dask_array(client, rgb_images):
    from sktransfer.dask import extract_features

    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu").fit(rgb_images)
    lazy = da.from_array(rgb_images, chunks=(2, 10, 24, 3))
    features = extract_features(lazy, extractor)
    assert features.chunks[0] == (2, 2, 2)
    np.testing.assert_allclose(features.compute(), extractor.transform(rgb_images), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_worker_with_two_threads_shares_one_extractor(rgb_images):
    """The README's setting (threads as cores): partitions run concurrently on one object."""
    from sktransfer.dask import extract_features

    X = np.concatenate([rgb_images] * 4)
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=32,
                                    device="cpu").fit(X)
    expected = extractor.transform(X)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster):
            for _ in range(2):
                features = extract_features(X, extractor, partition_size=3).compute()
                np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
