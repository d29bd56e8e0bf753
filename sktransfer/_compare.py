"""The comparison study: transfer learning against classical baselines on the same splits."""

import difflib
import tempfile
import time
from dataclasses import dataclass, fields, replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm.auto import tqdm

from ._backbones import backbone_blocks
from ._features import CNNFeatureExtractor
from ._finetune import FineTuneClassifier
from ._images import read_images, take_rows
from ._pixels import PixelFeatures
from ._transfer_net import resolve_freeze

KINDS = ("pixels", "features", "finetune", "scratch")
#: Training from random weights uses batches small enough for this many steps per epoch...
MIN_STEPS_PER_EPOCH = 10
#: ...but never smaller than this (BatchNorm's batch statistics get too noisy).
MIN_SCRATCH_BATCH = 8
RESULT_COLUMNS = ["kind", "method", "freeze", "labels_per_class", "accuracy", "accuracy_std",
                  "fit_seconds", "predict_seconds", "n_train", "n_test", "frozen_blocks"]


@dataclass(frozen=True)
class StudySettings:
    """What a comparison runs; :func:`study_settings` fills it from a preset.

    ``freeze`` and ``feature_layers`` hold fractions of the backbone's depth (floats
    in [0, 1], resolved once its blocks are known) or explicit depths. ``random_state``
    seeds the folds, the label subsamples and every network.
    """

    backbone: str = "efficientnet_lite0"
    image_size: int | None = None
    max_epochs: int = 20
    freeze: tuple = ("all", 0.75, 0.5, 0)
    feature_layers: tuple = (-1,)
    pixel_size: int = 32
    n_splits: int = 5
    labels_per_class: tuple = ("all",)
    batch_size: int = 32
    device: str = "auto"
    random_state: int = 0
    kinds: tuple = KINDS


PRESETS = {
    "full": StudySettings(),
    # Small images, few epochs and depths: the digits in well under 5 minutes on 2 cores.
    "quick": StudySettings(image_size=48, max_epochs=5, freeze=("all", 0.67, 0), pixel_size=16,
                           n_splits=3, batch_size=64),
}


# Names people bring from other tools, which string similarity cannot guess.
SETTING_ALIASES = {"folds": "n_splits", "n_folds": "n_splits", "cv": "n_splits",
                   "seed": "random_state", "epochs": "max_epochs", "layer": "feature_layers",
                   "layers": "feature_layers", "model": "backbone"}


def study_settings(quick=False, **overrides):
    """The preset (``quick`` or full) with the given non-None overrides applied.

    Raises
    ------
    TypeError
        For an override that is not a field of :class:`StudySettings`; the message
        lists the valid names and suggests the closest.
    """
    _check_setting_names(overrides)
    base = PRESETS["quick" if quick else "full"]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _check_setting_names(overrides):
    valid = [field.name for field in fields(StudySettings)]
    unknown = [name for name in overrides if name not in valid]
    if not unknown:
        return
    guesses = []
    for name in unknown:
        close = SETTING_ALIASES.get(name) or next(
            iter(difflib.get_close_matches(name, valid, n=1)), None)
        guesses.append(f"{name!r} (did you mean {close!r}?)" if close else repr(name))
    raise TypeError(
        f"Unknown comparison setting{'s' if len(unknown) > 1 else ''} {', '.join(guesses)}. "
        f"Valid settings: {', '.join(valid)}."
    )


def compare(X, y, *, quick=False, progress=True, **settings):
    """Evaluate pixels, frozen features, fine-tuning and training from scratch.

    Every method is fitted and scored on the same stratified splits; with several
    ``labels_per_class`` each training part is subsampled to that many labels per
    class (the test part stays whole), which gives a learning curve.

    Parameters
    ----------
    X : images
        Any accepted image input.
    y : array-like of shape (n_samples,)
    quick : bool, default=False
        Smaller images, fewer epochs, depths and folds.
    progress : bool, default=True
        Show a progress bar over the evaluations.
    **settings
        Overrides of :class:`StudySettings`: ``backbone``, ``image_size``,
        ``max_epochs``, ``freeze`` (tuple of depths), ``labels_per_class``,
        ``n_splits``, ``device``, ``random_state``, ``kinds``, ... (any field; an
        unknown name raises TypeError).

    Returns
    -------
    pandas.DataFrame
        One row per method and setting, with the columns of ``RESULT_COLUMNS``.
    """
    import pandas as pd

    plan = study_settings(quick, **settings)
    unknown = set(plan.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds {sorted(unknown)} are not among {KINDS}.")
    images = read_images(X)
    y = np.asarray(y)
    if len(y) != len(images):
        raise ValueError(f"X holds {len(images)} images but y has {len(y)} labels.")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("y has only 1 class; a comparison needs at least 2.")
    n_splits = min(plan.n_splits, int(counts.min()))
    if n_splits < 2:
        raise ValueError(
            f"Class {classes[counts.argmin()]!r} has {counts.min()} image(s): each class "
            "needs at least 2 to be in both the training and the test part."
        )
    n_blocks = len(backbone_blocks(plan.backbone, image_size=plan.image_size))
    splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=plan.random_state).split(
        np.zeros(len(y)), y))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sktransfer-compare-") as cache:
        methods = list(_methods(plan, n_blocks, cache))
        jobs = [(k, m) for k in plan.labels_per_class for m in methods]
        bar = tqdm(total=len(jobs) * len(splits), desc="comparing", unit="fit", disable=not progress)
        with bar:
            for labels_per_class, (kind, name, freeze, make) in jobs:
                setting = "" if freeze is None else f", freeze={freeze}"
                bar.set_postfix_str(f"{name}{setting}, {labels_per_class} labels/class")
                scores, fit_times, predict_times, n_train = [], [], [], []
                for fold, (train, test) in enumerate(splits):
                    train = _subsample(y, train, labels_per_class, plan.random_state + fold)
                    model = make(y[train])
                    start = time.perf_counter()
                    model.fit(take_rows(X, train), y[train])
                    fit_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    predicted = model.predict(take_rows(X, test))
                    predict_times.append(time.perf_counter() - start)
                    scores.append(float(np.mean(predicted == y[test])))
                    n_train.append(len(train))
                    bar.update()
                rows.append({
                    "kind": kind, "method": name, "freeze": freeze,
                    "labels_per_class": labels_per_class,
                    "accuracy": float(np.mean(scores)), "accuracy_std": float(np.std(scores)),
                    "fit_seconds": float(np.mean(fit_times)),
                    "predict_seconds": float(np.mean(predict_times)),
                    "n_train": int(np.mean(n_train)), "n_test": int(len(splits[0][1])),
                    "frozen_blocks": None if freeze is None else resolve_freeze(freeze, n_blocks),
                })
    # Int64 (nullable) keeps depths integers beside the rows that have none: 9, not 9.0/nan.
    return pd.DataFrame(rows, columns=RESULT_COLUMNS).astype({"frozen_blocks": "Int64"})


