"""What a target asks of a comparison: classification, multi-label or regression.

A :class:`Task` (one subclass per kind of target) knows how its target is split into
folds, scored, and fitted by the study's models; :func:`task_of` reads it off ``y``.

============== =================================== ==================================
target         scores (the first ranks methods)    pixel and feature models
============== =================================== ==================================
class labels   accuracy                            logistic regression, RBF SVC
0/1 indicator  macro F1, subset accuracy, F1 of    one logistic regression (RBF SVC)
(multi-label)  each label                          per label
numbers        R², mean absolute error             ridge regression (RidgeCV), RBF
(regression)                                       SVR on standardized targets
============== =================================== ==================================
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score, make_scorer, mean_absolute_error
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.utils.multiclass import type_of_target

#: The ridge penalties RidgeCV chooses among (by efficient leave-one-out) on standardized inputs.
RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 8))
#: How each metric is named in sentences and axis labels.
METRIC_LABELS = {"accuracy": "accuracy", "f1_macro": "macro F1", "subset_accuracy":
                 "subset accuracy", "r2": "R²", "mae": "mean absolute error"}


@dataclass(frozen=True)
class Task:
    """How one kind of target is split, scored and modelled; a subclass per kind.

    ``metrics`` lists the scores of every fold, the primary first (``metric``, higher
    is better: accuracy, macro F1 or R²); ``scorers`` maps each to a scikit-learn
    scorer for ``cross_validate``.
    """

    label_names: tuple = ()
    name: ClassVar[str]
    metric: ClassVar[str]
    stratified: ClassVar[bool] = False

    @property
    def metrics(self):
        return tuple(self.scorers)

    @property
    def scoring(self):
        """The primary metric as a scikit-learn scoring name."""
        return self.metric

    def splitter(self, n_splits, random_state):
        """Shuffled folds: stratified by class for classification, plain otherwise."""
        folds = StratifiedKFold if self.stratified else KFold
        return folds(n_splits, shuffle=True, random_state=random_state)

    def inner_splitter(self, y_train, n_splits, random_state):
        """The folds that choose inside a training part, or None when it is too small."""
        n_splits = min(n_splits, self._most_inner_splits(y_train))
        return self.splitter(n_splits, random_state) if n_splits >= 2 else None

    def _most_inner_splits(self, y_train):
        return len(y_train) // 4  # each inner fold needs a few images to be scored on

    def early_stopping(self, y_train):
        """Early-stopping settings of a network fitted on ``y_train`` (its own by default)."""
        return {}

    def model_name(self, model):
        """``"logistic regression"`` for ``"linear"``, ``"RBF SVC"`` for ``"kernel"``."""
        return {"linear": "logistic regression", "kernel": "RBF SVC"}[model]

    def network(self, **params):
        """The fine-tuning estimator of this target, with ``params``."""
        from sktransfer._finetuning.classifier import FineTuneClassifier

        return FineTuneClassifier(**params)

    def depth_search(self, depths, inner, **params):
        """The inner search over fine-tuning ``depths`` that refits the chosen one."""
        from sktransfer._finetuning.search import FineTuneClassifierCV

        return FineTuneClassifierCV(**params, freezes=list(depths), cv=inner,
                                    scoring=self._search_scoring())

    def _search_scoring(self):
        return self.scoring


class ClassificationTask(Task):
    """Class labels: stratified folds, accuracy, logistic regression and RBF SVC."""

    name, metric, stratified = "classification", "accuracy", True

    @property
    def scorers(self):
        return {"accuracy": "accuracy"}

    def describe(self, y):
        """What ``y`` holds, in a few words: "10 classes"."""
        return f"{len(np.unique(y))} classes"

    def _most_inner_splits(self, y_train):
        return int(np.unique(y_train, return_counts=True)[1].min())

    def early_stopping(self, y_train):
        """Settings that leave every class in both parts, or no early stopping."""
        _, counts = np.unique(y_train, return_counts=True)
        if counts.min() < 3:
            return {"early_stopping": False}
        return {"validation_fraction": max(0.15, (len(counts) + 0.5) / len(y_train))}

    def _search_scoring(self):
        return None  # accuracy, scored on the shared trunk inputs (the fast path)

    def linear_model(self):
        """The linear model of the pixel and feature rows (inputs come standardized)."""
        return LogisticRegression(max_iter=2000)

    def kernel_model(self, n_outputs=1):
        """The RBF support-vector model of the pixel rows (inputs come standardized)."""
        return SVC()


class MultilabelTask(Task):
    """A 0/1 indicator: macro F1, subset accuracy and each label's F1; one model per label."""

    name, metric = "multilabel", "f1_macro"

    @property
    def scorers(self):
        return {"f1_macro": make_scorer(f1_score, average="macro", zero_division=0),
                "subset_accuracy": "accuracy",
                **{f"f1 {name}": make_scorer(_label_f1, label=index)
                   for index, name in enumerate(self.label_names)}}

    def describe(self, y):
        """What ``y`` holds, in a few words: "3 labels (multi-label)"."""
        return f"{np.shape(y)[1]} labels (multi-label)"

    def linear_model(self):
        """The linear model of the pixel and feature rows (inputs come standardized)."""
        return OneVsRestClassifier(LogisticRegression(max_iter=2000))

    def kernel_model(self, n_outputs=1):
        """The RBF support-vector model of the pixel rows (inputs come standardized)."""
        return OneVsRestClassifier(SVC())


