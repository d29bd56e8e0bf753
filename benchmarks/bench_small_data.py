"""Fine-tuning on small data: BatchNorm mode x head init x freeze depth, against the probe.

Accuracy on held-out images (and fit seconds) of ``FineTuneClassifier`` with
``batchnorm`` in {"frozen", "train"}, ``head_init`` in {"probe", "random"} and ``freeze``
in {"all", two thirds (6 of efficientnet_lite0's 9 blocks), 0}, against the linear probe
(``CNNFeatureExtractor`` + ``StandardScaler`` + ``LogisticRegression``, the comparison
study's row), on data built offline:

- faces: scikit-image's LFW subset (faces vs other), 20 training images per class, 160 test;
- textures: brick, grass and gravel patches (scikit-image), 10 per class, 50 test per class
  from the other half of each photo;
- photos: crops of three scikit-image photos (examples/make_photo_crops.py), 20 per class,
  80 test per class;
- digits: scikit-learn's digits, 2/3 training (1,198 images), the compare quick preset
  (48 px, 5 epochs);
- digits150, digits400: the same with 150 or 400 training images (the rest test), where
  BatchNorm's mode turns;
- share (regression): the share of brick in a 48 px patch whose left part is brick and
  right part grass, 80 training and 80 test patches (R², against features +
  ``StandardScaler`` + ``RidgeCV``);
- brightness (regression): the photo crops' mean brightness, 60 training, 60 test.

Each set runs with several seeds (a new split per seed); the defaults are
``batchnorm="frozen"``, ``head_init="random"`` and, before issue 22, ``"train"``/``"random"``.
``--patience`` instead runs the default recipe (``freeze=0``) with the given patiences
and without early stopping (all 20 epochs), against the grid's row (patience 3): the
small-validation-part study.

    python benchmarks/bench_small_data.py [--sets faces textures photos digits share brightness]
        [--seeds 3] [--match TEXT ...] [--patience 6 10]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _common import machine, print_table
from sktransfer import CNNFeatureExtractor, FineTuneClassifier, FineTuneRegressor
from sktransfer.datasets import load_digits_images, load_image_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def faces(seed):
    from skimage.data import lfw_subset

    X, y = (lfw_subset() * 255).astype(np.uint8), np.repeat(["face", "other"], 100)
    return train_test_split(X, y, train_size=40, stratify=y, random_state=seed)


def textures(seed, side=48):
    from skimage import data

    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "test": ([], [])}
    for name in ("brick", "grass", "gravel"):
        photo = getattr(data, name)()
        for part, rows, count in (("train", (0, 256 - side), 10), ("test", (256, 512 - side), 50)):
            for _ in range(count):
                top, left = rng.integers(*rows), rng.integers(0, 512 - side)
                parts[part][0].append(photo[top:top + side, left:left + side])
                parts[part][1].append(name)
    (X_train, y_train), (X_test, y_test) = parts["train"], parts["test"]
    return np.array(X_train), np.array(X_test), np.array(y_train), np.array(y_test)


def photos(seed):
    from make_photo_crops import write_crops

    folder = tempfile.mkdtemp()
    write_crops(folder, per_class=100, size=64, seed=seed)
    X, y = load_image_folder(folder)
    X = np.asarray(X, dtype=object)
    return train_test_split(X, y, train_size=60, stratify=y, random_state=seed)


def digits(seed):
    X, y = load_digits_images()
    return train_test_split(X, y, train_size=2 / 3, stratify=y, random_state=seed)


def digits_subset(size):
    """The digits with ``size`` training images (stratified), the rest to test."""
    def split(seed):
        X, y = load_digits_images()
        return train_test_split(X, y, train_size=size, stratify=y, random_state=seed)
    return split


def share(seed, side=48, count=80):
    """Patches brick on the left, grass on the right; the target is brick's share."""
    from skimage import data

    rng = np.random.default_rng(seed)
    brick, grass = data.brick(), data.grass()
    parts = []
    for rows in ((0, 256 - side), (256, 512 - side)):  # training and test photo halves
        X, y = [], []
        for _ in range(count):
            top, left = rng.integers(*rows, size=2), rng.integers(0, 512 - side, size=2)
            cut = int(rng.integers(0, side + 1))
            patch = grass[top[1]:top[1] + side, left[1]:left[1] + side].copy()
            patch[:, :cut] = brick[top[0]:top[0] + side, left[0]:left[0] + cut]
            X.append(np.repeat(patch[..., None], 3, axis=2))
            y.append(cut / side)
        parts.append((np.array(X), np.array(y)))
    (X_train, y_train), (X_test, y_test) = parts
    return X_train, X_test, y_train, y_test


