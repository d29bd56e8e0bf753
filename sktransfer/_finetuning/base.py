"""What every estimator that fine-tunes a network shares: the steps of fitting.

:class:`FineTuneBase` builds the network (backbone blocks and a new linear head), freezes
the bottom blocks, computes the frozen trunk once, trains with skorch and keeps a folded
inference copy; :class:`~sktransfer._finetuning.prediction.FineTunedNetwork`, its base,
gives the penultimate features as ``transform`` and the head's outputs. A subclass adds
only what its targets need: how to check and encode them, the loss, the number of
outputs, and its predict methods.
"""

from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight

from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.device import out_of_memory_errors, resolve_precision, seeded
from sktransfer._engine.estimator import NetworkEstimator
from sktransfer._engine.inference import Inference, prepare_inference
from sktransfer._engine.io import read_tensors
from sktransfer._finetuning.network import DEFAULT_EPOCHS, FineTunedNetwork
from sktransfer._finetuning.settings import TRAINING_PARAMETER_CONSTRAINTS
from sktransfer._training.linear_head import fit_linear_head
from sktransfer._training.lr_finder import (
    END_LR,
    N_STEPS,
    START_LR,
    range_test,
    range_test_keeping_rng,
)
from sktransfer._training.skorch_net import (
    CHECKPOINT_FILE,
    SampleWeightedLoss,
    TrainingSet,
    light_augmentation,
)
from sktransfer._training.transfer_net import resolve_freeze

#: ``batchnorm="auto"`` updates BatchNorm statistics from this many training images on
#: (benchmarks/README.md, small-data fine-tuning).
BATCHNORM_TRAIN_FROM = 100
#: ``early_stopping="auto"`` stops early when the validation part holds this many images:
#: on fewer, one noisy loss stopped training too soon (benchmarks/README.md).
MIN_VALIDATION_IMAGES = 50


def batchnorm_mode(batchnorm, n_samples):
    """``"frozen"`` or ``"train"``: what ``batchnorm`` means for a fit on ``n_samples``."""
    if batchnorm == "auto":
        return "frozen" if n_samples < BATCHNORM_TRAIN_FROM else "train"
    return batchnorm


@dataclass
class FitData:
    """The checked inputs of one fit: images, encoded targets, weights and where to run."""

    images: object
    y: np.ndarray
    sample_weight: object  # float32 array or None
    device: torch.device
    precision: str
    seed: int


