"""What every estimator that runs a network shares: parameters, checks, inference, files.

:class:`NetworkEstimator` holds the parameters every such estimator takes (declared and
documented once here), the checks of the runtime settings made at the start of ``fit``,
the BatchNorm-folded inference copy that transform and predict only read, the cached
transform skeleton, feature names, and the hooks that :func:`sktransfer.save` and
:func:`sktransfer.load` call.
"""

import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted
from torch import nn

from sktransfer._engine.cache import cached_rows, check_cache_folder
from sktransfer._engine.device import PRECISIONS, resolve_device, resolve_precision
from sktransfer._engine.images import check_images
from sktransfer._engine.inference import BACKENDS, prepare_inference, resolve_backend

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
    "backend": [StrOptions(set(BACKENDS))],
}

#: numpydoc entries of the shared parameters; class docstrings name them as {name}.
NETWORK_PARAMETER_DOCS = {
    "backbone": """backbone : str or torch.nn.Module, default="efficientnet_lite0"
        ``"efficientnet_lite0"`` (ImageNet weights embedded, works offline), any
        torchvision classification model name, ``"timm/<name>"``, or an
        ``nn.Sequential`` of blocks. See :func:`sktransfer.list_backbones`.""",
    "weights": """weights : {"imagenet"}, str, path or None, default="imagenet"
        Pretrained weights; ``None`` for a random (but always the same)
        initialization; a path to a local ``.pth``/``.pt``/``.safetensors`` state
        dict; a torchvision weights name such as ``"IMAGENET1K_V2"``.""",
    "image_size": """image_size : int or (int, int), default=None
        Resize images to this size; ``None`` uses the weights' own input size.""",
    "image_shape": """image_shape : tuple of int, default=None
        Shape ``(H, W)`` or ``(H, W, C)`` of the rows when ``X`` is a 2-D array of
        flattened images; ``None`` infers square images.""",
    "device": """device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA or MPS when present, else the CPU.""",
    "progress": """progress : "auto" or bool, default="auto"
        Progress bar of the feature streaming; ``"auto"`` shows one on long runs in a
        terminal.""",
    "precision": """precision : {"fp32", "bf16", "fp16"}, default="fp32"
        "bf16" runs in bfloat16 autocast: about 2-3x faster on CPUs with native bf16
        (AVX-512 BF16 or AMX) and on recent GPUs; on a CPU without it, where bf16
        is emulated 20x slower, it warns and runs in fp32. "fp16" is for CUDA.""",
    "backend": """backend : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the fitted network in transform and predict (and through frozen
        blocks in fit). "auto" is ONNX Runtime on the CPU in fp32 (2-3.4x faster than
        torch for efficientnet_lite0 on a 2-core AVX2 CPU: benchmarks/README.md) for
        jobs that repay its export (about 12 million input values: 80 images of
        224 px) and once the network is exported, and torch for smaller jobs, on
        GPUs and in bf16/fp16. ONNX Runtime runs the network exported once per
        process (about a second for a mobile network), the same features to float
        rounding; a network that cannot be exported runs on torch, with one
        ``OnnxFallbackWarning``. "onnxruntime" exports for any job: a service that
        predicts a few images at a time.""",
}


def with_parameter_docs(*tables):
    """Class decorator: put shared numpydoc entries in place of ``{name}`` lines.

    Shared parameters are documented once (``NETWORK_PARAMETER_DOCS`` and the
    training table) and every estimator's docstring names the ones it takes.
    """
    def fill(cls):
        doc = cls.__doc__
        for table in tables:
            for name, entry in table.items():
                doc = doc.replace("    {%s}\n" % name, "    " + entry + "\n")
        cls.__doc__ = doc
        return cls

    return fill


