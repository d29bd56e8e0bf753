"""What every estimator that fine-tunes a network shares.

:class:`FineTuneBase` builds the network (backbone blocks and a new linear head), freezes
the bottom blocks, computes the frozen trunk once, trains with skorch, keeps a folded
inference copy, and gives the penultimate features as ``transform``. A subclass adds
only what its targets need: how to check and encode them, the loss, the number of
outputs, and its predict methods.
"""

import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from sktransfer._engine.backbones import resolve_backbone, weights_digest
from sktransfer._engine.estimator import NetworkEstimator
from sktransfer._engine.device import out_of_memory_errors, resolve_precision, seeded
from sktransfer._engine.images import check_images
from sktransfer._engine.inference import (
    Inference,
    TTAViews,
    prepare_inference,
    block_output_shapes,
    inference_batch_size,
    pooled_width,
    stream_features,
)
from sktransfer._engine.io import read_tensors
from sktransfer._engine.preprocessing import Preprocessing
from sktransfer._training.skorch_net import (
    CHECKPOINT_FILE,
    SampleWeightedLoss,
    TrainingSet,
    light_augmentation,
    training_net,
)
from sktransfer._training.lr_finder import END_LR, N_STEPS, START_LR, range_test
from sktransfer._training.transfer_net import TransferNet, block_learning_rates, resolve_freeze
from sktransfer._training.linear_head import fit_linear_head
from sktransfer._training.trunk import FrozenTrunk

#: Training epochs when ``max_epochs=None`` asks for training.
DEFAULT_EPOCHS = 20
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


#: numpydoc entries of the training parameters; class docstrings name them as {name}.
TRAINING_PARAMETER_DOCS = {
    "freeze": """freeze : int or "all", default=0
        Bottom blocks kept frozen (weights and BatchNorm statistics): ``0``
        fine-tunes everything, ``"all"`` trains only the head, ``-k`` leaves the top
        ``k`` blocks trainable.""",
    "lr": """lr : float or "auto", default=1e-3
        Learning rate of the head. ``"auto"`` runs a learning-rate range test
        (:meth:`find_lr`) on the training part inside ``fit`` and trains at its
        suggestion (``lr_``); a warm fit keeps the rate found before.""",
    "layer_lr_decay": """layer_lr_decay : float, default=0.75
        Each block gets the learning rate of the block above times this factor;
        ``1.0`` uses one rate for all.""",
    "optimizer": """optimizer : {"adamw", "sgd"} or torch optimizer class, default="adamw"
        ``"sgd"`` uses momentum 0.9.""",
    "weight_decay": """weight_decay : float, default=1e-4""",
    "max_epochs": """max_epochs : int or None, default=None
        Most training epochs; ``0`` keeps the initial head (see ``head_init``).
        ``None`` trains 20, except with a probe head and every block frozen: the
        exactly fit head is then the whole fit.""",
    "batchnorm": """batchnorm : {"auto", "frozen", "train"}, default="auto"
        BatchNorm layers of the trainable blocks: ``"frozen"`` keeps their running
        statistics (inference mode) while their affine weights train; ``"train"``
        updates the statistics from each training batch. ``"auto"`` freezes them
        below 100 training images and trains them from 100 on: frozen was better
        at every depth on the few-shot photo sets measured (25-68 images), training
        them on the digits from 150 images at ``freeze=6`` and from 400 at
        ``freeze=0`` (benchmarks/README.md). The fitted choice is ``batchnorm_``.""",
    "head_init": """head_init : {"auto", "probe", "random"}, default="auto"
        ``"probe"`` fits the new head exactly before any gradient step: a linear
        model (multinomial logistic regression for classes, one per label for
        multi-label targets, ridge for quantities; its penalty chosen by inner
        cross-validation; sample weights honoured) on the pooled features of the
        training part, centred and scaled by one common factor, the scaling folded
        in (LP-FT). ``"random"`` starts from a random head. ``"auto"`` fits the
        probe when every block is frozen (the head is then a convex problem the
        solver answers exactly, with no epochs) and starts at random otherwise (it
        ended more accurate when blocks train; benchmarks/README.md). The fitted
        choice is ``head_init_``.""",
    "batch_size": """batch_size : int, default=32
        Images per training step. Inference (predict, transform, the frozen blocks'
        outputs) runs in batches sized for speed, as ``CNNFeatureExtractor``'s "auto".""",
    "early_stopping": """early_stopping : bool or "auto", default="auto"
        Hold out ``validation_fraction`` of the training data, stop when the
        validation loss has not improved for ``patience`` epochs, and restore the
        weights of the best epoch. ``"auto"`` does so when the validation part
        holds at least 50 images (334 training images at the default fraction) and
        otherwise trains every epoch on all of them: on validation parts of 5-9
        images the loss is too noisy to stop on (benchmarks/README.md). The fitted
        choice is ``early_stopping_``. With a probe head the starting weights
        are scored as epoch 0 and can be the best: training then ends no worse on
        the validation part than the probe.""",
    "patience": """patience : int, default=3""",
    "validation_fraction": """validation_fraction : float, default=0.15""",
    "augment": """augment : None, "light" or callable, default=None
        Training-time augmentation of each preprocessed image tensor (C, H, W):
        ``"light"`` is a random resized crop and horizontal flip; any torchvision
        transform works. Never applied in predict.""",
    "tta": """tta : None, "flip" or int, default=None
        Test-time augmentation in ``predict``, ``predict_proba`` and
        ``decision_function`` (never in ``fit`` or ``transform``): the outputs are
        averaged over views of each image, in the head's output (logit) space.
        ``"flip"``: the image and its horizontal mirror (a mirrored image gets the same
        prediction); an int n: the image, its mirror and n - 2 light views (zoom
        85-100%, shift, mirror), the same fixed views for every image and call. Costs
        about one predict per view, in batches of all views at once.""",
    "random_state": """random_state : int, RandomState or None, default=None
        Seeds the head, the validation split, shuffling and augmentation: with the
        same seed and data, training on the CPU gives the same predictions.""",
    "verbose": """verbose : int, default=0
        1 prints a table per epoch; 2 adds a progress bar per epoch.""",
    "memory": """memory : str, path or joblib.Memory, default=None
        Cache the frozen blocks' outputs (and transform's features) per image, across
        fits, folds and predict.""",
    "warm_start": """warm_start : bool, default=False
        Continue training the fitted network on the next ``fit`` instead of starting
        over; on an unfitted estimator with ``checkpoint``, start from the checkpoint.""",
    "checkpoint": """checkpoint : str or path, default=None
        Folder where the best epoch's weights are saved (atomically) as training goes,
        so that a crashed or interrupted fit can resume with ``warm_start=True``.""",
}


