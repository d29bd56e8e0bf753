"""The comparison study: transfer learning against classical baselines on the same splits.

Each method (:mod:`sktransfer.study.methods`) is cross-validated by scikit-learn's
``cross_validate`` on the same outer folds, subsampled per ``labels_per_class``.
"""

import tempfile
import warnings

import numpy as np
from sklearn.model_selection import cross_validate
from tqdm.auto import tqdm

from sktransfer._engine.images import read_images
from sktransfer.study.backbones import available_backbones
from sktransfer.study.layer_choice import SharedBlockFeatures, layer_probe
from sktransfer.study.methods import study_methods
from sktransfer.study.results import result_columns
from sktransfer.study.settings import check_settings, study_settings
from sktransfer.study.tasks import task_of

#: Fewer test images per fold than this and compare warns that it cannot tell methods
#: apart: one image then moves a fold's accuracy by more than 5 points, and the binomial
#: noise of a fold's score, sqrt(p(1 - p) / n), is 10 points at 75% accuracy on 20
#: images: larger than most gaps between the methods it ranks.
MIN_TEST_IMAGES = 20


def compare(X, y, *, quick=False, progress=True, **settings):
    """Evaluate pixels, frozen features, fine-tuning and training from scratch.

    Every method is cross-validated on the same outer splits (stratified by class for
    classification); with several ``labels_per_class`` each training part is subsampled
    to that many labels per class (the test part stays whole): a learning curve. Two
    rows choose inside each outer training part by an inner cross-validation, so that
    their scores are not selected on test folds: the feature layer (a linear probe on
    every block) and the fine-tuning depth (:class:`FineTuneClassifierCV` over
    ``freeze``, or a grid search of :class:`FineTuneRegressor`, refitted at the chosen
    depth). The target decides the scores and the classical models (accuracy for class
    labels, macro F1 for multi-label, R² for numbers: see :mod:`sktransfer.study.tasks`).

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
        Overrides of any field of :class:`~sktransfer.study.settings.StudySettings`
        (``backbones`` or ``backbone``, ``freeze``, ``feature_layers``, ``n_splits``,
        ``kinds``, ...); an unknown name raises TypeError.

    Returns
    -------
    pandas.DataFrame
        One row per method and setting: the task's metrics (``attrs["task"]``,
        ``attrs["metric"]``) as in :func:`~sktransfer.study.results.result_columns`;
        ``n_train``/``n_test`` (mean fold sizes); ``early_stopping`` (True, False, "some
        folds"). ``attrs["layer_probe"]``: the layer probe over the outer folds, a diagnostic.

    Warns
    -----
    UserWarning
        When a test fold holds fewer than ``MIN_TEST_IMAGES`` (20) images: too few to
        tell the methods apart.

    See Also
    --------
    write_report : Write the table as a report with plots.
    """
    plan = study_settings(quick, **settings)
    check_settings(plan)
    task, y, splits = _outer_folds(X, y, plan)
    backbones = available_backbones(plan.backbones, plan.image_size)
    shared = SharedBlockFeatures(X, image_size=plan.image_size, device=plan.device)
    with tempfile.TemporaryDirectory(prefix="sktransfer-compare-") as memory:
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        methods = study_methods(plan, task, backbones, n_outputs, memory, shared)
        rows = _evaluate_all(methods, X, y, splits, plan, task, progress)
    probes = [layer_probe(shared.of(backbone), backbone.label, task, y, splits)
              for backbone in backbones if "features" in plan.kinds]
    return _results_table(rows, probes, task)


def _outer_folds(X, y, plan):
    """The task, ``y`` as an array, and the outer (train, test) folds, checked."""
    images = read_images(X)
    task = task_of(y, plan.task)
    y = np.asarray(y)
    if len(y) != len(images):
        raise ValueError(f"X holds {len(images)} images but y has {len(y)} labels.")
    n_splits = _outer_splits(task, y, plan)
    splits = list(task.splitter(n_splits, plan.random_state).split(np.zeros(len(y)), y))
    _warn_if_test_folds_are_small(splits)
    return task, y, splits


def _evaluate_all(methods, X, y, splits, plan, task, progress):
    """One row per labels-per-class setting and method, in that order."""
    rows = []
    jobs = [(labels, method) for labels in plan.labels_per_class for method in methods]
    with tqdm(total=len(jobs), desc="comparing", unit="method", disable=not progress) as bar:
        for labels_per_class, method in jobs:
            setting = "" if method.freeze is None else f", freeze={method.freeze}"
            bar.set_postfix_str(f"{method.name}{setting}, {labels_per_class} labels/class")
            folds = [(_subsample(y, train, labels_per_class, plan.random_state + fold), test)
                     for fold, (train, test) in enumerate(splits)]
            scores = evaluate(method, X, y, folds, task.scorers)
            rows.append(_row(method, labels_per_class, folds, scores, task.metrics))
            bar.update()
    return rows


def evaluate(method, X, y, folds, scorers):
    """``cross_validate``'s results of ``method`` on the (train, test) index pairs ``folds``.

    A method whose estimator depends on the training labels gets one per fold.
    """
    inputs = np.arange(len(y)) if method.on_rows else X
    options = dict(scoring=scorers, return_estimator=method.read_fitted is not None,
                   error_score="raise")
    if method.make_for_fold is None:
        return cross_validate(method.make(), inputs, y, cv=folds, **options)
    parts = [cross_validate(method.make_for_fold(y[train]), inputs, y, cv=[(train, test)],
                            **options) for train, test in folds]
    return {key: [value for part in parts for value in part[key]] for key in parts[0]}


def _row(method, labels_per_class, folds, scores, metrics):
    """The method's row: each metric's mean and std over the folds, sizes and seconds."""
    fitted = [method.read_fitted(e) for e in scores.get("estimator", [])]
    chosen = [f["chosen"] for f in fitted if f.get("chosen") is not None]
    stopping = {f.get("early_stopping") for f in fitted} or {None}
    n_train = np.array([len(train) for train, _ in folds])
    n_test = np.array([len(test) for _, test in folds])
    share = method.shared_seconds() if method.shared_seconds else 0.0
    values = {}
    for metric in metrics:
        fold_scores = scores[f"test_{metric}"]
        values[metric], values[f"{metric}_std"] = (float(np.mean(fold_scores)),
                                                   float(np.std(fold_scores)))
    return {"kind": method.kind, "method": method.name, "backbone": method.backbone,
            "freeze": method.freeze, "chosen": ", ".join(map(str, chosen)) or None,
            "labels_per_class": labels_per_class, **values,
            "fit_seconds": float(np.mean(scores["fit_time"] + share * n_train)),
            "predict_seconds": float(np.mean(scores["score_time"] + share * n_test)),
            "early_stopping": stopping.pop() if len(stopping) == 1 else "some folds",
            "n_train": round(np.mean(n_train)), "n_test": round(np.mean(n_test)),
            "frozen_blocks": method.frozen_blocks}


def _results_table(rows, probes, task):
    import pandas as pd

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


def _subsample(y, train, labels_per_class, seed):
    if labels_per_class == "all":
        return train
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y[train]):
        members = train[y[train] == label]
        keep.extend(rng.permutation(members)[:labels_per_class])
    return np.sort(np.asarray(keep))
