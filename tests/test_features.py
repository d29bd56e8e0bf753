"""CNNFeatureExtractor and PixelFeatures as scikit-learn transformers."""

import pickle

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.validation import NotFittedError

from sktransfer import CNNFeatureExtractor, PixelFeatures, read_images

from ._helpers import CountImages, counting_cnn

FAST = dict(backbone="resnet18", weights=None, image_size=32, device="cpu")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:120] / 16.0).astype(np.float32), y[:120]


@pytest.mark.parametrize(
    "layer, pooling, width",
    [(-1, "avg", 512), (-1, "max", 512), (-1, "avgmax", 1024), (2, "avg", 128),
     ("layer1", "avg", 64), ([1, -1], "avg", 64 + 512), (-1, None, 512 * 1 * 1), (3, None, 256 * 2 * 2)],
)
def test_layer_and_pooling_set_the_width(rgb_images, layer, pooling, width):
    extractor = CNNFeatureExtractor(**FAST, layer=layer, pooling=pooling).fit(rgb_images)
    features = extractor.transform(rgb_images)
    assert features.shape == (6, width) and features.dtype == np.float32
    assert len(extractor.get_feature_names_out()) == width
    assert np.isfinite(features).all() and features.std() > 0


def test_pooling_agrees_with_the_feature_map(rgb_images):
    maps = CNNFeatureExtractor(**FAST, layer=3, pooling=None).fit_transform(rgb_images).reshape(6, 256, 4)
    avg = CNNFeatureExtractor(**FAST, layer=3).fit_transform(rgb_images)
    avgmax = CNNFeatureExtractor(**FAST, layer=3, pooling="avgmax").fit_transform(rgb_images)
    np.testing.assert_allclose(avg, maps.mean(2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(avgmax, np.hstack([maps.mean(2), maps.max(2)]), rtol=1e-5, atol=1e-6)


def test_concatenated_layers_keep_the_given_order(rgb_images):
    both = CNNFeatureExtractor(**FAST, layer=[-1, "layer1"]).fit(rgb_images)
    top = CNNFeatureExtractor(**FAST, layer=-1).fit_transform(rgb_images)
    low = CNNFeatureExtractor(**FAST, layer=1).fit_transform(rgb_images)
    np.testing.assert_allclose(both.transform(rgb_images), np.hstack([top, low]), rtol=1e-6)
    names = both.get_feature_names_out()
    assert names[0] == "layer4_avg0" and names[512] == "layer1_avg0"


def test_input_forms_give_the_same_features(rgb_images, tmp_path):
    extractor = CNNFeatureExtractor(**FAST).fit(rgb_images)
    expected = extractor.transform(rgb_images)
    paths = []
    for i, image in enumerate(rgb_images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    for X in (rgb_images / 255.0, [Image.fromarray(im) for im in rgb_images], paths,
              rgb_images.transpose(0, 3, 1, 2), rgb_images.reshape(6, -1)):
        np.testing.assert_allclose(
            extractor.set_params(image_shape=(20, 24, 3)).transform(X), expected,
            rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_features(rgb_images):
    one = CNNFeatureExtractor(**FAST, batch_size=1).fit_transform(rgb_images)
    four = CNNFeatureExtractor(**FAST, batch_size=4).fit_transform(rgb_images)
    np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-5)  # features are O(1)


def test_user_module_backbone(tiny_backbone, rgb_images):
    extractor = CNNFeatureExtractor(tiny_backbone, image_size=16, layer=[0, 2], device="cpu")
    features = extractor.fit_transform(rgb_images)
    assert features.shape == (6, 8 + 32)
    assert list(extractor.get_feature_names_out()[:1]) == ["0_avg0"]


def test_fit_does_not_touch_parameters(tiny_backbone):
    extractor = CNNFeatureExtractor(tiny_backbone)
    extractor.set_params(layer=1).fit(np.zeros((2, 8, 8)))
    assert extractor.get_params()["backbone"] is tiny_backbone
    assert extractor.layer == 1 and not hasattr(CNNFeatureExtractor(), "backbone_")


@pytest.mark.slow
def test_pipeline_gridsearch_clone_and_pickle(digits):
    X, y = digits
    pipe = make_pipeline(
        CNNFeatureExtractor(**{**FAST, "image_size": 32}, image_shape=(8, 8)),
        LogisticRegression(max_iter=500),
    )
    search = GridSearchCV(
        pipe,
        {"cnnfeatureextractor__layer": [2, -1], "cnnfeatureextractor__pooling": ["avg", "max"],
         "cnnfeatureextractor__backbone": ["resnet18", "mobilenet_v3_small"]},
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    assert search.best_score_ > 0.5  # 10 classes: chance is 0.1
    best = search.best_estimator_
    restored = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(restored.predict_proba(X), best.predict_proba(X))
    cloned = clone(best)
    assert not hasattr(cloned[0], "backbone_")
    assert cloned.get_params()["cnnfeatureextractor__layer"] == best.get_params()["cnnfeatureextractor__layer"]


def test_pickled_extractor_is_small_unfitted_and_complete_fitted(rgb_images, tmp_path):
    assert len(pickle.dumps(CNNFeatureExtractor())) < 2_000
    fitted = CNNFeatureExtractor(image_size=32, device="cpu").fit(rgb_images)
    joblib.dump(fitted, tmp_path / "extractor.joblib")
    loaded = joblib.load(tmp_path / "extractor.joblib")
    np.testing.assert_array_equal(loaded.transform(rgb_images), fitted.transform(rgb_images))


def test_pandas_output(rgb_images):
    pd = pytest.importorskip("pandas")
    frame = CNNFeatureExtractor(**FAST).set_output(transform="pandas").fit_transform(rgb_images)
    assert isinstance(frame, pd.DataFrame) and frame.columns[0] == "layer4_avg0"


def test_memory_caches_by_content(rgb_images, tmp_path):
    CountImages.seen = []
    extractor = CNNFeatureExtractor(counting_cnn(), image_size=16, device="cpu",  # counted in torch
                                    memory=str(tmp_path), backend="torch").fit(rgb_images)
    first = extractor.transform(rgb_images)
    np.testing.assert_array_equal(extractor.transform(rgb_images.copy()), first)
    np.testing.assert_array_equal(extractor.transform(rgb_images[[4, 1]]), first[[4, 1]])
    assert sum(CountImages.seen) == 6  # a subset (a fold) is served from the per-image cache too
    extractor.set_params(pooling="max").fit(rgb_images).transform(rgb_images)
    assert sum(CountImages.seen) == 12  # another setting: computed anew
    changed = rgb_images.copy()
    changed[:2] = 0
    extractor.transform(changed)
    assert sum(CountImages.seen) == 14  # only the two changed images
    uncached = CNNFeatureExtractor(counting_cnn(), image_size=16, device="cpu", backend="torch")
    np.testing.assert_array_equal(first, uncached.fit(rgb_images).transform(rgb_images))


def test_pixels_and_cnn_features_in_one_cross_validate(digits):
    X, y = digits
    for model in (
        make_pipeline(PixelFeatures(size=8, grayscale=True), SVC()),
        make_pipeline(CNNFeatureExtractor(**FAST, layer=2), LogisticRegression(max_iter=500)),
    ):
        scores = cross_validate(model, X, y, cv=3)["test_score"]
        assert scores.mean() > 0.6


def test_pixel_features_values(rgb_images):
    pixels = PixelFeatures(size=(20, 24)).fit(rgb_images)
    out = pixels.transform(rgb_images)
    np.testing.assert_allclose(out, rgb_images.transpose(0, 3, 1, 2).reshape(6, -1) / 255.0, atol=1e-6)
    gray = PixelFeatures(size=4, grayscale=True).fit_transform(rgb_images)
    assert gray.shape == (6, 16) and 0 <= gray.min() and gray.max() <= 1
    assert PixelFeatures(size=4, grayscale=True).fit(rgb_images).get_feature_names_out()[5] == "pixel_0_1_1"


@pytest.mark.parametrize("estimator", [CNNFeatureExtractor(**FAST), PixelFeatures()])
def test_transform_before_fit(estimator, rgb_images):
    with pytest.raises(NotFittedError):
        estimator.transform(rgb_images)


def test_transform_checks_feature_count(digits):
    X, _ = digits
    extractor = CNNFeatureExtractor(**FAST).fit(X)
    with pytest.raises(ValueError, match="X has 63 features"):
        extractor.transform(X[:, :63])


def test_pickling_leaves_the_fitted_extractor_intact(rgb_images):
    extractor = CNNFeatureExtractor(**FAST).fit(rgb_images)
    expected = extractor.transform(rgb_images)
    pickle.dumps(extractor)
    np.testing.assert_array_equal(extractor.transform(rgb_images), expected)


def test_folded_batchnorm_gives_the_network_s_features(tmp_path, rgb_images):
    """Inference runs a BatchNorm-folded copy; it must equal the network itself (fp32)."""
    import torch
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.manual_seed(2)
    for name, tensor in reference.state_dict().items():
        if "running" in name or "bn" in name or "downsample.1" in name:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    extractor = CNNFeatureExtractor("resnet18", weights=str(tmp_path / "r18.pth"), image_size=32,
                                    device="cpu").fit(rgb_images)
    trunk = torch.nn.Sequential(*list(reference.children())[:-2]).eval()
    preprocessing = extractor.preprocessing_
    batch = next(read_images(rgb_images).batches(6, preprocessing))[1]
    with torch.inference_mode():
        expected = trunk(batch).mean((2, 3)).numpy()
    np.testing.assert_allclose(extractor.transform(rgb_images), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
