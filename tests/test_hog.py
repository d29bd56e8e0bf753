"""HOGFeatures: scikit-image's hog of the same preprocessed image, in Pipelines and safe files."""

import numpy as np
import pytest
from skimage import data
from skimage.feature import hog
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sktransfer
from sktransfer import HOGFeatures, PixelFeatures
from sktransfer.datasets import load_digits_images


@pytest.mark.parametrize("grayscale", [True, False])
def test_features_equal_skimage_hog_of_the_preprocessed_image(grayscale):
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    options = dict(orientations=8, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                   block_norm="L1-sqrt", transform_sqrt=True)
    features = HOGFeatures(48, grayscale=grayscale, **options).fit_transform(photos)
    pixels = PixelFeatures(48, grayscale=grayscale).fit_transform(photos)
    for row, flat in zip(features, pixels):
        image = flat.reshape(-1, 48, 48)
        expected = (hog(image[0], **options) if grayscale
                    else hog(np.moveaxis(image, 0, -1), channel_axis=-1, **options))
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert features.shape == (3, 5 * 5 * 2 * 2 * 8)
    # Different photos, different gradients.
    assert np.abs(features[0] - features[1]).max() > 0.1


def test_names_follow_the_grid_and_a_too_small_size_is_named():
    model = HOGFeatures(32, cells_per_block=(2, 2)).fit(np.zeros((2, 8, 8)))
    names = model.get_feature_names_out()
    assert model.grid_ == (3, 3, 2, 2, 9) and len(names) == 324
    assert names[0] == "hog_0_0_0_0_0" and names[-1] == "hog_2_2_1_1_8"
    with pytest.raises(ValueError, match=r"2x2 cells of 8x8 pixels, fewer than one block"):
        HOGFeatures(16).fit(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="two positive integers"):
        HOGFeatures(32, pixels_per_cell=(8,)).fit(np.zeros((2, 8, 8)))


def test_hog_with_an_svm_reads_the_digits_and_saves_safely(tmp_path):
    X, y = load_digits_images()
    model = make_pipeline(HOGFeatures(32, cells_per_block=(2, 2)), StandardScaler(), SVC())
    scores = cross_val_score(model, X[:600], y[:600], cv=3)
    assert scores.mean() > 0.9  # the classical pipeline reads digits well
    hog_only = HOGFeatures(32, cells_per_block=(2, 2)).fit(X[:10])
    sktransfer.save(hog_only, tmp_path / "hog.safetensors")
    loaded = sktransfer.load(tmp_path / "hog.safetensors")
    np.testing.assert_array_equal(loaded.transform(X[:5]), hog_only.transform(X[:5]))