def _methods(plan, n_blocks, cache):
    """(kind, method name, freeze, factory(y_train)) for each method."""
    linear = lambda: LogisticRegression(max_iter=2000)  # noqa: E731
    size = plan.pixel_size
    if "pixels" in plan.kinds:
        yield ("pixels", "pixels + logistic regression", None,
               lambda _: make_pipeline(PixelFeatures(size), StandardScaler(), linear()))
        yield ("pixels", "pixels + RBF SVC", None,
               lambda _: make_pipeline(PixelFeatures(size), StandardScaler(), SVC()))
    network = dict(backbone=plan.backbone, image_size=plan.image_size, device=plan.device,
                   memory=cache, progress=False)
    names = [b.name for b in backbone_blocks(plan.backbone, image_size=plan.image_size)]
    if "features" in plan.kinds:
        for layer in plan.feature_layers:
            depth = _depth(layer, n_blocks) if isinstance(layer, float) else layer
            yield ("features", feature_method_name(names[depth]), None,
                   lambda _, d=depth: make_pipeline(
                       CNNFeatureExtractor(**network, layer=d), StandardScaler(), linear()))
    training = dict(network, max_epochs=plan.max_epochs, batch_size=plan.batch_size,
                    random_state=plan.random_state)
    if "finetune" in plan.kinds:
        for freeze in plan.freeze:
            depth = _depth(freeze, n_blocks) if isinstance(freeze, float) else freeze
            yield ("finetune", "fine-tune", depth,
                   lambda y_train, d=depth: FineTuneClassifier(
                       **training, freeze=d, **_early_stopping(y_train)))
    if "scratch" in plan.kinds:
        yield ("scratch", "train from random weights", 0,
               lambda y_train: FineTuneClassifier(**_from_scratch(training, y_train)))


def feature_method_name(block):
    """The frozen-features method's name: which block's pretrained output it uses."""
    return f"frozen features of block {block} + logistic regression"


def _from_scratch(training, y_train):
    """Settings under which a randomly initialized network learns in a short budget.

    Unlike fine-tuning, a random network starts with BatchNorm running statistics
    (mean 0, variance 1) unrelated to its activations: they need many optimizer steps
    to settle, and until then eval-mode predictions, and the validation loss that
    early stopping trusts, stay near chance while the training loss falls. So: batches
    small enough for ``MIN_STEPS_PER_EPOCH`` steps, all ``max_epochs`` epochs (no
    early stopping), and one learning rate for all blocks (the layer decay protects
    pretrained features, which a random network does not have).
    """
    batch_size = min(training["batch_size"],
                     max(MIN_SCRATCH_BATCH, len(y_train) // MIN_STEPS_PER_EPOCH))
    return dict(training, weights=None, freeze=0, batch_size=batch_size, layer_lr_decay=1.0,
                early_stopping=False)


def _depth(fraction, n_blocks):
    return int(round(fraction * n_blocks))


def _early_stopping(y_train):
    """Early-stopping settings that leave every class in both parts, or none."""
    _, counts = np.unique(y_train, return_counts=True)
    if counts.min() < 3:
        return {"early_stopping": False}
    return {"validation_fraction": max(0.15, (len(counts) + 0.5) / len(y_train))}


def _subsample(y, train, labels_per_class, seed):
    if labels_per_class == "all":
        return train
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y[train]):
        members = train[y[train] == label]
        keep.extend(rng.permutation(members)[:labels_per_class])
    return np.sort(np.asarray(keep))
