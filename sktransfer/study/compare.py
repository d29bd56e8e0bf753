"""The comparison study: transfer learning against classical baselines on the same splits."""

import difflib
import os
import tempfile
import time
import warnings
from collections import namedtuple
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from sktransfer._engine.backbones import resolve_backbone
from sktransfer._extraction.cnn import CNNFeatureExtractor
from sktransfer._finetuning.classifier import FineTuneClassifier
from sktransfer._finetuning.search import FineTuneClassifierCV
from sktransfer._finetuning.regressor import FineTuneRegressor
from sktransfer._extraction.hog import HOGFeatures
from sktransfer._engine.images import read_images, take_rows
from sktransfer._extraction.pixels import PixelFeatures
from sktransfer.study.results import CHOSEN_BY_CV, result_columns
from sktransfer.study.results import probe_table  # noqa: F401 (the tests import it here)
from sktransfer.study.probe import block_features, make_probe, probe_columns, probe_rows, score_blocks
from sktransfer.study.tasks import task_of
from sktransfer._training.transfer_net import resolve_freeze
from sktransfer._engine.weights import WeightsUnavailableError

KINDS = ("classical", "features", "finetune", "scratch")
#: Training from random weights uses batches small enough for this many steps per epoch...
MIN_STEPS_PER_EPOCH = 10
#: ...but never smaller than this (BatchNorm's batch statistics get too noisy).
MIN_SCRATCH_BATCH = 8
#: Fewer test images per fold than this and compare warns that it cannot tell methods
#: apart: one image then moves a fold's accuracy by more than 5 points, and the binomial
#: noise of a fold's score, sqrt(p(1 - p) / n), is 10 points at 75% accuracy on 20
#: images: larger than most gaps between the methods it ranks.
MIN_TEST_IMAGES = 20

RESULT_COLUMNS = result_columns()


@dataclass(frozen=True)
class StudySettings:
    """What a comparison runs; :func:`study_settings` fills it from a preset.

    ``freeze`` holds depths as fine-tuning takes them ("all", a number of frozen bottom
    blocks, -k for the top k trainable) or fractions of the backbone's depth (floats in
    [0, 1], resolved once its blocks are known: ``round(fraction * n_blocks)`` frozen).
    ``feature_layers`` holds block indices (negative from the top), block names, or
    fractions: the top block of the part ``freeze=fraction`` keeps frozen (1.0 is the
    top block; 0.0 the bottom one). Invalid values raise before anything is trained.
    ``backbones`` holds names, or ``(name, weights)`` pairs for local weights files.
    ``inner_splits`` folds of each outer training part choose the layer and the depth
    of the "chosen by inner CV" rows (0 leaves those rows out); ``choose_depth`` False
    leaves out the costlier of the two, the fine-tuning depth. ``task`` is "auto" (read
    off ``y``: see :func:`sktransfer.study.tasks.task_of`), "classification", "multilabel"
    or "regression". ``random_state`` seeds the folds, the label subsamples and every
    network.
    """

    backbones: tuple = ("efficientnet_lite0",)
    image_size: int | None = None
    max_epochs: int = 20
    freeze: tuple = ("all", 0.75, 0.5, 0)
    feature_layers: tuple = (-1,)
    pixel_size: int = 32
    n_splits: int = 5
    inner_splits: int = 3
    choose_depth: bool = True
    task: str = "auto"
    labels_per_class: tuple = ("all",)
    batch_size: int = 32
    device: str = "auto"
    random_state: int = 0
    kinds: tuple = KINDS


PRESETS = {
    "full": StudySettings(),
    # Small images, few epochs, depths and folds: the digits in minutes on 2 cores. The
    # depth search (6 more fine-tunings per outer fold) is left to the full study.
    "quick": StudySettings(image_size=48, max_epochs=5, freeze=("all", 0.67, 0), pixel_size=16,
                           n_splits=3, inner_splits=2, choose_depth=False, batch_size=64),
}


