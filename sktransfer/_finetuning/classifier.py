"""Fine-tuning a pretrained CNN as a scikit-learn classifier, trained by skorch."""

import warnings
from numbers import Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)
from torch import nn

from sktransfer._engine.estimator import NETWORK_PARAMETER_DOCS, with_parameter_docs
from sktransfer._finetuning.base import FineTuneBase
from sktransfer._finetuning.settings import TRAINING_PARAMETER_DOCS


@with_parameter_docs(NETWORK_PARAMETER_DOCS, TRAINING_PARAMETER_DOCS)
class FineTuneClassifier(ClassifierMixin, FineTuneBase):
    """A pretrained CNN with a new head, fine-tuned by backprop, as a classifier.

    The top (classification) layer is replaced by a linear head for the target
    classes; the bottom ``freeze`` blocks stay frozen (weights and BatchNorm
    statistics), lower trainable blocks get smaller learning rates, and training stops
    when the validation loss stops improving. When frozen blocks are present and no
    augmentation is on, their outputs are computed once per fit (and cached across
    fits with ``memory``), so each epoch costs only the trainable part.

    Parameters
    ----------
    {backbone}
    {weights}
    {freeze}
    {lr}
    {layer_lr_decay}
    {optimizer}
    {weight_decay}
    {max_epochs}
    {batch_size}
    {batchnorm}
    {head_init}
    {early_stopping}
        The split is stratified by class.
    {patience}
    {validation_fraction}
    {augment}
    {tta}
    {class_weight}
    {threshold}
    {image_size}
    {image_shape}
    {device}
    {random_state}
    {verbose}
    {progress}
    {memory}
    {training_precision}
    {backend}
    {warm_start}
    {checkpoint}

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns; for a multi-label
        (2-D indicator) ``y``, the label indices ``0 .. n_labels - 1``, as scikit-learn's
        multi-label estimators set them.
    net_ : skorch.NeuralNet
        The skorch net that trained the network (its module is a ``TransferNet``).
    history_ : skorch.History
        Per-epoch train and validation loss.
    best_epoch_ : int
        Epoch whose weights were kept (the last one without early stopping).
    interrupted_ : bool
        Whether the last fit was stopped by KeyboardInterrupt (then re-raised, with the
        model usable: it keeps the best weights so far).
    n_blocks_ : int
        Blocks of the backbone.
    n_frozen_ : int
        Frozen bottom blocks.
    batchnorm_ : {"frozen", "train"}
        The BatchNorm mode ``batchnorm`` resolved to.
    head_init_ : {"probe", "random"}
        How the head started (``head_init`` resolved).
    preprocessing_ : Preprocessing
    n_features_in_ : int
        Columns of ``X`` during fit, when ``X`` was a 2-D array.

    See Also
    --------
    FineTuneClassifierCV : The same, with ``freeze`` chosen by cross-validation.
    FineTuneRegressor : The same training, for real-valued targets.
    CNNFeatureExtractor : Frozen features for any scikit-learn model, no training.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTuneClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> clf = FineTuneClassifier(freeze="all", image_size=32, max_epochs=2, random_state=0)
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints = {
        **FineTuneBase._parameter_constraints,
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "threshold": [Interval(Real, 0, 1, closed="both")],
    }
    _criterion_params = ("class_weight",)

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet", freeze=0, lr=1e-3,
                 layer_lr_decay=0.75, optimizer="adamw", weight_decay=1e-4, max_epochs=None,
                 batch_size=32, batchnorm="auto", head_init="auto", early_stopping="auto",
                 patience=3, validation_fraction=0.15,
                 augment=None, tta=None, class_weight=None, threshold=0.5, image_size=None,
                 image_shape=None, device="auto", random_state=None, verbose=0,
                 progress="auto", memory=None, precision="fp32", backend="auto", warm_start=False,
                 checkpoint=None):
        self.backbone = backbone
        self.weights = weights
        self.freeze = freeze
        self.lr = lr
        self.layer_lr_decay = layer_lr_decay
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.batchnorm = batchnorm
        self.head_init = head_init
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.tta = tta
        self.class_weight = class_weight
        self.threshold = threshold
        self.image_size = image_size
        self.image_shape = image_shape
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress
        self.memory = memory
        self.precision = precision
        self.backend = backend
        self.warm_start = warm_start
        self.checkpoint = checkpoint

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train one more epoch (the first call builds the network).

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels, or a 0/1 indicator matrix (multi-label), as in ``fit``.
        classes : array-like, default=None
            All classes, needed on the first call when ``y`` may not hold them all.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss, as in ``fit``.

        Returns
        -------
        FineTuneClassifier
            The classifier, trained one epoch further (``self``).
        """
        return self._partial_fit(X, y, sample_weight, classes=classes)

    def predict_proba(self, X):
        """Predict class probabilities, columns in the order of ``classes_``.

        For a multi-label model, each label's own probability (the columns need not
        sum to 1).

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            The probabilities (softmax, or sigmoid per label) of the head's outputs.
        """
        return self._probabilities(self._head_outputs(X))

    def predict(self, X):
        """Predict labels, of the type of the training labels.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
            Labels; 0/1 for a multi-label model, set where a probability >= ``threshold``.
        """
        check_is_fitted(self)
        return self._labels(self._head_outputs(X))

    def decision_function(self, X):
        """Compute the head's logits, as ``CalibratedClassifierCV`` takes scores.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the score of ``classes_[1]`` (the logits' difference).
        """
        check_is_fitted(self)
        logits = self._head_outputs(X).numpy()
        if len(self.classes_) == 2 and not self._multilabel:
            return logits[:, 1] - logits[:, 0]
        return logits

    def _probabilities(self, logits):
        if self._multilabel:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=1).numpy()

    def _labels(self, logits):
        """Predictions from the head's outputs (shared with the depth search's scoring)."""
        if self._multilabel:
            return (self._probabilities(logits) >= self.threshold).astype(np.int64)
        return self.classes_[logits.argmax(1).numpy()]

    # -- what the targets need --------------------------------------------------------

    def _encode_targets(self, y, n_samples, *, warm, classes=None):
        if y is None:
            raise ValueError("FineTuneClassifier requires y to be passed, but the target y is None.")
        if not hasattr(y, "toarray"):  # array-likes (not sparse) as arrays, once
            y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:
            return self._encode_indicator(y, n_samples, warm=warm)
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n_samples), y)
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError("y contains NaN labels: drop those samples or give them a class.")
        if type_of_target(y) == "continuous":
            raise ValueError(
                "y holds continuous values, not classes: FineTuneClassifier predicts a class. "
                "Use FineTuneRegressor to predict a quantity, or bin y into classes.")
        check_classification_targets(y)
        if warm:
            if self._multilabel:
                raise ValueError("The fitted network is multi-label: y must be a 2-D 0/1 "
                                 "indicator matrix. Fit anew with warm_start=False.")
            unknown = np.setdiff1d(y, self.classes_)
            if len(unknown):
                raise ValueError(
                    f"y holds classes {unknown.tolist()} that the fitted network has no "
                    f"output for (classes_={self.classes_.tolist()}). Fit anew with "
                    "warm_start=False, or pass every class to the first partial_fit.")
            return np.searchsorted(self.classes_, y)
        encoder = LabelEncoder().fit(y if classes is None else np.concatenate([classes, y]))
        if n_samples < 2:
            raise ValueError(f"FineTuneClassifier needs at least 2 samples, got {n_samples} sample.")
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y has only 1 class ({encoder.classes_[0]!r}); a classifier needs at least 2.")
        self.classes_ = encoder.classes_
        self._multilabel = False
        return encoder.transform(y)

    def _encode_indicator(self, y, n_samples, *, warm):
        """A multi-label y: a 2-D binary indicator matrix, one column per label."""
        y = np.asarray(y.toarray() if hasattr(y, "toarray") else y)
        check_consistent_length(np.empty(n_samples), y)
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError("y contains NaN: a multi-label y is 0 or 1 in every cell.")
        kind = type_of_target(y)
        if kind == "continuous-multioutput":
            raise ValueError(
                "y is 2-D with continuous values: FineTuneClassifier takes a 2-D y only as a "
                "0/1 indicator matrix (multi-label). Use FineTuneRegressor for several "
                "quantities.")
        if kind != "multilabel-indicator" or not np.isin(np.unique(y), [0, 1]).all():
            raise ValueError(
                f"y is 2-D with values {np.unique(y)[:6].tolist()}...: FineTuneClassifier "
                "takes a 2-D y only as a 0/1 indicator matrix (multi-label, one column per "
                "label). For several multi-class outputs use "
                "sklearn.multioutput.MultiOutputClassifier(FineTuneClassifier()).")
        if self.class_weight is not None:
            raise ValueError("class_weight applies to single-label y; with a multi-label y, "
                             "weight samples with sample_weight instead.")
        if warm:
            if not self._multilabel or y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {y.shape[1]} labels; the fitted network has "
                    f"{len(self.classes_)} {'labels' if self._multilabel else 'classes'}. "
                    "Fit anew with warm_start=False.")
        else:
            constant = [label for label in range(y.shape[1]) if y[:, label].min() == y[:, label].max()]
            if constant:
                warnings.warn(
                    f"Label(s) {constant} are the same (all 0 or all 1) in every training "
                    "sample: the network can only learn to predict them constant.",
                    UserWarning, stacklevel=4)
            self.classes_ = np.arange(y.shape[1])
            self._multilabel = True
        return y.astype(np.float32)

    def _n_outputs(self):
        return len(self.classes_)

    def _head_kind(self):
        return "tags" if self._multilabel else "classes"

    def _criterion(self, y_train, sample_weight=None):
        if self._multilabel:
            return nn.BCEWithLogitsLoss(reduction="none"), None
        class_weight = self._class_weights(y_train, sample_weight)
        return nn.CrossEntropyLoss(weight=class_weight, reduction="none"), class_weight

    def _validation_split(self, y, seed):
        if self._multilabel:  # label sets do not stratify: a random split
            return super()._validation_split(y, seed)
        n_valid = int(np.ceil(self.validation_fraction * len(y)))
        counts = np.unique(y, return_counts=True)[1]  # classes this batch has (partial_fit)
        n_classes = len(counts)
        if n_valid < n_classes or len(y) - n_valid < n_classes or counts.min() < 2:
            needed = _images_per_class_needed(n_classes, self.validation_fraction)
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of "
                f"{len(y)} samples ({n_valid}), which cannot hold every one of the "
                f"{n_classes} classes with each class also in training (the fewest images "
                f"of a class: {counts.min()}). This needs at least {needed} images of each "
                "class at this validation_fraction. Use more images, a larger "
                "validation_fraction, or early_stopping=False.")
        return train_test_split(np.arange(len(y)), test_size=n_valid, stratify=y,
                                random_state=seed)

    def _class_weights(self, y_train, sample_weight=None):
        """Loss weight of each class; with "balanced", from ``y_train`` and its sample
        weights (None: all 1)."""
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced":
            weights = np.ones(len(self.classes_))
            if y_train is not None:
                y_train = np.asarray(y_train)
                present = np.unique(y_train)
                weight = None if sample_weight is None else np.asarray(sample_weight)
                weights[present] = compute_class_weight("balanced", classes=present, y=y_train,
                                                        sample_weight=weight)
        else:
            unknown = set(self.class_weight) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(
                    f"class_weight names classes {sorted(unknown, key=str)} that are not in y "
                    f"(classes: {self.classes_.tolist()}).")
            weights = np.array([self.class_weight.get(c, 1.0) for c in self.classes_])
        return torch.as_tensor(weights, dtype=torch.float32)

    def _target_state(self):
        return {"classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str,
                "multilabel": self._multilabel}

    def _set_target_state(self, description):
        self.classes_ = np.asarray(description["classes"],
                                   dtype=np.dtype(description["classes_dtype"]))
        self._multilabel = description["multilabel"]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _images_per_class_needed(n_classes, validation_fraction):
    """Fewest images of each of ``n_classes`` for which the stratified split holds."""
    per_class = 2
    while True:
        n = per_class * n_classes
        n_valid = int(np.ceil(validation_fraction * n))
        if n_valid >= n_classes and n - n_valid >= n_classes:
            return per_class
        per_class += 1