class NetworkEstimator(TransformerMixin, BaseEstimator):
    """Base of the estimators that run a network; not for direct use.

    Subclasses set in ``fit``: ``preprocessing_``, ``_feature_names_out``, and
    implement ``_fitted_blocks()`` (the network's blocks), ``_get_safe_state()`` and
    ``_set_safe_state()``; then call ``_prepare_inference()``.
    """

    _parameter_constraints = dict(NETWORK_PARAMETER_CONSTRAINTS)

    # -- checks at the start of fit ----------------------------------------------

    def _check_runtime(self, X, *, reset=True):
        """Images, device, precision and cache folder, checked before any work."""
        images = check_images(self, X, reset=reset, image_shape=self.image_shape)
        device = resolve_device(self.device)
        resolve_backend(self.backend, device, resolve_precision(device, self.precision,
                                                                warn=False))
        check_cache_folder(self.memory)
        return images, device

    # -- the inference copy ------------------------------------------------------

    def _prepare_inference(self, *, warn=True):
        """Prepare the fitted network for inference, once (at fit and on unpickling).

        On the device that ``device`` resolves to, so that transform and predict only
        read it: a fitted estimator can be shared by threads (dask workers, servers).
        """
        try:
            device = resolve_device(self.device)
        except ValueError:  # unpickled where that device is missing: transform says so
            self._inference = None
            return
        self._inference = prepare_inference(self._fitted_blocks(), device, self.precision,
                                            backend=self.backend, warn=warn)

    def _inference_for_call(self):
        """The prepared :class:`Inference`, never modifying the estimator.

        After ``set_params(device=...)`` or ``set_params(precision=...)`` on a fitted
        estimator, a copy for the new setting is made for this call only (refit to
        keep it); a new ``backend`` shares the prepared copy and its exports.
        """
        device = resolve_device(self.device)
        prepared = self._inference
        if (prepared is not None and prepared.device == device  # bf16 may fall back to fp32
                and resolve_precision(device, self.precision, warn=False) == prepared.precision):
            return prepared.with_backend(self.backend)
        return prepare_inference(self._fitted_blocks(), device, self.precision,
                                 backend=self.backend)

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be the live __dict__
        state.pop("_inference", None)  # rebuilt on unpickling: it doubles the size
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.__sklearn_is_fitted__():
            self._prepare_inference()

    # -- transform ---------------------------------------------------------------

    def _transform_images(self, X, extract, computation):
        """``extract(images)``, through the per-image cache when ``memory`` is set.

        ``computation()`` gives everything besides an image that determines its row; it is
        called only with a cache (it hashes the weights: not a cost for every predict).
        """
        check_is_fitted(self)
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        if self.memory is None:
            return extract(images)
        return cached_rows(images, extract, memory=self.memory, computation=computation())

    def get_feature_names_out(self, input_features=None):
        """Get the names of the columns of ``transform``: ``<block>_<pooling><i>``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in ``fit``; the output names do not
            depend on them.

        Returns
        -------
        ndarray of str objects
            One name per output column.
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)  # validates only
        return np.asarray(self._feature_names_out, dtype=object)

    @property
    def _n_features_out(self):
        return len(self._feature_names_out)

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return ``transform(X)``.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like, default=None
            Targets, for the estimators that learn from them.
        **fit_params : dict
            Passed on to ``fit`` (``sample_weight`` for the fine-tuners).

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
            ``transform(X)`` of the fitted estimator.
        """
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- safe files (sktransfer.save / sktransfer.load) ------------------------------

    def _get_safe_state(self):
        """(JSON-able description, dict of tensors) of the fitted state."""
        raise NotImplementedError

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave."""
        raise NotImplementedError


def feature_names(block_name, width, pooling):
    """Column names of one block's pooled features."""
    if pooling == "avgmax":
        return ([f"{block_name}_avg{i}" for i in range(width // 2)]
                + [f"{block_name}_max{i}" for i in range(width // 2)])
    return [f"{block_name}_{pooling or 'map'}{i}" for i in range(width)]