# Names people bring from other tools, which string similarity cannot guess.
SETTING_ALIASES = {"folds": "n_splits", "n_folds": "n_splits", "cv": "n_splits",
                   "seed": "random_state", "epochs": "max_epochs", "layer": "feature_layers",
                   "layers": "feature_layers", "model": "backbones", "inner_cv": "inner_splits"}


def study_settings(quick=False, **overrides):
    """The preset (``quick`` or full) with the given non-None overrides applied.

    ``backbone="name"`` is accepted for ``backbones=("name",)``.

    Raises
    ------
    TypeError
        For an override that is not a field of :class:`StudySettings`; the message
        lists the valid names and suggests the closest.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "backbone" in overrides:
        if "backbones" in overrides:
            raise TypeError("Give backbone (one) or backbones (several), not both.")
        overrides["backbones"] = (overrides.pop("backbone"),)
    _check_setting_names(overrides)
    if isinstance(overrides.get("backbones"), (str, nn.Module)):
        overrides["backbones"] = (overrides["backbones"],)
    if isinstance(overrides.get("kinds"), str):
        overrides["kinds"] = (overrides["kinds"],)
    return replace(PRESETS["quick" if quick else "full"], **overrides)


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


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone of the study: its name, weights, label in the report and blocks."""

    name: object
    weights: object
    label: str
    blocks: tuple


def available_backbones(specs, image_size=None):
    """The study's backbones whose weights can be had; the others are skipped with a warning.

    A spec is a name (``"resnet18"``, pretrained ImageNet weights), a ``"name=path"``
    string or a ``(name, weights)`` pair. Offline, only the embedded backbone and
    local weights files (or weights already in the download cache) are available.
    """
    chosen = []
    for spec in specs:
        name, weights = _backbone_spec(spec)
        try:
            backbone = resolve_backbone(name, weights)
        except WeightsUnavailableError as error:
            warnings.warn(f"Skipping backbone {name!r}: {error}", UserWarning, stacklevel=3)
            continue
        label = name if isinstance(name, str) else type(name).__name__
        if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
            label = f"{label} ({Path(weights).name})"  # name=path: tell weight files apart
        taken, base, copy = {choice.label for choice in chosen}, label, 1
        while label in taken:  # the same backbone twice: keep their rows apart
            copy += 1
            label = f"{base} #{copy}"
        size = backbone.preprocessing.with_size(image_size).input_size
        chosen.append(BackboneChoice(name, weights, label, tuple(backbone.describe(size))))
    if not chosen:
        raise ValueError(f"None of the backbones {list(specs)} has weights available; "
                         "the embedded 'efficientnet_lite0' always has.")
    return chosen


def _backbone_spec(spec):
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"A backbone given as a tuple is (name, weights), got {spec!r}.")
        return spec
    if isinstance(spec, str) and "=" in spec:
        name, path = spec.split("=", 1)
        return name, path
    return spec, "imagenet"


