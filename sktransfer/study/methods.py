"""The study's methods: one row each, a named factory of the estimator it cross-validates.

A :class:`Method` makes its estimator either once (``make()``) or per outer fold
(``make_for_fold(y_train)``) where its settings depend on the training labels, as
early stopping's held-out fraction does. No method reads another's results.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer._extraction.cnn import CNNFeatureExtractor
from sktransfer._extraction.hog import HOGFeatures
from sktransfer._extraction.pixels import PixelFeatures
from sktransfer._training.transfer_net import resolve_freeze
from sktransfer.study.backbones import feature_block, freeze_depth
from sktransfer.study.layer_choice import ChosenLayerProbe
from sktransfer.study.results import CHOSEN_BY_CV

#: Training from random weights uses batches small enough for this many steps per epoch...
MIN_STEPS_PER_EPOCH = 10
#: ...but never smaller than this (BatchNorm's batch statistics get too noisy).
MIN_SCRATCH_BATCH = 8
CHOSEN_DEPTH_METHOD = "fine-tune, depth chosen by inner CV"


@dataclass(frozen=True)
class Method:
    """One row of the study: its name, and how to make and read its estimator.

    Exactly one of ``make()`` and ``make_for_fold(y_train)`` gives the unfitted
    estimator. With ``on_rows`` it is fitted on row indices (into features shared by
    the rows; ``shared_seconds()`` is their cost per image). ``read_fitted(estimator)``
    says what a fitted estimator chose and whether it stopped early.
    """

    kind: str
    name: str
    make: Callable | None = None
    make_for_fold: Callable | None = None
    backbone: str | None = None
    freeze: object = None
    frozen_blocks: int | None = None
    on_rows: bool = False
    read_fitted: Callable | None = None
    shared_seconds: Callable | None = None


def study_methods(plan, task, backbones, n_outputs, memory, shared):
    """The study's methods, in the order of the report; invalid settings raise here."""
    methods = []
    if "classical" in plan.kinds:
        methods += classical_methods(task, plan.pixel_size, n_outputs)
    for backbone in backbones:
        if "features" in plan.kinds:
            methods += feature_methods(plan, task, backbone, memory, shared)
        if "finetune" in plan.kinds:
            methods += finetune_methods(plan, task, backbone, memory)
    if "scratch" in plan.kinds:
        training = _training(plan, backbones[0], memory)
        methods.append(Method("scratch", "train from random weights",
                              make_for_fold=partial(scratch_network, task, training),
                              backbone=backbones[0].label, freeze=0, frozen_blocks=0,
                              read_fitted=_stopping_of))
    return methods


def classical_methods(task, pixel_size, n_outputs):
    """Raw pixels with the linear and the kernel model, and HOG with the kernel model."""
    linear, kernel = task.model_name("linear"), task.model_name("kernel")
    # Dalal and Triggs' cells of 8x8 pixels in blocks of 2x2, on images twice the
    # pixel rows' size (a 64 px image holds 7x7 blocks; 32 px, 3x3; 16 px at least).
    hog = partial(HOGFeatures, max(16, 2 * pixel_size), cells_per_block=(2, 2))
    return [
        Method("classical", f"pixels + {linear}",
               make=partial(standardized, partial(PixelFeatures, pixel_size), task.linear_model)),
        Method("classical", f"pixels + {kernel}",
               make=partial(standardized, partial(PixelFeatures, pixel_size),
                            partial(task.kernel_model, n_outputs))),
        Method("classical", f"hog + {kernel}",
               make=partial(standardized, hog, partial(task.kernel_model, n_outputs))),
    ]


def standardized(make_features, make_model):
    """Features, standardized, into a model: the pipeline of every non-network row."""
    return make_pipeline(make_features(), StandardScaler(), make_model())