def brightness(seed):
    from make_photo_crops import write_crops
    from PIL import Image

    folder = tempfile.mkdtemp()
    write_crops(folder, per_class=40, size=64, seed=seed)
    X, _ = load_image_folder(folder)
    y = np.array([np.asarray(Image.open(path).convert("L")).mean() / 255 for path in X])
    X = np.asarray(X, dtype=object)
    return train_test_split(X, y, train_size=60, test_size=60, random_state=seed)


SETS = {"faces": (faces, 64, None, "classes"), "textures": (textures, 64, None, "classes"),
        "photos": (photos, 64, None, "classes"), "digits": (digits, 48, 5, "classes"),
        "digits150": (digits_subset(150), 48, 5, "classes"),
        "digits400": (digits_subset(400), 48, 5, "classes"),
        "share": (share, 48, None, "quantity"), "brightness": (brightness, 64, None, "quantity")}


def probe(image_size, target):
    last = LogisticRegression(max_iter=2000) if target == "classes" else RidgeCV()
    return make_pipeline(CNNFeatureExtractor(image_size=image_size, device="cpu"),
                         StandardScaler(), last)


def recipes(image_size, epochs, target):
    common = dict(image_size=image_size, device="cpu", max_epochs=epochs)
    network = FineTuneClassifier if target == "classes" else FineTuneRegressor
    last = "logistic regression" if target == "classes" else "RidgeCV"
    yield f"probe (features + {last})", lambda seed: probe(image_size, target)
    for freeze in ("all", 6, 0):
        for head_init in ("probe", "random"):
            for batchnorm in (("frozen",) if freeze == "all" else ("frozen", "train")):
                name = f"freeze={freeze!r} batchnorm={batchnorm} head_init={head_init}"
                yield name, lambda seed, f=freeze, b=batchnorm, h=head_init: network(
                    freeze=f, batchnorm=b, head_init=h, random_state=seed, **common)


def patience_recipes(image_size, epochs, target, patiences):
    """The default recipe (freeze=0) with the given patiences and without early stopping."""
    common = dict(image_size=image_size, device="cpu", max_epochs=epochs)
    network = FineTuneClassifier if target == "classes" else FineTuneRegressor
    for freeze in (0,):
        for patience in (*patiences, None):
            stopping = ({"early_stopping": False} if patience is None
                        else {"patience": patience})
            name = f"freeze={freeze} " + (f"patience={patience}" if patience else "no early stopping")
            yield name, lambda seed, f=freeze, s=stopping: network(
                freeze=f, random_state=seed, **stopping, **common)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--match", nargs="*", help="only the recipes whose name has one of these")
    parser.add_argument("--patience", type=int, nargs="*",
                        help="run the patience study with these longer patiences")
    args = parser.parse_args()
    print(machine())
    for name in args.sets:
        make_data, image_size, epochs, target = SETS[name]
        splits = [make_data(seed) for seed in range(args.seeds)]
        rows = []
        chosen = (recipes(image_size, epochs, target) if args.patience is None
                  else patience_recipes(image_size, epochs, target, args.patience))
        for recipe, make_model in chosen:
            if args.match and not any(text in recipe for text in args.match):
                continue
            scores, seconds = [], []
            for seed, (X_train, X_test, y_train, y_test) in enumerate(splits):
                start = time.perf_counter()
                model = make_model(seed).fit(X_train, y_train)
                seconds.append(time.perf_counter() - start)
                scores.append(model.score(X_test, y_test))
            rows.append({"recipe": recipe, "score": f"{np.mean(scores):.3f} ± {np.std(scores):.3f}",
                         "per seed": " ".join(f"{s:.3f}" for s in scores),
                         "fit s": f"{np.mean(seconds):.1f}"})
            print(rows[-1], flush=True)
        X_train, X_test = splits[0][0], splits[0][1]
        score = "accuracy" if target == "classes" else "R²"
        print_table(f"{name}: {len(X_train)} training, {len(X_test)} test images, "
                    f"{image_size} px, {args.seeds} seeds, score: {score}", rows,
                    ["recipe", "score", "per seed", "fit s"])


if __name__ == "__main__":
    main()
