"""Feature extraction: a pretrained network cut at a block, pooled, as a transformer."""

import copy
import os
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from ._backbones import resolve_backbone, weights_digest
from ._cache import cached_rows, check_cache_folder
from ._device import PRECISIONS, autocast, network_errors, resolve_device, resolve_precision
from ._images import check_images
from ._preprocessing import Preprocessing

POOLINGS = ("avg", "max", "avgmax")

#: Parameters that every estimator running a network shares, checked in ``fit``.
NETWORK_PARAMETER_CONSTRAINTS = {
    "backbone": [str, nn.Module],
    "weights": "no_validation",  # checked where the backbone is resolved
    "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
    "image_shape": [tuple, list, None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "device": [str, torch.device],
    "progress": [StrOptions({"auto"}), "boolean"],
    "memory": [None, str, os.PathLike, HasMethods(["cache"])],
    "precision": [StrOptions(set(PRECISIONS))],
}


#: Images per inference batch at 224 px. Measured on a 2-core AVX-512 CPU (benchmarks/):
#: 8 ran 1.3-3x faster than 64 (the activations stay in cache); smaller images get
#: proportionally larger batches.
PIXELS_PER_BATCH = 8 * 224 * 224


def inference_batch_size(batch_size, input_size):
    """``batch_size``, or for "auto" the batch holding about 8 images of 224 x 224 pixels."""
    if batch_size != "auto":
        return batch_size
    return max(1, min(256, round(PIXELS_PER_BATCH / (input_size[0] * input_size[1]))))


def pool_features(feature_map, pooling):
    """Pool a block's output into one row per image, or flatten it (``pooling=None``).

    A map ``(n, C, H, W)`` is pooled over its positions to ``(n, C)`` (``2C`` for
    "avgmax"). A token sequence ``(n, tokens, dim)`` (vision transformers) is summarized
    by its first token, the class token, as the network's own head reads it: ``(n, dim)``
    for "avg"; "max" and "avgmax" pool maps only.
    """
    if feature_map.ndim == 2:
        return feature_map
    if pooling is None:
        return feature_map.flatten(1)
    if feature_map.ndim == 3:
        if pooling != "avg":
            raise ValueError(
                f"pooling={pooling!r} pools feature maps, but this block outputs a token "
                f"sequence {tuple(feature_map.shape[1:])} (tokens, dim), summarized by its "
                "class token: use pooling='avg' (the class token) or None (every token)."
            )
        return feature_map[:, 0]
    flat = feature_map.flatten(2)
    if pooling == "avg":
        return flat.mean(2)
    if pooling == "max":
        return flat.amax(2)
    return torch.cat([flat.mean(2), flat.amax(2)], dim=1)


def inference_blocks(blocks, device, *, fold=True):
    """A frozen copy of ``blocks`` for inference, prepared once for ``device``.

    With ``fold``, each block is traced alone by torch.fx and conv + BatchNorm pairs are
    fused (in eval mode the same function, to float rounding: 25-60% faster on a CPU,
    benchmarks/). A block that fx cannot trace is kept as it is. The copy is in eval mode, without
    gradients, on ``device`` in the channels-last layout that oneDNN and cuDNN run
    fastest: inference never has to change it, so several threads can share it. The
    original blocks are not touched.
    """
    from torch.fx.experimental.optimization import fuse

    copies = []
    for block in copy.deepcopy(blocks).eval():
        try:
            block = fuse(block, inplace=True) if fold else block
        except Exception:  # noqa: BLE001 - fx fails in many ways on untraceable code
            pass
        copies.append(block)
    prepared = nn.Sequential(*copies).eval().requires_grad_(False)
    return prepared.to(device, memory_format=torch.channels_last)


class Inference(NamedTuple):
    """A fitted network prepared for inference: its blocks, device and precision."""

    blocks: nn.Sequential
    device: torch.device
    precision: str


def prepare_inference(blocks, device, precision, *, fold=True):
    """An :class:`Inference` of a copy of ``blocks`` for ``device`` (see inference_blocks)."""
    return Inference(inference_blocks(blocks, device, fold=fold), device,
                     resolve_precision(device, precision))


class InferenceCopyMixin:
    """Keeps ``_inference``, a fused copy of the fitted network, for transform.

    Made at fit and on unpickling (left out of pickles: it doubles their size), on the
    device that ``device`` resolves to, so that transform and predict only read it:
    a fitted estimator can be shared by threads (dask workers, web servers).
    """

    def _make_inference_blocks(self):
        try:
            device = resolve_device(self.device)
        except ValueError:  # unpickled where that device is missing: transform says so
            self._inference = None
            return
        self._inference = prepare_inference(self._fitted_blocks(), device, self.precision)

    def _inference_for_call(self):
        """The prepared :class:`Inference`, never modifying the estimator.

        After ``set_params(device=...)`` or ``set_params(precision=...)`` on a fitted
        estimator, a copy for the new setting is made for this call only.
        """
        device = resolve_device(self.device)
        prepared = self._inference
        if prepared is not None and prepared.device == device and (
            self.precision in (prepared.precision, "bf16")  # bf16 may have fallen back
        ):
            return prepared
        return prepare_inference(self._fitted_blocks(), device, self.precision)

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be the live __dict__
        state.pop("_inference", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.__sklearn_is_fitted__():
            self._make_inference_blocks()


def run_blocks(blocks, batch, layers, pooling):
    """Run ``blocks`` up to the highest of ``layers``; pool and join their outputs in order."""
    outputs = {}
    top = max(layers)
    for index in range(top + 1):
        batch = blocks[index](batch)
        if index in layers:
            outputs[index] = pool_features(batch, pooling)
    return torch.cat([outputs[index] for index in layers], dim=1)


def show_progress(progress, n_batches):
    """tqdm's ``disable`` for ``progress`` in {"auto", True, False}."""
    if progress == "auto":
        return None if n_batches >= 10 else True  # None: shown only on a terminal
    return not progress


def extract_features(inference, images, *, layers, pooling, preprocessing, batch_size,
                     progress="auto"):
    """Stream ``images`` through ``blocks`` into a preallocated float32 array.

    Memory beyond the output stays bounded by one batch: images are decoded (the next
    batch in a background thread while the network runs), preprocessed and run batch by
    batch under ``inference_mode``, in the channels-last layout that oneDNN and cuDNN
    convolutions run fastest in (same results as NCHW to float rounding).
    ``inference`` comes from :func:`prepare_inference`: it is only read, so threads
    may share it.

    Returns
    -------
    ndarray of shape (n_images, n_features), float32
    """
    blocks, device, precision = inference
    n_batches = -(-len(images) // batch_size)
    features = None
    with torch.inference_mode(), autocast(device, precision), network_errors(
        input_size=preprocessing.input_size, batch_size=batch_size
    ), tqdm(total=len(images), unit="img", desc="extracting features",
            disable=show_progress(progress, n_batches)) as bar:
        for start, batch in images.batches(batch_size, preprocessing):
            batch = batch.to(device, memory_format=torch.channels_last)
            pooled = run_blocks(blocks, batch, layers, pooling)
            if features is None:
                features = np.empty((len(images), pooled.shape[1]), dtype=np.float32)
            features[start:start + len(pooled)] = pooled.float().cpu().numpy()
            bar.update(len(pooled))
    return features


class CNNFeatureExtractor(InferenceCopyMixin, TransformerMixin, BaseEstimator):
    """Features of a pretrained CNN, cut at a block and pooled, as a transformer.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights embedded, works offline), any
        torchvision classification model name, ``"timm/<name>"``, or a module.
        See :func:`sktransfer.list_backbones`.
    weights : {"imagenet"}, str, path or None, default="imagenet"
        Pretrained weights; ``None`` for random initialization; a path to a local
        ``.pth``/``.pt``/``.safetensors`` state dict; a torchvision weights name.
    layer : int, str or list, default=-1
        Block to take features from: an index (negative counts from the top), a
        block name, or a list of them whose pooled features are concatenated.
        See :func:`sktransfer.backbone_blocks`.
    pooling : {"avg", "max", "avgmax"} or None, default="avg"
        Global pooling of each feature map; ``None`` flattens the map.
    image_size : int or (int, int), default=None
        Resize images to this size; ``None`` uses the weights' own input size.
    image_shape : tuple of int, default=None
        Shape ``(H, W)`` or ``(H, W, C)`` of the rows when ``X`` is a 2-D array of
        flattened images; ``None`` infers square images.
    batch_size : int or "auto", default="auto"
        Images per forward pass; "auto" holds about 8 images of 224 x 224 pixels (more
        for smaller images), which ran fastest in the benchmarks.
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA or MPS when present, else the CPU.
    progress : "auto" or bool, default="auto"
        Show a progress bar; ``"auto"`` shows one on long transforms in a terminal.
    memory : str, path or joblib.Memory, default=None
        Cache features per image, by content and the extractor's settings.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        "bf16" runs the network in bfloat16 autocast: about 2.5x faster on CPUs with
        AVX-512 bf16 or AMX, features within a few percent; "fp16" is for CUDA.

    Attributes
    ----------
    backbone_ : Backbone
        The loaded network, cut into blocks, with its preprocessing.
    layers_ : list of int
        Block indices features are taken from.
    preprocessing_ : Preprocessing
        Input size, mean, std and interpolation applied to every image.
    n_features_in_ : int
        Columns of ``X`` during fit, when ``X`` was a 2-D array.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import CNNFeatureExtractor
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> extractor = CNNFeatureExtractor(image_size=64).fit(images)
    >>> extractor.transform(images).shape
    (4, 1280)
    """

    _parameter_constraints = {
        **NETWORK_PARAMETER_CONSTRAINTS,
        "layer": [Integral, str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet", layer=-1,
                 pooling="avg", image_size=None, image_shape=None, batch_size="auto",
                 device="auto", progress="auto", memory=None, precision="fp32"):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.image_shape = image_shape
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.memory = memory
        self.precision = precision

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the network and check that it takes ``X``'s images.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : ignored

        Returns
        -------
        self : CNNFeatureExtractor
        """
        check_images(self, X, reset=True, image_shape=self.image_shape)
        resolve_precision(resolve_device(self.device), self.precision, warn=False)
        check_cache_folder(self.memory)
        self.backbone_ = resolve_backbone(self.backbone, self.weights)
        self.preprocessing_ = self.backbone_.preprocessing.with_size(self.image_size)
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        if len(layers) == 0:
            raise ValueError("layer is an empty list; give at least one block.")
        self.layers_ = [self.backbone_.block_index(layer) for layer in layers]
        self._feature_names_out = self._probe_feature_names()
        self._make_inference_blocks()
        return self

    def _fitted_blocks(self):
        return self.backbone_.blocks

    def __sklearn_is_fitted__(self):
        return hasattr(self, "backbone_")

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted state, for sktransfer.save."""
        return ({"preprocessing": self.preprocessing_.to_json(), "layers_": self.layers_},
                self.backbone_.blocks.state_dict())

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        self.backbone_ = resolve_backbone(self.backbone, weights=None)
        self.backbone_.blocks.load_state_dict(tensors)
        self.preprocessing_ = Preprocessing.from_json(description["preprocessing"])
        self.layers_ = description["layers_"]
        self._feature_names_out = self._probe_feature_names()
        self._make_inference_blocks()

    def transform(self, X):
        """Features of each image.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_images, n_features), float32
        """
        check_is_fitted(self)
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        inference = self._inference_for_call()

        def extract(subset):
            return extract_features(
                inference, subset, layers=self.layers_, pooling=self.pooling,
                preprocessing=self.preprocessing_,
                batch_size=inference_batch_size(self.batch_size, self.preprocessing_.input_size),
                progress=self.progress)

        if self.memory is None:
            return extract(images)
        setting = (weights_digest(self.backbone_.blocks), self.layers_, self.pooling,
                   self.preprocessing_, inference.precision)
        return cached_rows(images, extract, memory=self.memory, setting=setting)

    def get_feature_names_out(self, input_features=None):
        """Names ``<block>_<pooling><i>`` of the output columns."""
        check_is_fitted(self)
        return np.asarray(self._feature_names_out, dtype=object)

    @property
    def _n_features_out(self):
        return len(self._feature_names_out)

    def _probe_feature_names(self):
        """Output width of each layer, from one forward pass of a blank image."""
        blank = torch.zeros(1, self.preprocessing_.channels, *self.preprocessing_.input_size)
        names = []
        self.backbone_.blocks.eval()
        with torch.inference_mode(), network_errors(
            input_size=self.preprocessing_.input_size, batch_size=1
        ):
            for index in self.layers_:
                width = run_blocks(self.backbone_.blocks, blank, [index], self.pooling).shape[1]
                block = self.backbone_.block_names[index]
                if self.pooling == "avgmax":
                    names += [f"{block}_avg{i}" for i in range(width // 2)]
                    names += [f"{block}_max{i}" for i in range(width // 2)]
                else:
                    suffix = self.pooling or "map"
                    names += [f"{block}_{suffix}{i}" for i in range(width)]
        return names

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
