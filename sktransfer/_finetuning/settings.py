"""The training parameters that every fine-tuning estimator takes: documented and
constrained once here, as ``NETWORK_PARAMETER_DOCS`` does for the network's."""

import os
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

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
    "weight_decay": """weight_decay : float, default=1e-4
        Weight decay of the optimizer (decoupled, for AdamW).""",
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
    "patience": """patience : int, default=3
        Epochs without improvement of the validation loss before early stopping.""",
    "validation_fraction": """validation_fraction : float, default=0.15
        Fraction of the training data held out for early stopping.""",
    "class_weight": """class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss (single-label ``y``).""",
    "threshold": """threshold : float, default=0.5
        Multi-label ``y`` only: ``predict`` sets a label where its probability is at
        least this.""",
    # a placeholder of its own: training takes fewer precisions than NETWORK_PARAMETER_DOCS'
    "training_precision": """precision : {"fp32", "bf16"}, default="fp32"
        "bf16" trains and predicts in bfloat16 autocast, where it is fast: on recent
        GPUs and on CPUs with native bf16 (AVX-512 BF16 or AMX); on a CPU without it
        it warns and runs in fp32. The loss and the weights stay in float32. ("fp16"
        would need loss scaling: not offered for training.)""",
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

#: scikit-learn constraints of the training parameters, checked in ``fit``.
TRAINING_PARAMETER_CONSTRAINTS = {
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
