"""Feature extraction: a pretrained network cut at a block, pooled, as a transformer."""

from numbers import Integral

import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sktransfer._engine.backbones import resolve_backbone, weights_digest
from sktransfer._engine.estimator import (
    NETWORK_PARAMETER_DOCS,
    NetworkEstimator,
    feature_names,
    with_parameter_docs,
)
from sktransfer._engine.device import image_size_errors
from sktransfer._engine.inference import POOLINGS, run_blocks, stream_features
from sktransfer._engine.preprocessing import Preprocessing


@with_parameter_docs(NETWORK_PARAMETER_DOCS)
class CNNFeatureExtractor(NetworkEstimator):
    """Features of a pretrained CNN, cut at a block and pooled, as a transformer.

    Parameters
    ----------
    {backbone}
    {weights}
    layer : int, str or list, default=-1
        Block to take features from: an index (negative counts from the top), a
        block name, or a list of them whose pooled features are concatenated.
        See :func:`sktransfer.backbone_blocks`.
    pooling : {"avg", "max", "avgmax"} or None, default="avg"
        Global pooling of each feature map; ``None`` flattens the map. A vision
        transformer's blocks give token sequences: "avg" takes their class token.
    {image_size}
    {image_shape}
    batch_size : int or "auto", default="auto"
        Images per forward pass. "auto" holds about 8 images of 224 x 224 pixels
        (more for smaller images).
    {device}
    {progress}
    memory : str, path or joblib.Memory, default=None
        Cache features per image, by content and the extractor's settings.
    {precision}
    {backend}

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

    See Also
    --------
    FineTuneClassifier : Train the network's blocks for your classes instead.
    PixelFeatures : Raw pixels as features, the classical baseline.
    HOGFeatures : Histograms of oriented gradients, the hand-made features.
    probe_layers : Score every block's features, to choose ``layer``.

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
        **NetworkEstimator._parameter_constraints,
        "layer": [Integral, str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet", layer=-1,
                 pooling="avg", image_size=None, image_shape=None, batch_size="auto",
                 device="auto", progress="auto", memory=None, precision="fp32", backend="auto"):
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
        self.backend = backend

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the network and check that it takes ``X``'s images.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : None
            Ignored: the features do not depend on labels.

        Returns
        -------
        CNNFeatureExtractor
            The fitted extractor (``self``).
        """
        self._check_runtime(X)
        self.backbone_ = resolve_backbone(self.backbone, self.weights)
        self.preprocessing_ = self.backbone_.preprocessing.with_size(self.image_size)
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        if len(layers) == 0:
            raise ValueError("layer is an empty list; give at least one block.")
        self.layers_ = [self.backbone_.block_index(layer) for layer in layers]
        self._feature_names_out = self._measure_feature_names()
        self._prepare_inference()
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
        self._feature_names_out = self._measure_feature_names()
        self._prepare_inference()

    def transform(self, X):
        """Compute the pooled features of each image.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_images, n_features), float32
            One row per image: the chosen blocks' pooled features, side by side.
        """
        check_is_fitted(self)
        inference = self._inference_for_call()

        def extract(images):
            return stream_features(
                inference, images, layers=self.layers_, pooling=self.pooling,
                preprocessing=self.preprocessing_,
                batch_size=self.batch_size,
                progress=self.progress)

        def computation():
            return (weights_digest(self.backbone_.blocks), self.layers_, self.pooling,
                    self.preprocessing_, inference.precision)

        return self._transform_images(X, extract, computation)

    def _measure_feature_names(self):
        """Output width of each layer, from one forward pass of a blank image."""
        blank = torch.zeros(1, self.preprocessing_.channels, *self.preprocessing_.input_size)
        names = []
        self.backbone_.blocks.eval()
        with torch.inference_mode(), image_size_errors(self.preprocessing_.input_size):
            for index in self.layers_:
                width = run_blocks(self.backbone_.blocks, blank, [index], self.pooling).shape[1]
                names += feature_names(self.backbone_.block_names[index], width, self.pooling)
        return names