def feature_methods(plan, task, backbone, memory, shared):
    """A linear model on each fixed feature layer, and on the layer an inner CV chooses."""
    model = task.model_name("linear")
    names = [block.name for block in backbone.blocks]
    extractor = dict(backbone=backbone.name, weights=backbone.weights,
                     image_size=plan.image_size, device=plan.device, memory=memory,
                     progress=False)
    methods = [Method("features", feature_method_name(names[layer], model),
                      make=partial(standardized, partial(CNNFeatureExtractor, **extractor,
                                                         layer=layer), task.linear_model),
                      backbone=backbone.label)
               for layer in [feature_block(layer, backbone) for layer in plan.feature_layers]]
    if plan.inner_splits:
        methods.append(Method(
            "features", chosen_layer_method(model), backbone=backbone.label, on_rows=True,
            make=partial(chosen_layer_probe, shared, backbone, task, plan),
            read_fitted=_layer_of,
            shared_seconds=partial(shared.seconds_per_image, backbone)))
    return methods


def chosen_layer_probe(shared, backbone, task, plan):
    """The probe that chooses its layer, on the backbone's shared block features."""
    return ChosenLayerProbe(shared.of(backbone), task=task, inner_splits=plan.inner_splits,
                            random_state=plan.random_state)


def finetune_methods(plan, task, backbone, memory):
    """Fine-tuning at each fixed depth, and at the depth an inner CV chooses."""
    training = _training(plan, backbone, memory)
    n_blocks = len(backbone.blocks)
    depths = [freeze_depth(freeze, backbone) for freeze in plan.freeze]
    methods = [Method("finetune", "fine-tune",
                      make_for_fold=partial(fixed_depth_network, task, training, depth),
                      backbone=backbone.label, freeze=depth,
                      frozen_blocks=resolve_freeze(depth, n_blocks), read_fitted=_stopping_of)
               for depth in depths]
    if len(depths) > 1 and plan.inner_splits and plan.choose_depth:
        methods.append(Method(
            "finetune", CHOSEN_DEPTH_METHOD, backbone=backbone.label, freeze=CHOSEN_BY_CV,
            make_for_fold=partial(depth_search, task, training, depths, n_blocks,
                                  plan.inner_splits),
            read_fitted=_depth_of))
    return methods


def fixed_depth_network(task, training, depth, y_train):
    """The network fine-tuned at ``depth``, stopping early as ``y_train`` allows."""
    return task.network(**training, freeze=depth, **task.early_stopping(y_train))


def depth_search(task, training, depths, n_blocks, inner_splits, y_train):
    """The inner search that chooses a depth on the training part and refits it there.

    With too few labels for 2 inner folds: the deepest freeze, as with few labels.
    """
    inner = task.inner_splitter(y_train, inner_splits, training["random_state"])
    if inner is None:
        deepest = max(depths, key=lambda depth: resolve_freeze(depth, n_blocks))
        return fixed_depth_network(task, training, deepest, y_train)
    # Early stopping as each inner fit's training part will need it.
    inner_part = y_train[next(inner.split(np.zeros(len(y_train)), y_train))[0]]
    return task.depth_search(depths, inner, **training, **task.early_stopping(inner_part))


def scratch_network(task, training, y_train):
    """The network trained from random weights on ``y_train`` (see :func:`from_scratch`)."""
    return task.network(**from_scratch(training, y_train))


def _stopping_of(network):
    return {"early_stopping": network.early_stopping_}


def _layer_of(probe):
    return {"chosen": probe.layer_}


def _depth_of(estimator):
    """The depth a fitted search (or its fallback network) chose, and its early stopping."""
    if hasattr(estimator, "freeze_"):  # FineTuneClassifierCV
        return {"chosen": estimator.freeze_, **_stopping_of(estimator.best_estimator_)}
    if hasattr(estimator, "best_params_"):  # GridSearchCV
        return {"chosen": estimator.best_params_["freeze"],
                **_stopping_of(estimator.best_estimator_)}
    return {"chosen": estimator.freeze, **_stopping_of(estimator)}  # too few labels to search


def _training(plan, backbone, memory):
    return dict(backbone=backbone.name, weights=backbone.weights, image_size=plan.image_size,
                device=plan.device, memory=memory, progress=False, max_epochs=plan.max_epochs,
                batch_size=plan.batch_size, random_state=plan.random_state)


def chosen_layer_method(model="logistic regression"):
    """The name of the row whose feature layer an inner CV chooses."""
    return f"frozen features, layer chosen by inner CV + {model}"


def feature_method_name(block, model="logistic regression"):
    """The frozen-features method's name: which block's pretrained output it uses."""
    return f"frozen features of block {block} + {model}"


def from_scratch(training, y_train):
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
