"""What a target asks of a comparison: classification, multi-label or regression.

A :class:`Task` knows how its target is split into folds, scored, and fitted by the
classical models of the study; :func:`task_of` reads it off ``y``.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.utils.multiclass import type_of_target

TASKS = ("classification", "multilabel", "regression")
#: The ridge penalties RidgeCV chooses among (by efficient leave-one-out) on standardized inputs.
RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 8))
#: How each metric is named in sentences and axis labels.
METRIC_LABELS = {"accuracy": "accuracy", "f1_macro": "macro F1", "subset_accuracy":
                 "subset accuracy", "r2": "R²", "mae": "mean absolute error"}


@dataclass(frozen=True)
class Task:
    """How one kind of target is split, scored and modelled.

    ``metrics`` lists the scores of every fold, the primary first (higher is better:
    accuracy, macro F1 or R²); multi-label targets add one F1 per label, named
    ``f1 <label>``.
    """

    name: str
    label_names: tuple = ()

    @property
    def metric(self):
        """The primary metric, which ranks methods: higher is better."""
        return {"classification": "accuracy", "multilabel": "f1_macro",
                "regression": "r2"}[self.name]

    @property
    def metrics(self):
        if self.name == "classification":
            return ("accuracy",)
        if self.name == "regression":
            return ("r2", "mae")
        return ("f1_macro", "subset_accuracy", *(f"f1 {n}" for n in self.label_names))

    @property
    def scoring(self):
        """The primary metric as a scikit-learn scoring name."""
        return self.metric

    @property
    def stratified(self):
        return self.name == "classification"

    def describe(self, y):
        """What ``y`` holds, in a few words: "10 classes", "3 labels (multi-label)", ..."""
        if self.name == "classification":
            return f"{len(np.unique(y))} classes"
        if self.name == "multilabel":
            return f"{np.shape(y)[1]} labels (multi-label)"
        outputs = 1 if np.ndim(y) == 1 else np.shape(y)[1]
        return "a numeric target (regression)" if outputs == 1 else \
            f"{outputs} numeric targets (regression)"

    def scores(self, y_true, y_pred):
        """Every metric of one fold, as a dict in the order of ``metrics``."""
        if self.name == "classification":
            return {"accuracy": accuracy_score(y_true, y_pred)}
        if self.name == "regression":
            return {"r2": r2_score(y_true, y_pred), "mae": mean_absolute_error(y_true, y_pred)}
        per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
        return {"f1_macro": float(np.mean(per_label)),
                "subset_accuracy": accuracy_score(y_true, y_pred),
                **{f"f1 {n}": float(f) for n, f in zip(self.label_names, per_label)}}

    def splitter(self, n_splits, random_state):
        """Shuffled folds: stratified by class for classification, plain otherwise."""
        folds = StratifiedKFold if self.stratified else KFold
        return folds(n_splits, shuffle=True, random_state=random_state)

    def linear_model(self):
        """The linear model of the pixel and feature rows (inputs come standardized)."""
        if self.name == "regression":
            return RidgeCV(alphas=RIDGE_ALPHAS)
        linear = LogisticRegression(max_iter=2000)
        return OneVsRestClassifier(linear) if self.name == "multilabel" else linear

    def kernel_model(self, n_outputs=1):
        """The RBF support-vector model of the pixel rows (inputs come standardized)."""
        if self.name == "classification":
            return SVC()
        if self.name == "multilabel":
            return OneVsRestClassifier(SVC())
        # SVR's epsilon-tube is in target units: fit it on standardized targets.
        svr = SVR() if n_outputs == 1 else MultiOutputRegressor(SVR())
        return TransformedTargetRegressor(svr, transformer=StandardScaler())

    def model_name(self, model):
        """``"logistic regression"``, ``"ridge regression"`` or ``"RBF SVC"``/``"RBF SVR"``."""
        if model == "linear":
            return "ridge regression" if self.name == "regression" else "logistic regression"
        return "RBF SVR" if self.name == "regression" else "RBF SVC"


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
    if task not in ("auto", *TASKS):
        raise ValueError(f"task={task!r} is not one of 'auto', {', '.join(map(repr, TASKS))}.")
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
    return Task(task, names if task == "multilabel" else ())


def metric_label(metric):
    """A metric's name in sentences: ``"R²"`` for ``"r2"``, ``"macro F1"``, ..."""
    if metric.startswith("f1 "):
        return f"F1 of {metric[3:]}"
    return METRIC_LABELS.get(metric, metric)