class FineTuneBase(FineTunedNetwork):
    """Base of the fine-tuning estimators; not for direct use.

    Subclasses implement ``_encode_targets(y, n_samples, warm, **kwargs)`` (checks,
    sets target attributes, returns what the loss takes), ``_n_outputs()``,
    ``_criterion(y_train, sample_weight)`` (a per-sample loss module,
    ``reduction="none"``, and the class weights or None), ``_target_state()`` and
    ``_set_target_state(description)`` (for safe files); they may override
    ``_validation_split``. ``_criterion_params`` names the parameters the loss is
    built from: a warm fit after ``set_params`` changed one rebuilds the loss.
    """

    _criterion_params = ()
    _parameter_constraints = {**NetworkEstimator._parameter_constraints,
                              **TRAINING_PARAMETER_CONSTRAINTS}

    # -- fitting -------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune on images ``X`` with targets ``y``.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The classifier's labels of any type, or a 0/1 indicator matrix
            (multi-label); the regressor's real-valued targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the training and the validation loss (times its
            class weight); all ones trains the same model as None.

        Returns
        -------
        FineTuneClassifier or FineTuneRegressor
            The fitted estimator (``self``).
        """
        warm = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, sample_weight, epochs=None, warm=warm)

    @_fit_context(prefer_skip_nested_validation=True)
    def _fit_on_trunk_inputs(self, X, y, sample_weight, trunk_inputs):
        """``fit`` anew, given the frozen blocks' outputs for ``X`` (a search's, computed
        once for all its fits; None: computed here)."""
        return self._fit(X, y, sample_weight, epochs=None, warm=False,
                         trunk_inputs=trunk_inputs)

    def _partial_fit(self, X, y, sample_weight, **target_options):
        """One more epoch; the first call builds the network (``partial_fit``'s work)."""
        warm = hasattr(self, "net_")
        if warm:  # _fit_context validates the first call only: parameters may change
            self._validate_params()
        return self._fit(X, y, sample_weight, epochs=1, warm=warm, **target_options)

    def find_lr(self, X, y, sample_weight=None, *, start_lr=START_LR, end_lr=END_LR,
                n_steps=N_STEPS):
        """Learning-rate range test on ``X``, ``y``; this estimator is left as it was.

        A fresh network (as ``fit`` would build it, on ``fit``'s training part: the
        validation part of early stopping is held out) is trained for ``n_steps``
        mini-batches while the head's learning rate rises exponentially from
        ``start_lr`` to ``end_lr`` (lower blocks at their decayed share), stopping early
        when the loss blows up or stops being finite. Deterministic with
        ``random_state``. ``lr="auto"`` runs this inside ``fit``.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets, as in ``fit``.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss, as in ``fit``.
        start_lr, end_lr : float, default=1e-6, 1.0
            The head's learning rate at the first and at the last step.
        n_steps : int, default=100
            Mini-batches of the test, at most.

        Returns
        -------
        LRFinderResult
            ``lrs``, smoothed ``losses``, ``raw_losses``, ``suggestion`` (a tenth of
            the rate at the lowest smoothed loss) and ``diverged``; ``plot()`` draws it.
        """
        self._validate_params()
        if not (isinstance(n_steps, Integral) and n_steps >= 1):
            raise ValueError(f"n_steps={n_steps!r}: give a whole number of mini-batches >= 1.")
        if not (isinstance(start_lr, Real) and isinstance(end_lr, Real)
                and 0 < start_lr < end_lr):
            raise ValueError(f"The range test needs 0 < start_lr < end_lr, got {start_lr!r} "
                             f"and {end_lr!r}.")
        finder = clone(self).set_params(warm_start=False, checkpoint=None)
        data = finder._prepare_data(X, y, sample_weight, warm=False)
        with seeded(data.seed, data.device):
            model = finder._new_network(data)
            train, _ = finder._training_sets_and_head(data, model, warm=False)
            with finder._out_of_memory_errors():
                net = finder._training_net(train, data.device, data.precision,
                                           lr=1.0 if self.lr == "auto" else self.lr)
                return range_test(net, train, start_lr=start_lr, end_lr=end_lr,
                                  n_steps=n_steps)

    def _fit(self, X, y, sample_weight, *, epochs, warm, trunk_inputs=None, **target_options):
        """Every fit's steps: check the data, build or continue the network, train."""
        data = self._prepare_data(X, y, sample_weight, warm=warm, **target_options)
        with seeded(data.seed, data.device):
            model = self._continued_network() if warm else self._new_network(data)
            if not warm and epochs is None:
                self._check_max_epochs()
            train, valid = self._training_sets_and_head(data, model, warm=warm,
                                                        trunk_inputs=trunk_inputs)
            with self._out_of_memory_errors():
                net = self._net_for_fit(train, data, warm=warm)
                interrupted = self._train(net, train, valid, warm=warm,
                                          epochs=self._epochs() if epochs is None else epochs)
        return self._finish(net, interrupted)

    def _prepare_data(self, X, y, sample_weight, *, warm, **target_options):
        """Check the images, weights and targets (before any state changes); draw the seed."""
        images, device = self._check_runtime(X, reset=not warm)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, np.empty(len(images)),
                                                 dtype=np.float32, ensure_non_negative=True)
        y = self._encode_targets(y, len(images), warm=warm, **target_options)
        precision = resolve_precision(device, self.precision)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return FitData(images, y, sample_weight, device, precision, seed)

    def _training_sets_and_head(self, data, model, *, warm, trunk_inputs=None):
        """The training and validation sets of ``model``; a new probe head is fit here."""
        train, valid = self._training_sets(data, model, trunk_inputs)
        if not warm and self.head_init_ == "probe":
            self._fit_head(model, train, data.device, data.precision, data.seed)
        return train, valid

    def _new_network(self, data):
        """Build the network for ``data`` (from the checkpoint with warm_start)."""
        self._build_network(resolve_backbone(self.backbone, self.weights),
                            batchnorm_mode(self.batchnorm, len(data.y)))
        self.early_stopping_ = self._stops_early(len(data.y))
        self._resume_from_checkpoint()
        return self._model

    def _check_max_epochs(self):
        if self.max_epochs == 0 and self.head_init_ != "probe":
            raise ValueError(
                "max_epochs=0 keeps the head as it starts, and only a probe head "
                f"is fit (head_init={self.head_init!r} starts it at random here). "
                "Use head_init='probe', or max_epochs >= 1.")

    def _continued_network(self):
        """The fitted network, for a warm fit at the depth it was fitted at."""
        if resolve_freeze(self.freeze, self.n_blocks_) != self.n_frozen_:
            raise ValueError(
                f"warm_start continues the fitted network, frozen at {self.n_frozen_} "
                f"blocks; freeze={self.freeze!r} asks for another depth. Fit anew "
                "(warm_start=False) to change freeze.")
        return self.net_.module_

    def _out_of_memory_errors(self):
        return out_of_memory_errors(input_size=self.preprocessing_.input_size,
                                    batch_size=self.batch_size)

    def _net_for_fit(self, train, data, *, warm):
        """The skorch net to train: the fitted one (warm), or new at ``lr`` (found if "auto")."""
        if warm:
            net = self.net_.set_params(verbose=self.verbose, precision=data.precision)
            self._rebuild_changed_loss(net, train)
            return net
        if self.lr == "auto":
            finder = self._training_net(train, data.device, data.precision, lr=1.0)
            self.lr_finder_ = range_test_keeping_rng(finder, train, data.device)
            self.lr_ = self.lr_finder_.suggestion
        else:
            self.lr_ = self.lr
            self.__dict__.pop("lr_finder_", None)  # from an earlier fit: it would contradict lr_
        self._criterion_built_with = self._criterion_settings()
        return self._training_net(train, data.device, data.precision, lr=self.lr_)

    def _criterion_settings(self):
        return {name: getattr(self, name) for name in self._criterion_params}

    def _rebuild_changed_loss(self, net, train):
        """After ``set_params`` changed what the loss is built from, a new loss."""
        criterion = self._criterion_settings()
        if criterion != getattr(self, "_criterion_built_with", None):  # None: a loaded file
            loss, class_weight = self._criterion(train.y, train.sample_weight)
            # Not set_params: skorch would also restart the optimizer, losing its
            # moments. The loss holds no parameters the optimizer steps.
            net.criterion__loss, net.criterion__class_weight = loss, class_weight
            net.criterion_ = SampleWeightedLoss(loss, class_weight).to(net.device)
        self._criterion_built_with = criterion

    def _train(self, net, train, valid, *, warm, epochs):
        """Train ``epochs``; whether KeyboardInterrupt stopped it."""
        try:
            return net.train(train, valid, epochs=epochs,
                             score_start=not warm and self.head_init_ == "probe")
        finally:
            net.module_.input_block = 0

    def _finish(self, net, interrupted):
        """Keep the trained net, drop what only training needed, prepare inference."""
        self.net_, self.history_ = net, net.history
        self.best_epoch_ = net.best_epoch()
        self.interrupted_ = interrupted
        self._forget_training_data()
        self._prepare_inference(warn=False)  # a bf16 fallback was told for training
        if interrupted:
            raise KeyboardInterrupt(
                f"{type(self).__name__}.fit interrupted in epoch {self.history_[-1, 'epoch']}; "
                f"the model keeps the weights of epoch {self.best_epoch_} (interrupted_=True).")
        return self

    def _epochs(self):
        """Training epochs of a fit: ``max_epochs``, or what None means (see its doc)."""
        if self.max_epochs is not None:
            return self.max_epochs
        exact = self.head_init_ == "probe" and self.n_frozen_ == self.n_blocks_
        return 0 if exact else DEFAULT_EPOCHS

    def _fit_head(self, model, train, device, precision, seed):
        """Set the head to the linear probe's solution on the training part's features."""
        inference = prepare_inference(model.blocks, device, precision, backend=self.backend,
                                      warn=False)
        if train.inputs is not None:  # the frozen blocks' outputs, computed for training
            trunk = self._frozen_trunk(inference, model.blocks)
            features = trunk.top_features(train.inputs, model.input_block)
        else:
            features = self._penultimate(inference, train.images)
        _, class_weight = self._criterion(train.y, train.sample_weight)
        weight, bias = fit_linear_head(
            features, train.y.numpy(), self._head_kind(), n_outputs=self._n_outputs(),
            sample_weight=None if train.sample_weight is None else train.sample_weight.numpy(),
            class_weight=None if class_weight is None else dict(enumerate(class_weight.tolist())),
            random_state=seed)
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(weight))
            model.head.bias.copy_(torch.from_numpy(bias))

    def _resume_from_checkpoint(self):
        """With warm_start and a checkpoint from an earlier fit, start from its weights."""
        if not (self.warm_start and self.checkpoint):
            return
        path = Path(self.checkpoint) / CHECKPOINT_FILE
        if path.is_file():
            tensors, _ = read_tensors(path)
            self._model.load_state_dict(tensors)

    def _training_sets(self, data, model, trunk_inputs=None):
        """Training and validation sets of the inputs the trainable part needs.

        ``trunk_inputs``: the frozen blocks' outputs for ``data.images``, when a caller
        computed them already (used when nothing augments the images).
        """
        if self.early_stopping_:
            train_index, valid_index = self._validation_split(data.y, data.seed)
        else:
            train_index, valid_index = np.arange(len(data.y)), None
        augment = self._augmentation()
        start, inputs = self._trainable_inputs(data, model, augment, trunk_inputs)
        model.input_block = start

        def make(index, augment):
            weight = None if data.sample_weight is None else data.sample_weight[index]
            if inputs is not None:
                return TrainingSet(data.y[index], inputs=inputs[index], augment=augment,
                                   sample_weight=weight)
            return TrainingSet(data.y[index], images=data.images.subset(index),
                               preprocessing=self.preprocessing_, augment=augment,
                               sample_weight=weight)

        return make(train_index, augment), (None if valid_index is None else make(valid_index, None))

    def _trainable_inputs(self, data, model, augment, trunk_inputs):
        """(block the inputs enter, the inputs or None to stream the images)."""
        start = self.n_frozen_ if augment is None else 0
        if augment is None and trunk_inputs is not None:
            return start, trunk_inputs
        # The model's own frozen blocks (no copy: this fit owns them, and they run in
        # eval mode in training too), so that training on their cached outputs gives the
        # very model that training through them does.
        frozen = (Inference(model.blocks[:start].eval().to(data.device), data.device,
                            data.precision, self.backend) if start else None)
        inputs = self._frozen_trunk(frozen, model.blocks).inputs(data.images, start)
        if inputs is None:
            start = 0
            inputs = self._frozen_trunk(frozen, model.blocks).inputs(data.images, 0)
        return start, inputs

    def _stops_early(self, n_samples):
        """Whether a fit on ``n_samples`` holds images out to stop early."""
        if self.early_stopping == "auto":
            return bool(np.ceil(self.validation_fraction * n_samples) >= MIN_VALIDATION_IMAGES)
        return bool(self.early_stopping)

    def _validation_split(self, y, seed):
        """Indices of the training and the validation part (random; subclasses stratify)."""
        n_valid = int(np.ceil(self.validation_fraction * len(y)))
        if n_valid < 1 or len(y) - n_valid < 1:
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of "
                f"{len(y)} samples, which leaves no training or no validation part. Use "
                "more samples or early_stopping=False.")
        return train_test_split(np.arange(len(y)), test_size=n_valid, random_state=seed)

    def _augmentation(self):
        if self.augment == "light":
            return light_augmentation(self.preprocessing_.input_size)
        return self.augment

    def _training_net(self, train, device, precision, *, lr):
        """The skorch net that trains on ``train`` at head rate ``lr``."""
        net = self._skorch_net(train.y, device, train.sample_weight, lr=lr)
        return net.set_params(verbose=self.verbose, precision=precision)
