"""Issue 21: what a new user and a code review found (files, inputs, errors, seeds).

Each test here failed on the code before the fix.
"""

import os
import shutil
import stat
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import cross_val_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

import sktransfer
from sktransfer import CNNFeatureExtractor, FineTuneClassifier, PixelFeatures

from ._helpers import tiny_cnn


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# -- 1. files respect the umask ----------------------------------------------------------


def test_saved_model_files_respect_the_umask(umask_022, tmp_path, stripes):
    X, y = stripes
    model = make_pipeline(PixelFeatures(8), LogisticRegression()).fit(X, y)
    sktransfer.save(model, tmp_path / "model.safetensors")
    assert mode(tmp_path / "model.safetensors") == 0o644
    os.umask(0o077)
    sktransfer.save(model, tmp_path / "private.safetensors")
    assert mode(tmp_path / "private.safetensors") == 0o600


def test_the_feature_cache_respects_the_umask(umask_022, tmp_path, rgb_images):
    extractor = CNNFeatureExtractor(tiny_cnn(), image_size=8, device="cpu",
                                    memory=tmp_path / "cache").fit(rgb_images)
    extractor.transform(rgb_images)
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries and {mode(p) for p in entries} == {0o644}


# -- 2. a one-column 2-D input of paths ------------------------------------------------


def write_pngs(images, folder):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    paths = [str(folder / f"{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    return paths


@pytest.mark.slow
def test_a_column_of_paths_works_in_a_column_transformer(stripes, tmp_path):
    X, y = stripes
    frame = pd.DataFrame({"path": write_pngs(X, tmp_path / "img"),
                          "size": np.arange(len(X), dtype=float) % 3})
    features = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu")
    model = make_pipeline(
        ColumnTransformer([("img", features, ["path"]), ("num", StandardScaler(), ["size"])]),
        LogisticRegression(max_iter=1000))
    scores = cross_val_score(model, frame, y, cv=2)
    direct = cross_val_score(make_pipeline(features, LogisticRegression(max_iter=1000)), X, y, cv=2)
    assert scores.mean() >= direct.mean() - 0.1 and scores.mean() > 0.7


def test_a_column_of_paths_equals_the_list_of_paths(rgb_images, tmp_path):
    paths = write_pngs(rgb_images, tmp_path / "img")
    extractor = CNNFeatureExtractor(tiny_cnn(), image_size=8, device="cpu")
    expected = extractor.fit_transform(paths)
    column = np.asarray(paths, dtype=object)[:, None]
    np.testing.assert_array_equal(extractor.fit_transform(column), expected)
    frame = pd.DataFrame({"path": paths})
    np.testing.assert_array_equal(extractor.fit_transform(frame), expected)
    assert list(extractor.feature_names_in_) == ["path"]
    with pytest.raises(ValueError, match="feature names"):
        extractor.transform(frame.rename(columns={"path": "file"}))


# -- 3. a safe file never chooses where the program writes ---------------------------------


@pytest.mark.slow
def test_load_leaves_memory_and_checkpoint_unset(rgb_images, stripes, tmp_path):
    cache = tmp_path / "cache-named-in-the-file"
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu",
                                    memory=cache).fit(rgb_images)
    sktransfer.save(extractor, tmp_path / "e.safetensors")
    X, y = stripes
    checkpoint = tmp_path / "checkpoint-named-in-the-file"
    classifier = FineTuneClassifier("resnet18", weights=None, image_size=16, max_epochs=1,
                                    device="cpu", checkpoint=checkpoint).fit(X, y)
    sktransfer.save(classifier, tmp_path / "c.safetensors")
    expected = extractor.transform(rgb_images)
    for path in cache, checkpoint:
        shutil.rmtree(path, ignore_errors=True)
    loaded = sktransfer.load(tmp_path / "e.safetensors")
    assert loaded.memory is None
    np.testing.assert_array_equal(loaded.transform(rgb_images), expected)
    loaded_classifier = sktransfer.load(tmp_path / "c.safetensors")
    assert loaded_classifier.checkpoint is None
    loaded_classifier.predict(X)
    assert not cache.exists() and not checkpoint.exists()


# -- 4. errors are translated only where diagnosed ---------------------------------------------


def test_a_bug_in_the_users_augment_keeps_its_type_and_traceback(stripes):
    X, y = stripes

    def augment(batch):
        raise RuntimeError("bug in my augment")

    model = FineTuneClassifier(tiny_cnn(), image_size=8, max_epochs=1, device="cpu",
                               augment=augment)
    with pytest.raises(RuntimeError, match="bug in my augment") as info:
        model.fit(X, y)
    assert any(entry.name == "augment" for entry in info.traceback)


def test_images_too_small_are_still_named_at_fit():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 9))
    with pytest.raises(ValueError, match="cannot process images of size 4x4.*larger image_size") as info:
        CNNFeatureExtractor(backbone, image_size=4, device="cpu").fit(np.zeros((2, 4, 4, 3)))
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error is kept


# -- 6. a pickle is named as one ----------------------------------------------------------------


