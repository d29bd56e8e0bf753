"""Fine-tuning a pretrained CNN as a scikit-learn regressor: one output per target."""

from numbers import Real

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted
from torch import nn

from sktransfer._engine.estimator import NETWORK_PARAMETER_DOCS, with_parameter_docs
from sktransfer._finetuning.base import FineTuneBase
from sktransfer._finetuning.settings import TRAINING_PARAMETER_DOCS

LOSSES = {"squared_error": nn.MSELoss, "huber": nn.HuberLoss}


@with_parameter_docs(NETWORK_PARAMETER_DOCS, TRAINING_PARAMETER_DOCS)
class FineTuneRegressor(RegressorMixin, FineTuneBase):
    """A pretrained CNN with a new linear head, fine-tuned by backprop, as a regressor.

    Everything :class:`FineTuneClassifier` does for training applies (frozen bottom
    blocks, smaller rates for lower blocks, early stopping on the validation loss,
    frozen-block caching, checkpoints, warm start); the head has one output per target.
    The targets are standardized for training (mean 0, variance 1 per target, as
    ``TransformedTargetRegressor`` with a ``StandardScaler`` would) and mapped back in
    ``predict``, so the learning rate suits any unit.

    Parameters
    ----------
    {backbone}
    {weights}
    {freeze}
    loss : {"squared_error", "huber"}, default="squared_error"
        Loss on the standardized targets; "huber" (quadratic within ``huber_delta``
        standard deviations, linear beyond) resists outlying targets.
    huber_delta : float, default=1.0
        Where "huber" turns from quadratic to linear, in standard deviations.
    {lr}
    {layer_lr_decay}
    {optimizer}
    {weight_decay}
    {max_epochs}
    {batch_size}
    {batchnorm}
    {head_init}
    {early_stopping}
    {patience}
    {validation_fraction}
    {augment}
    {tta}
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
    n_outputs_ : int
        Targets (columns of ``y``; 1 for a 1-D ``y``, whose predictions are 1-D too).
    target_mean_, target_scale_ : ndarray of shape (n_outputs,)
        The standardization of the targets learned in ``fit``.
    net_, history_, best_epoch_, interrupted_, n_blocks_, n_frozen_, batchnorm_, head_init_,
    preprocessing_
        As in :class:`FineTuneClassifier`.

    See Also
    --------
    FineTuneClassifier : The same training, for classes and tags.
    CNNFeatureExtractor : Frozen features, for a regressor such as ``RidgeCV``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTuneRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    >>> y = X.mean(axis=(1, 2, 3))  # mean brightness
    >>> reg = FineTuneRegressor(freeze="all", image_size=32, max_epochs=2, random_state=0)
    >>> reg.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints = {
        **FineTuneBase._parameter_constraints,
        "loss": [StrOptions(set(LOSSES))],
        "huber_delta": [Interval(Real, 0, None, closed="neither")],
    }

    _criterion_params = ("loss", "huber_delta")

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet", freeze=0,
                 loss="squared_error", huber_delta=1.0, lr=1e-3, layer_lr_decay=0.75,
                 optimizer="adamw", weight_decay=1e-4, max_epochs=None, batch_size=32,
                 batchnorm="auto", head_init="auto", early_stopping="auto", patience=3, validation_fraction=0.15, augment=None, tta=None,
                 image_size=None, image_shape=None, device="auto", random_state=None,
                 verbose=0, progress="auto", memory=None, precision="fp32", backend="auto", warm_start=False,
                 checkpoint=None):
        self.backbone = backbone
        self.weights = weights
        self.freeze = freeze
        self.loss = loss
        self.huber_delta = huber_delta
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
    def partial_fit(self, X, y, sample_weight=None):
        """Train one more epoch (the first call builds the network and the standardization).

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Real-valued targets, as in ``fit``.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss, as in ``fit``.

        Returns
        -------
        FineTuneRegressor
            The regressor, trained one epoch further (``self``).
        """
        return self._partial_fit(X, y, sample_weight)

    def predict(self, X):
        """Predict the targets, in the units of ``y``.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            1-D when ``y`` was 1-D in ``fit``.
        """
        check_is_fitted(self)
        standardized = self._head_outputs(X).numpy()
        predicted = standardized * self.target_scale_ + self.target_mean_
        return predicted[:, 0] if self._single_target else predicted

    # -- what the targets need --------------------------------------------------------

    def _encode_targets(self, y, n_samples, *, warm):
        if y is None:
            raise ValueError("FineTuneRegressor requires y to be passed, but the target y is None.")
        try:
            y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        except ValueError as error:
            if "NaN" in str(error) or "infinity" in str(error):
                raise ValueError(f"{error} Drop the samples without a target, or impute "
                                 "them, before fitting.") from None
            raise
        if y.ndim > 2:
            raise ValueError(f"y has shape {y.shape}: give one target per sample (1-D) or "
                             "one row of targets per sample (2-D).")
        check_consistent_length(np.empty(n_samples), y)
        if n_samples < 2 and not warm:
            raise ValueError(f"FineTuneRegressor needs at least 2 samples, got {n_samples} sample.")
        targets = y.reshape(len(y), -1)
        if warm:
            if targets.shape[1] != self.n_outputs_:
                raise ValueError(f"y has {targets.shape[1]} targets; the fitted network has "
                                 f"{self.n_outputs_} outputs. Fit anew with warm_start=False.")
        else:
            self.n_outputs_ = targets.shape[1]
            self._single_target = y.ndim == 1
            self.target_mean_ = targets.mean(axis=0)
            scale = targets.std(axis=0)
            self.target_scale_ = np.where(scale > 0, scale, 1.0)
        return ((targets - self.target_mean_) / self.target_scale_).astype(np.float32)

    def _n_outputs(self):
        return self.n_outputs_

    def _head_kind(self):
        return "quantities"

    def _criterion(self, y_train, sample_weight=None):
        options = {"delta": self.huber_delta} if self.loss == "huber" else {}
        return LOSSES[self.loss](reduction="none", **options), None

    def _target_state(self):
        return {"n_outputs_": self.n_outputs_, "single_target": self._single_target,
                "target_mean_": self.target_mean_.tolist(),
                "target_scale_": self.target_scale_.tolist()}

    def _set_target_state(self, description):
        self.n_outputs_ = description["n_outputs_"]
        self._single_target = description["single_target"]
        self.target_mean_ = np.asarray(description["target_mean_"], dtype=np.float64)
        self.target_scale_ = np.asarray(description["target_scale_"], dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