def compare(X, y, *, quick=False, progress=True, **settings):
    """Evaluate pixels, frozen features, fine-tuning and training from scratch.

    Every method is fitted and scored on the same outer splits (stratified by class for
    classification); with several ``labels_per_class`` each training part is subsampled
    to that many labels per class (the test part stays whole), which gives a learning
    curve. Beside the fixed settings, two rows make their choice inside each outer
    training part by an inner cross-validation: the feature layer (a linear probe on
    every block) and the fine-tuning depth (:class:`FineTuneClassifierCV` over
    ``freeze``, or a grid search of :class:`FineTuneRegressor`), so that their scores
    are not selected on test folds.

    The target decides the scores and the classical models:

    ============== =================================== ==================================
    target         scores (the first ranks methods)    pixel and feature models
    ============== =================================== ==================================
    class labels   accuracy                            logistic regression, RBF SVC
    0/1 indicator  macro F1, subset accuracy, F1 of    one logistic regression (RBF SVC)
    (multi-label)  each label                          per label
    numbers        R², mean absolute error             ridge regression (RidgeCV), RBF
    (regression)                                       SVR on standardized targets
    ============== =================================== ==================================

    Parameters
    ----------
    X : images
        Any accepted image input.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Class labels; a 2-D 0/1 indicator (multi-label; a DataFrame's columns name the
        labels); or float targets (regression). ``task=`` overrides the guess, say
        for integer counts.
    quick : bool, default=False
        Smaller images, fewer epochs, depths and folds.
    progress : bool, default=True
        Show a progress bar over the evaluations.
    **settings
        Overrides of :class:`StudySettings`: ``backbones`` (or ``backbone``),
        ``image_size``, ``max_epochs``, ``freeze`` (tuple of depths),
        ``feature_layers`` (tuple of blocks), ``labels_per_class``, ``n_splits``, ``inner_splits``, ``device``,
        ``random_state``, ``kinds``, ... (any field; an unknown name raises TypeError).

    Returns
    -------
    pandas.DataFrame
        One row per method and setting, with the columns of :func:`result_columns`
        for the task's metrics (``attrs["task"]`` and ``attrs["metric"]`` name them).
        ``n_train`` and ``n_test`` are the mean sizes over the folds; ``early_stopping``
        says whether a network row stopped early on held-out images (True, False, or
        "some folds"; empty for the other rows).
        With the features kind, ``attrs["layer_probe"]`` holds the layer probe over
        the outer folds (a diagnostic: see :func:`probe_table`).

    Warns
    -----
    UserWarning
        When a test fold holds fewer than ``MIN_TEST_IMAGES`` (20) images: too few to
        tell the methods apart.
    """
    import pandas as pd

    plan = study_settings(quick, **settings)
    unknown = set(plan.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds {sorted(unknown)} are not among {KINDS}.")
    if plan.inner_splits == 1 or plan.inner_splits < 0:
        raise ValueError(f"inner_splits={plan.inner_splits}: use 0 (no rows chosen by inner "
                         "CV) or at least 2 folds.")
    images = read_images(X)
    task = task_of(y, plan.task)
    y = np.asarray(y)
    if len(y) != len(images):
        raise ValueError(f"X holds {len(images)} images but y has {len(y)} labels.")
    n_splits = _outer_splits(task, y, plan)
    backbones = available_backbones(plan.backbones, plan.image_size)
    splits = list(task.splitter(n_splits, plan.random_state).split(np.zeros(len(y)), y))
    _warn_if_test_folds_are_small(splits)
    rows, probes = [], []
    with tempfile.TemporaryDirectory(prefix="sktransfer-compare-") as cache:
        study = _Study(plan, task, X, y, splits, cache, backbones)
        methods = list(_methods(plan, backbones, study))
        jobs = [(k, m) for k in plan.labels_per_class for m in methods]
        bar = tqdm(total=len(jobs) * len(splits), desc="comparing", unit="fit", disable=not progress)
        with bar:
            for labels_per_class, method in jobs:
                setting = "" if method.freeze is None else f", freeze={method.freeze}"
                bar.set_postfix_str(f"{method.name}{setting}, {labels_per_class} labels/class")
                folds = []
                for fold, (train, test) in enumerate(splits):
                    train = _subsample(y, train, labels_per_class, plan.random_state + fold)
                    folds.append(method.evaluate(
                        _Fold(fold, train, test, labels_per_class, method.backbone)))
                    bar.update()
                rows.append(_row(method, labels_per_class, folds, task.metrics))
        probes = [study.layer_probe(backbone) for backbone in backbones
                  if "features" in plan.kinds]
    # Int64 (nullable) keeps depths integers beside the rows that have none: 9, not 9.0/nan.
    results = pd.DataFrame(rows, columns=result_columns(task.metrics)).astype(
        {"frozen_blocks": "Int64"})
    results.attrs.update(task=task.name, metric=task.metric)
    if probes:
        results.attrs["layer_probe"] = pd.concat(probes, ignore_index=True).to_dict("list")
    return results


def _outer_splits(task, y, plan):
    """The number of outer folds, checked against the data: clear errors when too few."""
    if task.stratified:
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError("y has only 1 class; a comparison needs at least 2.")
        n_splits = min(plan.n_splits, int(counts.min()))
        if n_splits < 2:
            raise ValueError(
                f"Class {classes[counts.argmin()]!r} has {counts.min()} image(s): each class "
                "needs at least 2 to be in both the training and the test part."
            )
        return n_splits
    if tuple(plan.labels_per_class) != ("all",):
        raise ValueError(f"labels_per_class subsamples each class; a {task.name} target has "
                         "no classes to subsample. Leave labels_per_class at ('all',).")
    if len(y) < 2 * plan.n_splits:
        raise ValueError(f"{len(y)} images are too few for {plan.n_splits} folds; give at "
                         f"least {2 * plan.n_splits} images or fewer n_splits.")
    return plan.n_splits


def _warn_if_test_folds_are_small(splits):
    """Warn when the test folds are too small to tell methods apart (see MIN_TEST_IMAGES)."""
    sizes = [len(test) for _, test in splits]
    if min(sizes) >= MIN_TEST_IMAGES:
        return
    n_images, n_splits = sum(sizes), len(splits)
    held = (f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}")
    fewer = (f" or fewer folds (n_splits=2 tests {n_images // 2} images per fold)"
             if n_splits > 2 else "")
    warnings.warn(
        f"Each of the {n_splits} folds tests the methods on only {held} test images (one "
        f"image is {100 / min(sizes):.0f}% of a fold's score): the differences between "
        f"methods, and the recommendation, are mostly noise. Use more images (at least "
        f"{MIN_TEST_IMAGES} per test fold: {MIN_TEST_IMAGES * n_splits} for {n_splits} "
        f"folds){fewer}, and read the ± spread over folds before choosing.",
        UserWarning, stacklevel=3)


class _Fold(namedtuple("_Fold", "index train test labels_per_class backbone")):
    """One outer fold of one labels-per-class setting, as a method sees it."""


class _Outcome(namedtuple("_Outcome", "scores fit_seconds predict_seconds n_train n_test "
                          "early_stopping chosen", defaults=(None, None))):
    """One method's result on one fold: ``scores`` maps each metric to its value.

    ``early_stopping`` is whether the fitted network held out images to stop early
    (None for a model that is not a network).
    """


@dataclass(frozen=True)
class _Method:
    kind: str
    name: str
    backbone: str | None
    freeze: object
    frozen_blocks: int | None
    evaluate: object  # callable(_Fold) -> _Outcome


def _row(method, labels_per_class, folds, metrics):
    chosen = [f.chosen for f in folds if f.chosen is not None]
    stopping = {f.early_stopping for f in folds}
    scores = {}
    for metric in metrics:
        values = [f.scores[metric] for f in folds]
        scores[metric], scores[f"{metric}_std"] = float(np.mean(values)), float(np.std(values))
    return {"kind": method.kind, "method": method.name, "backbone": method.backbone,
            "freeze": method.freeze, "chosen": ", ".join(map(str, chosen)) or None,
            "labels_per_class": labels_per_class, **scores,
            "fit_seconds": float(np.mean([f.fit_seconds for f in folds])),
            "predict_seconds": float(np.mean([f.predict_seconds for f in folds])),
            "early_stopping": stopping.pop() if len(stopping) == 1 else "some folds",
            "n_train": round(np.mean([f.n_train for f in folds])),
            "n_test": round(np.mean([f.n_test for f in folds])),
            "frozen_blocks": method.frozen_blocks}


class _Study:
    """What the methods of one comparison share: data, splits, cache and fitted results."""

    def __init__(self, plan, task, X, y, splits, cache, backbones):
        self.plan, self.task, self.X, self.y, self.splits = plan, task, X, y, splits
        self.cache, self.backbones = cache, backbones
        self._features = {}
        self._finetuned = {}  # (backbone, depth, labels, fold) -> _Outcome of a fixed depth

    def fit_and_score(self, model, fold):
        """Fit ``model`` on the fold's training part and score it on its test part."""
        y = self.y
        start = time.perf_counter()
        model.fit(take_rows(self.X, fold.train), y[fold.train])
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        predicted = model.predict(take_rows(self.X, fold.test))
        predict_seconds = time.perf_counter() - start
        return _Outcome(self.task.scores(y[fold.test], predicted), fit_seconds,
                        predict_seconds, len(fold.train), len(fold.test),
                        getattr(model, "early_stopping_", None))

    def inner_cv(self, train):
        """The inner splitter of a training part, or None when it has too few images."""
        if self.task.stratified:
            _, counts = np.unique(self.y[train], return_counts=True)
            n_splits = min(self.plan.inner_splits, int(counts.min()))
        else:  # each inner fold needs a few images to be scored on
            n_splits = min(self.plan.inner_splits, len(train) // 4)
        if n_splits < 2:
            return None
        return self.task.splitter(n_splits, self.plan.random_state)

    def block_features(self, backbone):
        """Every block's features of every image (one pass, computed once per backbone)."""
        if backbone.label not in self._features:
            self._features[backbone.label] = block_features(
                self.X, backbone=backbone.name, weights=backbone.weights,
                image_size=self.plan.image_size, device=self.plan.device, progress=False)
        return self._features[backbone.label]

    def layer_probe(self, backbone):
        """The probe of every block over the outer folds: a diagnostic (see probe_table)."""
        import pandas as pd

        features = self.block_features(backbone)
        task = self.task
        scores, seconds = score_blocks(features, self.y, self.splits,
                                       estimator=task.linear_model(), scoring=task.scoring)
        table = pd.DataFrame(probe_rows(features.blocks, scores, seconds, task.scoring),
                             columns=probe_columns(task.scoring))
        table.insert(0, "backbone", backbone.label)
        return table

    def chosen_layer(self, backbone, fold):
        """Choose a block by inner CV of the probe on the training part; score it on the test."""
        features = self.block_features(backbone)
        y, train, test, task = self.y, fold.train, fold.test, self.task
        inner = self.inner_cv(train)
        share = features.seconds / len(y)
        start = time.perf_counter()
        if inner is None:  # too few labels to choose: the top block, as the fixed row
            position = len(features.blocks) - 1
        else:
            scores, _ = score_blocks(features, y[train], inner, estimator=task.linear_model(),
                                     scoring=task.scoring, rows=train)
            position = int(np.argmax([s.mean() for s in scores]))
        probe = make_probe(task.linear_model()).fit(features.of_block(position, train), y[train])
        fit_seconds = time.perf_counter() - start + share * len(train)
        start = time.perf_counter()
        predicted = probe.predict(features.of_block(position, test))
        predict_seconds = time.perf_counter() - start + share * len(test)
        return _Outcome(task.scores(y[test], predicted), fit_seconds, predict_seconds,
                        len(train), len(test), chosen=features.blocks[position].name)

    def fixed_depth(self, make, depth, fold):
        outcome = self.fit_and_score(make(self.y[fold.train]), fold)
        self._finetuned[fold.backbone, depth, fold.labels_per_class, fold.index] = outcome
        return outcome

    def chosen_depth(self, make_search, make, depths, fold):
        """FineTuneClassifierCV's depth on the training part; that depth's model scored.

        The model at the chosen depth is the fixed-depth row's model of this fold (same
        data, settings and seed), so the refit is not repeated; its fit time counts.
        """
        y, train = self.y, fold.train
        inner = self.inner_cv(train)
        start = time.perf_counter()
        if inner is None:  # too few labels to choose: the deepest freeze, as with few labels
            n_blocks = len(next(b for b in self.backbones if b.label == fold.backbone).blocks)
            index = int(np.argmax([resolve_freeze(d, n_blocks) for d in depths]))
        else:
            search = make_search(y[train], inner).fit(take_rows(self.X, train), y[train])
            index = search.best_index_
        search_seconds = time.perf_counter() - start
        key = (fold.backbone, depths[index], fold.labels_per_class, fold.index)
        fixed = self._finetuned.get(key) or self.fit_and_score(make(y[train], depths[index]),
                                                               fold)
        return fixed._replace(fit_seconds=fixed.fit_seconds + search_seconds,
                              chosen=depths[index])


def _methods(plan, backbones, study):
    """The study's methods, in the order of the report."""
    task, size = study.task, plan.pixel_size
    n_outputs = 1 if study.y.ndim == 1 else study.y.shape[1]
    models = {task.model_name("linear"): task.linear_model,
              task.model_name("kernel"): lambda: task.kernel_model(n_outputs)}
    if "classical" in plan.kinds:
        for name, model in models.items():
            yield _Method("classical", f"pixels + {name}", None, None, None,
                          lambda fold, m=model: study.fit_and_score(
                              make_pipeline(PixelFeatures(size), StandardScaler(), m()), fold))
        # Dalal and Triggs' cells of 8x8 pixels in blocks of 2x2, on images twice the
        # pixel rows' size (a 64 px image holds 7x7 blocks; 32 px, 3x3; 16 px at least).
        yield _Method("classical", f"hog + {task.model_name('kernel')}", None, None, None,
                      lambda fold: study.fit_and_score(make_pipeline(
                          HOGFeatures(max(16, 2 * size), cells_per_block=(2, 2)), StandardScaler(),
                          task.kernel_model(n_outputs)), fold))
    for backbone in backbones:
        yield from _transfer_methods(plan, backbone, study)
    if "scratch" in plan.kinds:
        training = _training(plan, backbones[0], study.cache)
        network = _network_class(task)
        yield _Method("scratch", "train from random weights", backbones[0].label, 0, 0,
                      lambda fold: study.fit_and_score(
                          network(**_from_scratch(training, study.y[fold.train])), fold))


def _network_class(task):
    return FineTuneRegressor if task.name == "regression" else FineTuneClassifier


def _transfer_methods(plan, backbone, study):
    task = study.task
    n_blocks = len(backbone.blocks)
    names = [b.name for b in backbone.blocks]
    model = task.model_name("linear")
    layers = [_feature_block(layer, backbone) for layer in plan.feature_layers]
    depths = [_freeze_depth(freeze, backbone) for freeze in plan.freeze]
    network = dict(backbone=backbone.name, weights=backbone.weights, image_size=plan.image_size,
                   device=plan.device, memory=study.cache, progress=False)
    if "features" in plan.kinds:
        for depth in layers:
            yield _Method("features", feature_method_name(names[depth], model), backbone.label,
                          None, None, lambda fold, d=depth: study.fit_and_score(make_pipeline(
                              CNNFeatureExtractor(**network, layer=d), StandardScaler(),
                              task.linear_model()), fold))
        if plan.inner_splits:
            yield _Method("features", chosen_layer_method(model), backbone.label, None, None,
                          lambda fold: study.chosen_layer(backbone, fold))
    if "finetune" not in plan.kinds:
        return
    training = _training(plan, backbone, study.cache)
    network_class = _network_class(task)

    def make(y_train, depth):
        return network_class(**training, freeze=depth, **_early_stopping(y_train, task))

    def make_search(y_train, inner):
        # Early stopping as each inner fit's training part will need it.
        inner_part = y_train[next(inner.split(np.zeros(len(y_train)), y_train))[0]]
        stopping = _early_stopping(inner_part, task)
        if task.name == "regression":  # the per-image cache shares each depth's trunk
            return GridSearchCV(network_class(**training, **stopping), {"freeze": depths},
                                cv=inner, refit=False)
        # scoring=None is accuracy, scored on the shared trunk inputs (the fast path).
        scoring = None if task.name == "classification" else task.scoring
        return FineTuneClassifierCV(**training, freezes=depths, cv=inner, refit=False,
                                    scoring=scoring, **stopping)

    for depth in depths:
        yield _Method("finetune", "fine-tune", backbone.label, depth,
                      resolve_freeze(depth, n_blocks),
                      lambda fold, d=depth: study.fixed_depth(lambda y_train: make(y_train, d),
                                                              d, fold))
    if len(depths) > 1 and plan.inner_splits and plan.choose_depth:
        yield _Method("finetune", CHOSEN_DEPTH_METHOD, backbone.label, CHOSEN_BY_CV, None,
                      lambda fold: study.chosen_depth(make_search, make, depths, fold))


def _training(plan, backbone, cache):
    return dict(backbone=backbone.name, weights=backbone.weights, image_size=plan.image_size,
                device=plan.device, memory=cache, progress=False, max_epochs=plan.max_epochs,
                batch_size=plan.batch_size, random_state=plan.random_state)


def chosen_layer_method(model="logistic regression"):
    """The name of the row whose feature layer an inner CV chooses."""
    return f"frozen features, layer chosen by inner CV + {model}"


CHOSEN_LAYER_METHOD = chosen_layer_method()
CHOSEN_DEPTH_METHOD = "fine-tune, depth chosen by inner CV"


def feature_method_name(block, model="logistic regression"):
    """The frozen-features method's name: which block's pretrained output it uses."""
    return f"frozen features of block {block} + {model}"


def _from_scratch(training, y_train):
    """Settings under which a randomly initialized network learns in a short budget.

    Unlike fine-tuning, a random network starts with BatchNorm running statistics
    (mean 0, variance 1) unrelated to its activations: they need many optimizer steps
    to settle, and until then eval-mode predictions, and the validation loss that
    early stopping trusts, stay near chance while the training loss falls. So: batches
    small enough for ``MIN_STEPS_PER_EPOCH`` steps, BatchNorm statistics updated by
    every batch (``batchnorm="train"``: frozen, they would stay at their random start),
    all ``max_epochs`` epochs (no early stopping), a random head (a probe of random
    features is no start worth fitting) and one learning rate for all blocks (the
    layer decay protects pretrained features, which a random network does not have).
    """
    batch_size = min(training["batch_size"],
                     max(MIN_SCRATCH_BATCH, len(y_train) // MIN_STEPS_PER_EPOCH))
    return dict(training, weights=None, freeze=0, batch_size=batch_size, layer_lr_decay=1.0,
                batchnorm="train", head_init="random", early_stopping=False)


def _depth(fraction, n_blocks):
    return int(round(fraction * n_blocks))


def _is_fraction(value):
    return isinstance(value, Real) and not isinstance(value, Integral)


def _is_index(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def _freeze_depth(freeze, backbone):
    """``freeze`` as fine-tuning takes it ("all" or an int); a ValueError if out of range."""
    n_blocks = len(backbone.blocks)
    if _is_fraction(freeze) and 0 <= freeze <= 1:
        return _depth(freeze, n_blocks)
    if freeze == "all" or (_is_index(freeze) and -n_blocks <= freeze <= n_blocks):
        return freeze
    raise ValueError(
        f"freeze={freeze!r} is not a depth of {backbone.label}, which has {n_blocks} "
        f"blocks. Use 'all' (train only the head), 0 (fine-tune all) to {n_blocks} frozen "
        f"bottom blocks, -k to leave the top k trainable, or a fraction of the depth in "
        "[0, 1]."
    )


def _feature_block(layer, backbone):
    """The index of the block a ``feature_layers`` entry names; a ValueError if none.

    A fraction is the top block of the part ``freeze=fraction`` keeps frozen, so that
    the two rows share a trunk: 1.0 is the top block, 0.0 (no frozen part) the bottom one.
    """
    names = [block.name for block in backbone.blocks]
    n_blocks = len(names)
    if _is_fraction(layer) and 0 <= layer <= 1:
        return max(_depth(layer, n_blocks) - 1, 0)
    if _is_index(layer) and -n_blocks <= layer < n_blocks:
        return int(layer) % n_blocks
    if isinstance(layer, str) and layer in names:
        return names.index(layer)
    close = difflib.get_close_matches(layer, names, n=1) if isinstance(layer, str) else []
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"feature_layers: {layer!r}{guess} is not a block of {backbone.label}, which has "
        f"{n_blocks} blocks: {', '.join(names)}. Use a block name, an index from "
        f"{-n_blocks} to {n_blocks - 1} (negative counts from the top), or a fraction of "
        "the depth in [0, 1]; sktransfer.backbone_blocks() lists the blocks."
    )


def _early_stopping(y_train, task):
    """Early-stopping settings that leave every class in both parts, or none."""
    if not task.stratified:  # early_stopping="auto" holds images out from enough of them
        return {}
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