def test_load_of_a_joblib_file_says_it_is_a_pickle(stripes, tmp_path):
    X, y = stripes
    joblib.dump(make_pipeline(PixelFeatures(8), LogisticRegression()).fit(X, y),
                tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="is a pickle \\(joblib\\) file.*joblib.load"):
        sktransfer.load(tmp_path / "model.joblib")


# -- 7. silent traps get a warning that names the fix ------------------------------------------------


def photo_crops(n=8, side=16):
    """RGB crops of scikit-image's astronaut, uint8, (n, side, side, 3)."""
    from skimage.data import astronaut
    from skimage.transform import resize

    photo = astronaut()
    return np.stack([(resize(photo[40 * i:40 * i + 160, 30 * i:30 * i + 160], (side, side))
                      * 255).astype(np.uint8) for i in range(n)])


def test_channel_first_rows_are_named_and_can_be_read(rgb_images):
    crops = photo_crops()
    rows = crops.transpose(0, 3, 1, 2).reshape(len(crops), -1)  # CIFAR as OpenML serves it
    pixels = PixelFeatures(16)
    with pytest.warns(UserWarning, match=r"look channel-first.*image_shape=\(3, 16, 16\)"):
        pixels.fit(rows)
    read_right = PixelFeatures(16, image_shape=(3, 16, 16)).fit_transform(rows)
    np.testing.assert_array_equal(read_right, PixelFeatures(16).fit_transform(crops))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # channel-last rows: no warning
        PixelFeatures(16).fit(crops.reshape(len(crops), -1))


def test_rows_that_are_not_square_images_are_named():
    rows = photo_crops(side=16)[:, :10].reshape(8, -1)  # 10x16x3 = 480 values, not square
    with pytest.warns(UserWarning, match=r"480 values, not a square image.*image_shape=\(H, W, C\)"):
        PixelFeatures(8).fit(rows)


def test_float_pixels_in_0_255_are_named():
    crops = photo_crops().astype(np.float64)
    with pytest.warns(UserWarning, match="float pixels up to 2.*divide X by 255"):
        PixelFeatures(8).fit(crops)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PixelFeatures(8).fit(crops / 255)


# -- 8. bugs -------------------------------------------------------------------------------------------


def test_partial_fit_on_a_batch_that_lacks_a_class(stripes):
    X, y = stripes
    y3 = np.where(np.arange(len(y)) % 4 == 3, "d", y)  # classes h, v, d
    model = FineTuneClassifier(tiny_cnn(), image_size=8, device="cpu", validation_fraction=0.25,
                               early_stopping=True)
    model.partial_fit(X, y3)
    batch = y3 != "d"
    model.partial_fit(X[batch], y3[batch])  # no 'd' here: not a reason to refuse
    assert [e["epoch"] for e in model.history_] == [1, 2]
    assert list(model.classes_) == ["d", "h", "v"]


def test_fit_leaves_every_cuda_generator_alone(stripes, monkeypatch):
    X, y = stripes
    backbone = tiny_cnn()  # the test helper seeds torch itself
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(seed))
    FineTuneClassifier(backbone, image_size=8, max_epochs=1, device="cpu").fit(X, y)
    CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu").fit(X)
    assert seeded == []


def test_fit_restores_the_cpu_generator(stripes):
    X, y = stripes
    backbone = tiny_cnn()  # the test helper seeds torch itself
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    FineTuneClassifier(backbone, image_size=8, max_epochs=1, device="cpu").fit(X, y)
    assert torch.equal(torch.rand(3), expected)


# -- 9. the estimators a comparison uses are savable ---------------------------------------------------


def regression_data():
    rng = np.random.default_rng(0)
    X = rng.random((30, 4))
    return X, X @ [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("make, target", [
    (lambda: Ridge(alpha=0.5), "quantity"),
    (lambda: RidgeCV(alphas=(0.1, 1.0, 10.0)), "quantity"),
    (lambda: SVR(), "quantity"),
    (lambda: TransformedTargetRegressor(SVR(), transformer=StandardScaler()), "quantity"),
    (lambda: TransformedTargetRegressor(MultiOutputRegressor(SVR()), transformer=StandardScaler()),
     "quantities"),
    (lambda: OneVsRestClassifier(LogisticRegression()), "tags"),
    (lambda: OneVsRestClassifier(SVC()), "tags"),
    (lambda: SVC(class_weight={0: 2.0, 1: 1.0}), "classes"),
], ids=["Ridge", "RidgeCV", "SVR", "SVR on scaled targets", "multi-output SVR",
        "one-vs-rest logistic", "one-vs-rest SVC", "SVC with class weights"])
def test_the_estimators_a_comparison_uses_round_trip(make, target, tmp_path, monkeypatch):
    from .test_reliability import refuse_unpickling

    X, y = regression_data()
    y = {"quantity": y, "quantities": np.c_[y, -2 * y], "tags": (X > 0.5).astype(int),
         "classes": (y > y.mean()).astype(int)}[target]
    model = make_pipeline(StandardScaler(), make()).fit(X, y)
    sktransfer.save(model, tmp_path / "m.safetensors")
    refuse_unpickling(monkeypatch)
    loaded = sktransfer.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert type(loaded[-1]) is type(model[-1])