class RegressionTask(Task):
    """Numbers: R² and mean absolute error, ridge regression and RBF SVR."""

    name, metric = "regression", "r2"

    @property
    def scorers(self):
        return {"r2": "r2", "mae": make_scorer(mean_absolute_error)}

    def describe(self, y):
        """What ``y`` holds, in a few words: "a numeric target (regression)"."""
        outputs = 1 if np.ndim(y) == 1 else np.shape(y)[1]
        return "a numeric target (regression)" if outputs == 1 else \
            f"{outputs} numeric targets (regression)"

    def linear_model(self):
        """The linear model of the pixel and feature rows (inputs come standardized)."""
        return RidgeCV(alphas=RIDGE_ALPHAS)

    def kernel_model(self, n_outputs=1):
        """The RBF support-vector model of the pixel rows, fitted on standardized targets
        (SVR's epsilon-tube is in target units)."""
        svr = SVR() if n_outputs == 1 else MultiOutputRegressor(SVR())
        return TransformedTargetRegressor(svr, transformer=StandardScaler())

    def model_name(self, model):
        """``"ridge regression"`` for ``"linear"``, ``"RBF SVR"`` for ``"kernel"``."""
        return {"linear": "ridge regression", "kernel": "RBF SVR"}[model]

    def network(self, **params):
        """The fine-tuning estimator of a numeric target, with ``params``."""
        from sktransfer._finetuning.regressor import FineTuneRegressor

        return FineTuneRegressor(**params)

    def depth_search(self, depths, inner, **params):
        """A grid search over fine-tuning ``depths`` that refits the chosen one (the
        per-image cache shares each depth's trunk between the folds)."""
        from sklearn.model_selection import GridSearchCV

        return GridSearchCV(self.network(**params), {"freeze": list(depths)}, cv=inner)


TASK_CLASSES = {task.name: task for task in (ClassificationTask, MultilabelTask, RegressionTask)}


def _label_f1(y_true, y_pred, *, label):
    """The F1 of one label of a multi-label target."""
    return f1_score(y_true, y_pred, average=None, zero_division=0)[label]


def task_of(y, task="auto"):
    """The :class:`Task` of target ``y``, read off it (``task="auto"``) or as given.

    With ``"auto"``: a 2-D 0/1 indicator is multi-label; a float target, or 2-D
    numbers, is regression; anything else (integers, strings) is classification; a
    one-column 2-D target counts as 1-D. Integer counts meant as quantities, and 0/1
    columns meant as quantities, need ``task="regression"``.

    Raises
    ------
    ValueError
        For an unknown ``task``, or a ``y`` the task cannot take, naming the fix.
    """
    if task not in ("auto", *TASK_CLASSES):
        raise ValueError(f"task={task!r} is not one of 'auto', "
                         f"{', '.join(map(repr, TASK_CLASSES))}.")
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:  # a column vector is one target
        return task_of(values[:, 0], task)
    if values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[1] == 0):
        raise ValueError(f"y must be 1-D (one target) or 2-D (several), got shape {values.shape}.")
    names = tuple(str(c) for c in getattr(y, "columns", range(values.shape[-1]))) \
        if values.ndim == 2 else ()
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError("y holds NaN or infinite values; drop those images or fill them in.")
    kind = type_of_target(values)
    if task == "auto":
        if kind == "multilabel-indicator":
            task = "multilabel"
        elif values.dtype.kind == "f" or (values.ndim == 2 and values.dtype.kind in "iu"):
            task = "regression"
        else:
            task = "classification"
    if task == "multilabel" and kind != "multilabel-indicator":
        raise ValueError("A multi-label target is a 2-D 0/1 indicator with one column per label "
                         f"(got {kind}); sklearn.preprocessing.MultiLabelBinarizer makes one.")
    if task == "regression":
        if values.dtype.kind not in "iufb":
            raise ValueError(f"A regression target must be numbers, got dtype {values.dtype}.")
        numbers = values.astype(float)
        if (np.ptp(numbers, axis=0) == 0).any():
            raise ValueError("y has only 1 value (in a column): there is nothing to predict. A "
                             "comparison needs at least 2 classes or distinct values.")
    if task == "classification" and values.ndim != 1:
        raise ValueError("A classification target is 1-D (one label per image); for several "
                         "labels per image use a 0/1 indicator (task='multilabel').")
    return TASK_CLASSES[task](names if task == "multilabel" else ())


def metric_label(metric):
    """A metric's name in sentences: ``"R²"`` for ``"r2"``, ``"macro F1"``, ..."""
    if metric.startswith("f1 "):
        return f"F1 of {metric[3:]}"
    return METRIC_LABELS.get(metric, metric)
