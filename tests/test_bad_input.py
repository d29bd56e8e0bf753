"""Bad input, table-driven: every case raises a scikit-learn-style error naming the problem.

A raw torch, PIL or numpy error reaching the user fails these tests, as does an error of
a type other than ValueError, TypeError, FileNotFoundError or NotFittedError.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from sktransfer import CNNFeatureExtractor, FineTuneClassifier

from ._helpers import tiny_cnn

ALLOWED = (ValueError, TypeError, FileNotFoundError, NotFittedError)


def extractor(**params):
    return CNNFeatureExtractor(**{"backbone": "resnet18", "weights": None, "image_size": 16,
                                  "device": "cpu", "progress": False, **params})


def classifier(**params):
    return FineTuneClassifier(**{"backbone": tiny_cnn(), "image_size": 8, "max_epochs": 1,
                                 "validation_fraction": 0.25, "device": "cpu",
                                 "progress": False, **params})


def good_images():
    return np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)


def good_labels():
    return np.array(["a", "b", "c"] * 4)


def files(tmp_path, content):
    """Three image files; the last one replaced by ``content`` (None: missing)."""
    paths = []
    for i, image in enumerate(good_images()[:3]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image).save(paths[-1])
    broken = tmp_path / "broken.png"
    if content == "truncated":
        Image.fromarray(np.kron(good_images()[0], np.ones((16, 16, 1), np.uint8))).save(broken)
        broken.write_bytes(broken.read_bytes()[:300])
    elif content is not None:
        broken.write_bytes(content)
    return paths + [str(broken)] * 9  # 12 images, so labels stay valid


DATA = [  # id, X from tmp_path, error, what the message must name
    ("NaN pixels", lambda t: np.full((12, 8, 8), np.nan), ValueError, "NaN"),
    ("inf pixels", lambda t: np.full((12, 8, 8, 3), np.inf), ValueError, "infinity"),
    ("empty list", lambda t: [], ValueError, "0 images"),
    ("empty array", lambda t: np.zeros((0, 8, 8)), ValueError, "0 sample"),
    ("1-D numbers", lambda t: np.zeros(12), ValueError, "Expected 2D array"),
    ("5-D array", lambda t: np.zeros((12, 1, 4, 4, 3)), ValueError, "5 dimensions"),
    ("5 channels", lambda t: np.zeros((12, 5, 4, 7)), ValueError, "1, 3 or 4 channels"),
    ("zero-size images", lambda t: np.zeros((12, 0, 4, 3)), ValueError, "zero-size"),
    ("mixed types", lambda t: [np.zeros((4, 4))] * 11 + [3.5j], TypeError, r"X\[11\] is a complex"),
    ("strings in a list", lambda t: [np.zeros((4, 4))] * 11 + [b"bytes"], TypeError, r"X\[11\] is a bytes"),
    ("bad item shape", lambda t: [np.zeros((4, 4, 7, 2))] * 12, ValueError, r"X\[0\] has 4 dimensions"),
    ("NaN in an item", lambda t: [np.full((4, 4), np.nan)] * 12, ValueError, r"X\[0\] contains NaN"),
    ("complex pixels", lambda t: np.ones((12, 16), dtype=complex), ValueError, "[Cc]omplex"),
    ("strings in 2-D", lambda t: np.array([["a"] * 16] * 12, dtype=object), (ValueError, TypeError), "string|could not convert"),
    ("single path", lambda t: "cat.png", TypeError, "single path"),
    ("single PIL image", lambda t: Image.new("RGB", (4, 4)), TypeError, "one PIL image"),
    ("missing file", lambda t: files(t, None), FileNotFoundError, "broken.png"),
    ("not an image", lambda t: files(t, b"plain text, no image"), ValueError, "Cannot read image file .*broken.png"),
    ("truncated image", lambda t: files(t, "truncated"), ValueError, "Cannot read image file .*broken.png"),
    ("empty file", lambda t: files(t, b""), ValueError, "broken.png"),
]


def _fit(estimator, X, y=None):
    if isinstance(estimator, FineTuneClassifier):
        return estimator.fit(X, good_labels() if y is None else y)
    return estimator.fit_transform(X)


def _assert_clear(error_info):
    """The error is one a scikit-learn user catches, from sktransfer, and says enough."""
    error = error_info.value
    assert isinstance(error, ALLOWED), f"{type(error).__module__}.{type(error).__name__}: {error}"
    assert not type(error).__module__.startswith(("torch", "PIL", "numpy"))
    assert len(str(error)) > 20, f"terse message: {error}"


@pytest.mark.parametrize("make_estimator", [extractor, classifier], ids=["extractor", "classifier"])
@pytest.mark.parametrize("name, make_X, error, message", DATA, ids=[d[0] for d in DATA])
def test_bad_data(tmp_path, make_estimator, name, make_X, error, message):
    with pytest.raises(error, match=message) as info:
        _fit(make_estimator(), make_X(tmp_path))
    _assert_clear(info)


LABELS = [  # id, y, error, message
    ("length mismatch", good_labels()[:-1], ValueError, "inconsistent numbers of samples"),
    ("one class", np.array(["a"] * 12), ValueError, "only 1 class"),
    ("NaN labels", np.array([0.0, 1.0, np.nan] * 4), ValueError, "NaN"),
    ("2-D labels", np.stack([good_labels()] * 2, axis=1), ValueError, "indicator matrix"),
    ("no labels", None, ValueError, "requires y"),
    ("continuous labels", np.linspace(0, 1, 12), ValueError, "continuous values.*FineTuneRegressor"),
    ("one sample", "one sample", ValueError, "1 sample"),
]


@pytest.mark.parametrize("name, y, error, message", LABELS, ids=[c[0] for c in LABELS])
def test_bad_labels(name, y, error, message):
    X = good_images()
    if isinstance(y, str):
        X, y = X[:1], good_labels()[:1]
    with pytest.raises(error, match=message) as info:
        classifier().fit(X, y)
    _assert_clear(info)


no_cuda = "cuda:99" if torch.cuda.is_available() else "cuda"

PARAMETERS = [  # id, estimator factory, params, error, message
    ("unknown backbone", extractor, {"backbone": "resnet-18"}, ValueError, "did you mean 'resnet18'"),
    ("backbone type", extractor, {"backbone": 3}, ValueError, "backbone"),
    ("unknown timm model", extractor, {"backbone": "timm/no_such_net"}, ValueError, "Unknown timm model"),
    ("weights name", extractor, {"weights": "IMAGENET9K"}, ValueError, "weights='IMAGENET9K'"),
    ("weights file missing", extractor, {"weights": "nowhere/w.pth"}, FileNotFoundError, "w.pth"),
    ("layer out of range", extractor, {"layer": 12}, ValueError, "5 blocks: 0='stem'"),
    ("layer name", extractor, {"layer": "layer9"}, ValueError, "layer='layer9'"),
    ("layer empty list", extractor, {"layer": []}, ValueError, "empty"),
    ("layer type", extractor, {"layer": 1.5}, ValueError, "layer"),
    ("pooling", extractor, {"pooling": "mean"}, ValueError, "pooling"),
    ("image_size type", extractor, {"image_size": "big"}, ValueError, "image_size"),
    ("image_size zero", extractor, {"image_size": (0, 8)}, ValueError, "positive"),
    ("image_shape", extractor, {"image_shape": (8, -8)}, ValueError, "image_shape"),
    ("image_shape channels", classifier, {"image_shape": (6, 4, 5)}, ValueError, "neither 1, 3 nor 4 channels"),
    ("batch_size zero", extractor, {"batch_size": 0}, ValueError, "batch_size"),
    ("device unknown", extractor, {"device": "tpu"}, ValueError, "device='tpu'"),
    ("device without CUDA", extractor, {"device": no_cuda}, ValueError, "CUDA"),
    ("progress", extractor, {"progress": "yes"}, ValueError, "progress"),
    ("memory", extractor, {"memory": 3.5}, ValueError, "memory"),
    ("precision", extractor, {"precision": "int8"}, ValueError, "precision"),
    ("fp16 on the CPU", extractor, {"precision": "fp16"}, ValueError, "fp16.*CUDA"),
    ("freeze too deep", classifier, {"freeze": 4}, ValueError, "3 blocks"),
    ("freeze too negative", classifier, {"freeze": -4}, ValueError, "freeze=-4"),
    ("freeze word", classifier, {"freeze": "most"}, ValueError, "freeze"),
    ("lr zero", classifier, {"lr": 0}, ValueError, "lr"),
    ("layer_lr_decay", classifier, {"layer_lr_decay": -0.5}, ValueError, "layer_lr_decay"),
    ("optimizer name", classifier, {"optimizer": "adam2"}, ValueError, "optimizer"),
    ("optimizer class", classifier, {"optimizer": dict}, TypeError, "torch.optim.Optimizer"),
    ("weight_decay", classifier, {"weight_decay": -1.0}, ValueError, "weight_decay"),
    ("max_epochs zero", classifier, {"max_epochs": 0}, ValueError, "max_epochs=0.*head_init='probe'"),
    ("patience zero", classifier, {"patience": 0}, ValueError, "patience"),
    ("validation_fraction", classifier, {"validation_fraction": 1.5}, ValueError, "validation_fraction"),
    ("validation too small", classifier, {"validation_fraction": 0.01, "early_stopping": True}, ValueError, "validation_fraction=0.01"),
    ("augment", classifier, {"augment": "heavy"}, ValueError, "augment"),
    ("class_weight word", classifier, {"class_weight": "auto"}, ValueError, "class_weight"),
    ("class_weight label", classifier, {"class_weight": {"z": 2.0}}, ValueError, "'z'"),
    ("fp16 training", classifier, {"precision": "fp16"}, ValueError, "bf16"),
    ("verbose", classifier, {"verbose": "loud"}, ValueError, "verbose"),
    ("warm_start", classifier, {"warm_start": "yes"}, ValueError, "warm_start"),
    ("images too small", classifier, {"backbone": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 9)),
                                      "image_size": 4}, ValueError, "larger image_size"),
    ("download without network", extractor, {"weights": "imagenet"}, FileNotFoundError,
     "resnet18-f37072fd.pth.*weights='/path/to/"),
]


@pytest.mark.parametrize("name, make_estimator, params, error, message", PARAMETERS,
                         ids=[c[0] for c in PARAMETERS])
def test_bad_parameters(name, make_estimator, params, error, message):
    with pytest.raises(error, match=message) as info:
        _fit(make_estimator(**params), good_images())
    _assert_clear(info)


@pytest.mark.parametrize("make_estimator", [extractor, classifier], ids=["extractor", "classifier"])
def test_use_before_fit(make_estimator):
    with pytest.raises(NotFittedError, match="not fitted"):
        make_estimator().transform(good_images())


@pytest.mark.parametrize("make_estimator", [extractor, classifier], ids=["extractor", "classifier"])
def test_memory_that_is_a_file_is_refused_before_any_work(tmp_path, make_estimator):
    a_file = tmp_path / "cache.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file; the cache needs a folder") as info:
        _fit(make_estimator(memory=str(a_file)), good_images())
    _assert_clear(info)
    with pytest.raises(ValueError, match="Cannot create the cache folder") as info:
        _fit(make_estimator(memory=str(a_file / "inside")), good_images())
    _assert_clear(info)


def _channel_first_rows(t):
    from .test_reliability_round3 import photo_crops

    crops = photo_crops(n=12)
    return crops.transpose(0, 3, 1, 2).reshape(12, -1)


TRAPS = [  # id, X from tmp_path, what the warning must name (the way to say it)
    ("rows not square", lambda t: good_images().reshape(12, -1)[:, :150], r"image_shape=\(H, W, C\)"),
    ("channel-first rows", _channel_first_rows, r"image_shape=\(3, 16, 16\)"),
    ("float pixels 0-255", lambda t: good_images().astype(np.float32), "divide X by 255"),
]


@pytest.mark.parametrize("make_estimator", [extractor, classifier], ids=["extractor", "classifier"])
@pytest.mark.parametrize("name, make_X, message", TRAPS, ids=[c[0] for c in TRAPS])
def test_ambiguous_input_warns_with_the_way_to_say_it(tmp_path, make_estimator, name, make_X, message):
    with pytest.warns(UserWarning, match=message):
        _fit(make_estimator(), make_X(tmp_path))


def test_a_pickle_given_to_load_is_named(tmp_path):
    import joblib

    import sktransfer

    joblib.dump({"a": 1}, tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="pickle") as info:
        sktransfer.load(tmp_path / "model.joblib")
    _assert_clear(info)