class FineTuneBase(NetworkEstimator):
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

    _parameter_constraints = {
        **NetworkEstimator._parameter_constraints,
        "freeze": [Integral, StrOptions({"all"})],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "layer_lr_decay": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adamw", "sgd"}), type],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left"), None],
        "batchnorm": [StrOptions({"auto", "frozen", "train"})],
        "head_init": [StrOptions({"auto", "probe", "random"})],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "augment": [None, StrOptions({"light"}), callable],
        "tta": [None, StrOptions({"flip"}), Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint": [None, str, os.PathLike],
        # fp16 training would need loss scaling: training takes fp32 and bf16.
        "precision": [StrOptions({"fp32", "bf16"})],
    }

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
        self
        """
        warm = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, epochs=None, warm=warm, sample_weight=sample_weight)

    def _partial_fit(self, X, y, sample_weight, **target_options):
        """One more epoch; the first call builds the network (``partial_fit``'s work)."""
        warm = hasattr(self, "net_")
        if warm:  # _fit_context validates the first call only: parameters may change
            self._validate_params()
        return self._fit(X, y, epochs=1, warm=warm, sample_weight=sample_weight,
                         **target_options)

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
        y : array-like, as in ``fit``
        sample_weight : array-like of shape (n_samples,), default=None
        start_lr, end_lr : float, default=1e-6, 1.0
        n_steps : int, default=100

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
        options = dict(start_lr=start_lr, end_lr=end_lr, n_steps=n_steps)
        finder = clone(self).set_params(warm_start=False, checkpoint=None)
        return finder._fit(X, y, epochs=0, warm=False, sample_weight=sample_weight,
                           range_test_only=options)

    def _fit(self, X, y, *, epochs, warm, sample_weight=None, range_test_only=None,
             **target_options):
        images, device = self._check_runtime(X, reset=not warm)
        if sample_weight is not None:  # before any state
            sample_weight = _check_sample_weight(sample_weight, np.empty(len(images)),
                                                 dtype=np.float32, ensure_non_negative=True)
        y = self._encode_targets(y, len(images), warm=warm, **target_options)
        precision = resolve_precision(device, self.precision)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with seeded(seed, device):
            if not warm:
                self._build_network(resolve_backbone(self.backbone, self.weights), len(y))
                self.early_stopping_ = self._stops_early(len(y))
                if epochs is None and self.max_epochs == 0 and self.head_init_ != "probe":
                    raise ValueError(
                        "max_epochs=0 keeps the head as it starts, and only a probe head "
                        f"is fit (head_init={self.head_init!r} starts it at random here). "
                        "Use head_init='probe', or max_epochs >= 1.")
                self._resume_from_checkpoint()
            elif resolve_freeze(self._freeze_setting(), self.n_blocks_) != self.n_frozen_:
                raise ValueError(
                    f"warm_start continues the fitted network, frozen at {self.n_frozen_} "
                    f"blocks; freeze={self.freeze!r} asks for another depth. Fit anew "
                    "(warm_start=False) to change freeze.")
            model = self.net_.module_ if warm else self._model
            train, valid = self._training_sets(images, y, seed, model, device, precision,
                                               sample_weight)
            if not warm and self.head_init_ == "probe":
                self._fit_head(model, train, device, precision, seed)
            if epochs is None:
                epochs = self._epochs()
            auto = self.lr == "auto"
            with out_of_memory_errors(input_size=self.preprocessing_.input_size,
                                      batch_size=self.batch_size):
                if warm:
                    net = self.net_.set_params(verbose=self.verbose, precision=precision)
                else:
                    net = self._training_net(train, device, precision, lr=1.0 if auto else self.lr)
                if range_test_only is not None:
                    return range_test(net, train, **range_test_only)
                if auto and not warm:
                    # The test's draws must not shift training's: lr="auto" then trains
                    # exactly as lr=lr_ would.
                    state = torch.get_rng_state()
                    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
                    self.lr_finder_ = range_test(net, train)
                    torch.set_rng_state(state)
                    if cuda is not None:
                        torch.cuda.set_rng_state(cuda, device)
                    net = self._training_net(train, device, precision,
                                             lr=self.lr_finder_.suggestion)
                if not warm:
                    self.lr_ = self.lr_finder_.suggestion if auto else self.lr
                    if not auto:  # a finder from an earlier fit would contradict lr_
                        self.__dict__.pop("lr_finder_", None)
                criterion = {name: getattr(self, name) for name in self._criterion_params}
                if warm and criterion != getattr(self, "_criterion_built_with", None):
                    loss, class_weight = self._criterion(train.y, train.sample_weight)
                    # Not set_params: skorch would also restart the optimizer, losing its
                    # moments. The loss holds no parameters the optimizer steps.
                    net.criterion__loss, net.criterion__class_weight = loss, class_weight
                    net.criterion_ = SampleWeightedLoss(loss, class_weight).to(net.device)
                self._criterion_built_with = criterion
                try:
                    interrupted = net.train(train, valid, epochs=epochs,
                                            score_start=not warm and self.head_init_ == "probe")
                finally:
                    net.module_.input_block = 0
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

    def _build_network(self, backbone, n_samples):
        self.preprocessing_ = backbone.preprocessing.with_size(self.image_size)
        self.n_blocks_ = len(backbone.block_names)
        self.block_names_ = backbone.block_names
        self.n_frozen_ = resolve_freeze(self._freeze_setting(), self.n_blocks_,
                                        backbone.block_names)
        self.head_init_ = self.head_init
        if self.head_init == "auto":
            self.head_init_ = "probe" if self.n_frozen_ == self.n_blocks_ else "random"
        self.batchnorm_ = batchnorm_mode(self.batchnorm, n_samples)
        self._block_shapes = block_output_shapes(backbone.blocks, self.preprocessing_)
        width = pooled_width(self._block_shapes[-1])
        self._model = TransferNet(backbone.blocks, width, self._n_outputs(), self.n_frozen_,
                                  batchnorm=self.batchnorm_)
        self._model.to(memory_format=torch.channels_last)
        self._feature_names_out = [f"{self.block_names_[-1]}_avg{i}" for i in range(width)]

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

    def _freeze_setting(self):
        """The ``freeze`` the network is built with (a search sets its chosen one)."""
        return self.freeze

    def _resume_from_checkpoint(self):
        """With warm_start and a checkpoint from an earlier fit, start from its weights."""
        if not (self.warm_start and self.checkpoint):
            return
        path = Path(self.checkpoint) / CHECKPOINT_FILE
        if path.is_file():
            tensors, _ = read_tensors(path)
            self._model.load_state_dict(tensors)

    def _training_sets(self, images, y, seed, model, device, precision, sample_weight=None):
        """Training and validation sets of the inputs the trainable part needs."""
        if self.early_stopping_:
            train_index, valid_index = self._validation_split(y, seed)
        else:
            train_index, valid_index = np.arange(len(y)), None
        augment = self._augmentation()
        start = self.n_frozen_ if augment is None else 0
        # The model's own frozen blocks (no copy: this fit owns them, and they run in
        # eval mode in training too), so that training on their cached outputs gives the
        # very model that training through them does.
        frozen = (Inference(model.blocks[:start].eval().to(device), device, precision,
                            self.backend) if start else None)
        given = getattr(self, "_given_trunk_inputs", {})  # a search computed them once
        if start in given:
            inputs = given[start]
        else:
            inputs = self._frozen_trunk(frozen, model.blocks).inputs(images, start)
        if inputs is None:
            start = 0
            inputs = self._frozen_trunk(frozen, model.blocks).inputs(images, 0)
        model.input_block = start

        def make(index, augment):
            weight = None if sample_weight is None else sample_weight[index]
            if inputs is not None:
                return TrainingSet(y[index], inputs=inputs[index], augment=augment,
                                   sample_weight=weight)
            return TrainingSet(y[index], images=images.subset(index),
                               preprocessing=self.preprocessing_, augment=augment,
                               sample_weight=weight)

        return make(train_index, augment), (None if valid_index is None else make(valid_index, None))

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

    def _skorch_net(self, y_train, device, sample_weight=None, *, lr):
        loss, class_weight = self._criterion(y_train, sample_weight)
        return training_net(
            self._model, loss=loss, class_weight=class_weight, lr=lr,
            block_rates=block_learning_rates(self.n_blocks_, self.n_frozen_, lr,
                                             self.layer_lr_decay),
            optimizer=self.optimizer, weight_decay=self.weight_decay,
            max_epochs=DEFAULT_EPOCHS if self.max_epochs is None else self.max_epochs,
            batch_size=self.batch_size,
            n_train=0 if y_train is None else len(y_train),
            early_stopping=self.early_stopping_, patience=self.patience,
            checkpoint=self.checkpoint, validation=self.early_stopping_,
            verbose=self.verbose, device=device)

    def _forget_training_data(self):
        """Drop what only training needed, so the fitted model pickles small."""
        self.net_.forget_training_data()
        self.__dict__.pop("_model", None)

    # -- inference -----------------------------------------------------------------

    def transform(self, X):
        """Penultimate features of the fine-tuned network (its pooled last block).

        Parameters
        ----------
        X : images

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
        """
        check_is_fitted(self)
        inference = self._inference_for_call()

        def extract(images):
            if self.memory is not None and self.n_frozen_ > 0:
                trunk = self._frozen_trunk(inference, self._fitted_blocks())
                inputs = trunk.inputs(images, self.n_frozen_)  # from the fit's cache
                if inputs is not None:
                    return trunk.top_features(inputs, self.n_frozen_)
            return self._penultimate(inference, images)

        def setting():
            return ("penultimate", weights_digest(self._fitted_blocks()), self.preprocessing_,
                    inference.precision)

        return self._transform_images(X, extract, setting)

    def _head_outputs(self, X):
        """The head's raw outputs (logits) for ``X``, as a float64 tensor.

        With ``tta``, the mean over the views; the head is linear, so that is the head
        of the views' mean penultimate features.
        """
        check_is_fitted(self)
        if self.tta is None:
            return self._apply_head(self.transform(X))
        views = TTAViews(self.tta)  # checks tta: set_params may have changed it after fit
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        return self._apply_head(self._penultimate(self._inference_for_call(), images, views))

    def _penultimate(self, inference, images, views=None):
        """Pooled features of the top block (with ``views``: their mean per image)."""
        batch_size = ("auto" if views is None
                      else max(1, self._inference_batch_size() // len(views)))
        return stream_features(
            inference, images, layers=[self.n_blocks_ - 1], pooling="avg",
            preprocessing=self.preprocessing_, batch_size=batch_size,
            progress=self.progress, views=views)

    def _head_outputs_from_trunk(self, inputs, start):
        """The head's outputs for precomputed inputs of block ``start`` (a search's scoring)."""
        trunk = self._frozen_trunk(self._inference_for_call(), self._fitted_blocks())
        return self._apply_head(trunk.top_features(inputs, start))

    def _apply_head(self, features):
        head = self.net_.module_.head
        with torch.inference_mode():
            outputs = torch.nn.functional.linear(torch.as_tensor(features),
                                                 head.weight.detach().cpu().float(),
                                                 head.bias.detach().cpu().float())
        return outputs.double()

    def _frozen_trunk(self, inference, fitted_blocks):
        return FrozenTrunk(inference, fitted_blocks, block_shapes=self._block_shapes,
                           preprocessing=self.preprocessing_, memory=self.memory,
                           batch_size=self._inference_batch_size())

    def _inference_batch_size(self):
        """Frozen-block caching, transform and predict run at the fastest batch size."""
        return inference_batch_size("auto", self.preprocessing_.input_size)

    def _fitted_blocks(self):
        return self.net_.module_.blocks

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    # -- pickles and safe files -------------------------------------------------------

    def __getstate__(self):
        """Pickle what prediction needs: the optimizer's state (twice the weights) stays out.

        skorch pickles ``module`` (its init parameter, the same network as ``module_``)
        apart from ``module_``, which would store the weights twice: it travels as None
        and is re-linked on unpickling. A warm-started fit of an unpickled model starts a
        fresh optimizer.
        """
        state = super().__getstate__()
        if "net_" in state:
            trained = state["net_"]
            net = object.__new__(type(trained))  # a shallow copy: the live net is not touched
            net.__dict__.update({k: v for k, v in vars(trained).items() if k != "optimizer_"})
            net.module = None
            state["net_"] = net
        return state

    def __setstate__(self, state):
        if "net_" in state:
            state["net_"].module = state["net_"].module_
        super().__setstate__(state)

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted state, for sktransfer.save."""
        description = {
            "preprocessing": self.preprocessing_.to_json(),
            "n_frozen_": self.n_frozen_, "best_epoch_": self.best_epoch_,
            "batchnorm_": self.batchnorm_, "head_init_": self.head_init_,
            "early_stopping_": self.early_stopping_,
            "lr_": self.lr_,
            "history": [{k: v for k, v in epoch.items() if k != "batches"}
                        for epoch in self.history_],
            **self._target_state(),
        }
        return description, self.net_.module_.state_dict()

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        from skorch.history import History

        self._set_target_state(description)
        self._build_network(resolve_backbone(self.backbone, weights=None), n_samples=0)
        self.batchnorm_ = self._model.batchnorm = description["batchnorm_"]
        self.head_init_ = description["head_init_"]
        self.early_stopping_ = description["early_stopping_"]
        self.preprocessing_ = Preprocessing.from_json(description["preprocessing"])
        self._model.load_state_dict(tensors)
        self.lr_ = description["lr_"]
        net = self._skorch_net(None, torch.device("cpu"), lr=self.lr_)
        net.initialize()
        net.history = History(description["history"])
        self.net_, self.history_ = net, net.history
        self.best_epoch_ = description["best_epoch_"]
        self.interrupted_ = False
        self._forget_training_data()
        self._prepare_inference()
