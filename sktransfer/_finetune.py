"""Fine-tuning a pretrained CNN as a scikit-learn classifier, trained by skorch."""

import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d
from torch import nn

from ._backbones import resolve_backbone, weights_digest
from ._cache import cached_rows, check_cache_folder
from ._device import _bf16_advice, network_errors, resolve_device, resolve_precision
from ._features import (
    NETWORK_PARAMETER_CONSTRAINTS,
    InferenceCopyMixin,
    extract_features,
    inference_batch_size,
    prepare_inference,
)
from ._images import check_images
from ._preprocessing import Preprocessing
from ._io import read_tensors
from ._training import CHECKPOINT_FILE, TrainingSet, light_augmentation, training_net
from ._trunk import FrozenTrunk
from ._transfer_net import TransferNet, block_learning_rates, resolve_freeze



class FineTuneClassifier(InferenceCopyMixin, ClassifierMixin, BaseEstimator):
    """A pretrained CNN with a new head, fine-tuned by backprop, as a classifier.

    The top (classification) layer is replaced by a linear head for the target
    classes; the bottom ``freeze`` blocks stay frozen (weights and BatchNorm
    statistics), lower trainable blocks get smaller learning rates, and training stops
    when the validation loss stops improving. When frozen blocks are present and no
    augmentation is on, their outputs are computed once per fit (and cached across
    fits with ``memory``), so each epoch costs only the trainable part.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        As in :class:`CNNFeatureExtractor`.
    weights : {"imagenet"}, str, path or None, default="imagenet"
        As in :class:`CNNFeatureExtractor`; ``None`` trains from a random (but always
        the same) initialization: the no-transfer baseline.
    freeze : int or "all", default=0
        Bottom blocks kept frozen: ``0`` fine-tunes everything, ``"all"`` trains only
        the head, ``-k`` leaves the top ``k`` blocks trainable.
    lr : float, default=1e-3
        Learning rate of the head.
    layer_lr_decay : float, default=0.75
        Each block gets the learning rate of the block above times this factor;
        ``1.0`` uses one rate for all.
    optimizer : {"adamw", "sgd"} or torch optimizer class, default="adamw"
        ``"sgd"`` uses momentum 0.9.
    weight_decay : float, default=1e-4
    max_epochs : int, default=20
    batch_size : int, default=32
        Images per training step. Inference (predict, transform, the frozen blocks'
        outputs) runs in batches sized for speed, as ``CNNFeatureExtractor``'s "auto".
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the training data (stratified), stop when
        the validation loss has not improved for ``patience`` epochs, and restore the
        weights of the best epoch.
    patience : int, default=3
    validation_fraction : float, default=0.15
    augment : None, "light" or callable, default=None
        Training-time augmentation of each preprocessed image tensor (C, H, W):
        ``"light"`` is a random resized crop and horizontal flip; any torchvision
        transform works. Never applied in predict.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss.
    image_size : int or (int, int), default=None
    image_shape : tuple of int, default=None
    device : str or torch.device, default="auto"
    random_state : int, RandomState or None, default=None
        Seeds the head, the validation split, shuffling and augmentation: with the
        same seed and data, training on the CPU gives the same predictions.
    verbose : int, default=0
        1 prints a table per epoch; 2 adds a progress bar per epoch.
    progress : "auto" or bool, default="auto"
        Progress bar of the feature streaming in predict and transform.
    memory : str, path or joblib.Memory, default=None
        Cache the frozen blocks' outputs (and transform's features) per image, across fits.
    precision : {"fp32", "bf16"}, default="fp32"
        "bf16" trains and predicts in bfloat16 autocast (fast on CPUs with AVX-512 bf16
        or AMX, and on recent GPUs); the loss and the weights stay in float32.
    warm_start : bool, default=False
        Continue training the fitted network on the next ``fit`` instead of starting
        over; on an unfitted estimator with ``checkpoint``, start from the checkpoint.
    checkpoint : str or path, default=None
        Folder where the best epoch's weights are saved (atomically) as training goes,
        so that a crashed or interrupted fit can resume with ``warm_start=True``.

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns.
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
    preprocessing_ : Preprocessing

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
        **NETWORK_PARAMETER_CONSTRAINTS,
        "freeze": [Integral, StrOptions({"all"})],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "layer_lr_decay": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"adamw", "sgd"}), type],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "augment": [None, StrOptions({"light"}), callable],
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "checkpoint": [None, str, os.PathLike],
    }

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet", freeze=0, lr=1e-3,
                 layer_lr_decay=0.75, optimizer="adamw", weight_decay=1e-4, max_epochs=20,
                 batch_size=32, early_stopping=True, patience=3, validation_fraction=0.15,
                 augment=None, class_weight=None, image_size=None, image_shape=None,
                 device="auto", random_state=None, verbose=0, progress="auto", memory=None,
                 precision="fp32", warm_start=False, checkpoint=None):
        self.backbone = backbone
        self.weights = weights
        self.freeze = freeze
        self.lr = lr
        self.layer_lr_decay = layer_lr_decay
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.class_weight = class_weight
        self.image_size = image_size
        self.image_shape = image_shape
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress
        self.memory = memory
        self.precision = precision
        self.warm_start = warm_start
        self.checkpoint = checkpoint

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,)
            Labels of any type.

        Returns
        -------
        self : FineTuneClassifier
        """
        warm = self.warm_start and hasattr(self, "net_")
        return self._fit(X, y, epochs=self.max_epochs, warm=warm)

    def partial_fit(self, X, y, classes=None):
        """Train one more epoch (the first call builds the network).

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,)
        classes : array-like, default=None
            All classes, needed on the first call when ``y`` may not hold them all.

        Returns
        -------
        self : FineTuneClassifier
        """
        if not hasattr(self, "net_"):
            self._validate_params()
        return self._fit(X, y, epochs=1, warm=hasattr(self, "net_"), classes=classes)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : images

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        features = torch.from_numpy(self.transform(X))
        head = self.net_.module_.head
        with torch.inference_mode():
            logits = nn.functional.linear(features, head.weight.detach().cpu().float(),
                                          head.bias.detach().cpu().float())
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X):
        """Predicted labels, of the type of the training labels.

        Parameters
        ----------
        X : images

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def fit_transform(self, X, y):
        """Fit, then return the penultimate features of ``X`` (see :meth:`transform`)."""
        return self.fit(X, y).transform(X)

    def transform(self, X):
        """Penultimate features of the fine-tuned network (pooled last block).

        Parameters
        ----------
        X : images

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
        """
        check_is_fitted(self)
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        inference = self._inference_for_call()

        def extract(subset):
            return extract_features(
                inference, subset, layers=[self.n_blocks_ - 1], pooling="avg",
                preprocessing=self.preprocessing_, batch_size=self._inference_batch_size(),
                progress=self.progress)

        if self.memory is None:
            return extract(images)
        if self.n_frozen_ > 0:
            features = self._features_from_frozen_cache(images, inference)
            if features is not None:
                return features
        setting = ("penultimate", weights_digest(self._fitted_blocks()), self.preprocessing_,
                   inference.precision)
        return cached_rows(images, extract, memory=self.memory, setting=setting)

    def _features_from_frozen_cache(self, images, inference):
        """Penultimate features whose frozen part comes from the per-image cache.

        The frozen blocks' outputs are the ones training cached, so in a grid search the
        test fold's images, trained on in other folds, skip the frozen blocks here too.
        None when those outputs would not fit in memory.
        """
        trunk = self._frozen_trunk(inference, self._fitted_blocks())
        inputs = trunk.inputs(images, self.n_frozen_)
        return None if inputs is None else trunk.top_features(inputs, self.n_frozen_)

    def _frozen_trunk(self, inference, fitted_blocks):
        return FrozenTrunk(inference, fitted_blocks, block_shapes=self._block_shapes,
                           preprocessing=self.preprocessing_, memory=self.memory,
                           batch_size=self._inference_batch_size())

    def __sklearn_tags__(self):
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        # transform() gives the fine-tuned network's penultimate features.
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags

    def _inference_batch_size(self):
        """Frozen-block caching, transform and predict run at the fastest batch size."""
        return inference_batch_size("auto", self.preprocessing_.input_size)

    @property
    def _n_features_out(self):
        """Width of ``transform``'s output: the channels of the last block."""
        return self.net_.module_.head.in_features

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

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

    def _fitted_blocks(self):
        return self.net_.module_.blocks

    # -- fitting -------------------------------------------------------------------

    def _fit(self, X, y, *, epochs, warm, classes=None):
        images = check_images(self, X, reset=not warm, image_shape=self.image_shape)
        y = self._check_labels(y, len(images), warm=warm, classes=classes)
        device = resolve_device(self.device)
        if self.precision == "fp16":
            raise ValueError(
                "precision='fp16' is not supported for training (it needs loss scaling); use "
                f"precision='fp32'{_bf16_advice() if device.type == 'cpu' else ' or bf16'}.")
        precision = resolve_precision(device, self.precision)
        check_cache_folder(self.memory)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if not warm:
                self._build_network(resolve_backbone(self.backbone, self.weights))
                self._resume_from_checkpoint()
            elif resolve_freeze(self.freeze, self.n_blocks_) != self.n_frozen_:
                raise ValueError(
                    f"warm_start continues the fitted network, frozen at {self.n_frozen_} "
                    f"blocks; freeze={self.freeze!r} asks for another depth. Fit anew "
                    "(warm_start=False) to change freeze."
                )
            model = self.net_.module_ if warm else self._model
            train, valid = self._training_sets(images, y, seed, model, device, precision)
            net = self.net_ if warm else self._skorch_net(train.y, device)
            net.set_params(verbose=self.verbose, precision=precision)
            with network_errors(input_size=self.preprocessing_.input_size,
                                batch_size=self.batch_size):
                try:
                    interrupted = net.train(train, valid, epochs=epochs)
                finally:
                    net.module_.input_block = 0
        self.net_ = net
        self.history_ = net.history
        self.best_epoch_ = net.best_epoch()
        self.interrupted_ = interrupted
        self._forget_training_data()
        self._make_inference_blocks()
        if interrupted:
            raise KeyboardInterrupt(
                f"FineTuneClassifier.fit interrupted after {len(self.history_)} epoch(s); the "
                f"model keeps the weights of epoch {self.best_epoch_} (interrupted_=True)."
            )
        return self

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted state, for sktransfer.save."""
        description = {
            "preprocessing": self.preprocessing_.to_json(),
            "classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str,
            "n_frozen_": self.n_frozen_, "best_epoch_": self.best_epoch_,
            "history": [{k: v for k, v in epoch.items() if k != "batches"}
                        for epoch in self.history_],
        }
        return description, self.net_.module_.state_dict()

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        from skorch.history import History

        self.classes_ = np.asarray(description["classes"],
                                   dtype=np.dtype(description["classes_dtype"]))
        self._build_network(resolve_backbone(self.backbone, weights=None))
        self.preprocessing_ = Preprocessing.from_json(description["preprocessing"])
        self._model.load_state_dict(tensors)
        net = self._skorch_net(torch.arange(len(self.classes_)), torch.device("cpu"))
        net.initialize()
        net.history = History(description["history"])
        self.net_, self.history_ = net, net.history
        self.best_epoch_ = description["best_epoch_"]
        self.interrupted_ = False
        self._forget_training_data()
        self._make_inference_blocks()

    def _resume_from_checkpoint(self):
        """With warm_start and a checkpoint from an earlier fit, start from its weights."""
        if not (self.warm_start and self.checkpoint):
            return
        path = Path(self.checkpoint) / CHECKPOINT_FILE
        if path.is_file():
            tensors, _ = read_tensors(path)
            self._model.load_state_dict(tensors)

    def _check_labels(self, y, n_samples, *, warm, classes):
        if y is None:
            raise ValueError("FineTuneClassifier requires y to be passed, but the target y is None.")
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n_samples), y)
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError("y contains NaN labels: drop those samples or give them a class.")
        check_classification_targets(y)
        if warm:
            unknown = np.setdiff1d(y, self.classes_)
            if len(unknown):
                raise ValueError(
                    f"y holds classes {unknown.tolist()} that the fitted network has no "
                    f"output for (classes_={self.classes_.tolist()}). Fit anew with "
                    "warm_start=False, or pass every class to the first partial_fit."
                )
            return np.searchsorted(self.classes_, y)
        encoder = LabelEncoder().fit(y if classes is None else np.concatenate([classes, y]))
        if n_samples < 2:
            raise ValueError(f"FineTuneClassifier needs at least 2 samples, got {n_samples} sample.")
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y has only 1 class ({encoder.classes_[0]!r}); a classifier needs at least 2."
            )
        self.classes_ = encoder.classes_
        return encoder.transform(y)

    def _build_network(self, backbone):
        self.preprocessing_ = backbone.preprocessing.with_size(self.image_size)
        self.n_blocks_ = len(backbone.block_names)
        self.block_names_ = backbone.block_names
        self.n_frozen_ = resolve_freeze(self.freeze, self.n_blocks_, backbone.block_names)
        self._block_shapes = self._block_output_shapes(backbone.blocks)
        self._model = TransferNet(backbone.blocks, self._block_shapes[-1][0],
                                  len(self.classes_), self.n_frozen_)
        self._model.to(memory_format=torch.channels_last)

    def _block_output_shapes(self, blocks):
        """Shape of each block's output for one image, from one forward pass."""
        x = torch.zeros(1, self.preprocessing_.channels, *self.preprocessing_.input_size)
        shapes = []
        blocks.eval()
        with torch.inference_mode(), network_errors(
            input_size=self.preprocessing_.input_size, batch_size=1
        ):
            for block in blocks:
                x = block(x)
                shapes.append(tuple(x.shape[1:]))
        return shapes

    def _training_sets(self, images, y, seed, model, device, precision):
        """Training and validation sets of the inputs the trainable part needs."""
        if self.early_stopping:
            train_index, valid_index = self._split(y, seed)
        else:
            train_index, valid_index = np.arange(len(y)), None
        augment = self._augmentation()
        start = self.n_frozen_ if augment is None else 0
        # Unfolded: the same kernels as training through the frozen blocks, so that
        # training on cached outputs gives the very model that training without does.
        frozen = (prepare_inference(model.blocks[:start], device, precision, fold=False)
                  if start else None)
        trunk = self._frozen_trunk(frozen, model.blocks)
        inputs = trunk.inputs(images, start)
        if inputs is None:
            start = 0
            inputs = trunk.inputs(images, 0)
        model.input_block = start

        def make(index, augment):
            labels = y[index]
            if inputs is not None:
                return TrainingSet(labels, inputs=inputs[index], augment=augment)
            return TrainingSet(labels, images=images.subset(index),
                                preprocessing=self.preprocessing_, augment=augment)

        return make(train_index, augment), (None if valid_index is None else make(valid_index, None))

    def _split(self, y, seed):
        n_valid = int(np.ceil(self.validation_fraction * len(y)))
        n_classes = len(np.unique(y))
        if n_valid < n_classes or len(y) - n_valid < n_classes or np.bincount(y).min() < 2:
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of "
                f"{len(y)} samples ({n_valid}), which cannot hold every one of the "
                f"{n_classes} classes with each class also in training. Use more samples "
                "(at least 2 per class), a larger validation_fraction, or early_stopping=False."
            )
        return train_test_split(np.arange(len(y)), test_size=n_valid, stratify=y,
                                random_state=seed)

    def _augmentation(self):
        if self.augment is None:
            return None
        if self.augment == "light":
            return light_augmentation(self.preprocessing_.input_size)
        return self.augment

    def _skorch_net(self, y_train, device):
        return training_net(
            self._model, criterion=nn.CrossEntropyLoss,
            weight=self._class_weights(y_train.numpy()),
            lr=self.lr,
            block_rates=block_learning_rates(self.n_blocks_, self.n_frozen_, self.lr,
                                             self.layer_lr_decay),
            optimizer=self.optimizer, weight_decay=self.weight_decay,
            max_epochs=self.max_epochs, batch_size=self.batch_size, n_train=len(y_train),
            early_stopping=self.early_stopping, patience=self.patience,
            checkpoint=self.checkpoint, validation=self.early_stopping,
            verbose=self.verbose, device=device)

    def _class_weights(self, y_train):
        if self.class_weight is None:
            return None
        classes = np.arange(len(self.classes_))
        if self.class_weight == "balanced":
            present = np.unique(y_train)
            weights = np.ones(len(classes))
            weights[present] = compute_class_weight("balanced", classes=present, y=y_train)
        else:
            unknown = set(self.class_weight) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(
                    f"class_weight names classes {sorted(unknown, key=str)} that are not in y "
                    f"(classes: {self.classes_.tolist()})."
                )
            weights = np.array([self.class_weight.get(c, 1.0) for c in self.classes_])
        return torch.as_tensor(weights, dtype=torch.float32)

    def _forget_training_data(self):
        """Drop what only training needed, so the fitted model pickles small."""
        self.net_.forget_training_data()
        self.__dict__.pop("_model", None)

