"""The classical baseline: raw pixels, resized and flattened, with the same image input."""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from sktransfer._engine.images import check_images
from sktransfer._engine.preprocessing import Preprocessing, as_size_pair


class PixelFeatures(TransformerMixin, BaseEstimator):
    """Raw pixels as features: resize, optionally make grayscale, flatten.

    Takes every image input that :class:`CNNFeatureExtractor` takes, so both can
    run in one ``cross_validate`` on the same ``X``.

    Parameters
    ----------
    size : int or (int, int), default=32
        Images are resized to ``size x size`` (or ``(height, width)``).
    grayscale : bool, default=False
        Convert to one luminance channel; otherwise 3 channels (gray replicated).
    image_shape : tuple of int, default=None
        Shape ``(H, W)`` or ``(H, W, C)`` of the rows of a 2-D ``X``; ``None`` infers it.
    interpolation : {"bilinear", "bicubic", "nearest"}, default="bilinear"
        Resampling of the resize (antialiased when downsampling).
    batch_size : int, default=256
        Images resized at once.

    Attributes
    ----------
    preprocessing_ : Preprocessing
        Output size, channels and interpolation applied to every image.
    n_features_in_ : int
        Columns of ``X`` during fit, when ``X`` was a 2-D array.

    See Also
    --------
    HOGFeatures : Histograms of oriented gradients of the same resized images.
    CNNFeatureExtractor : Features of a pretrained network.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PixelFeatures
    >>> images = np.zeros((2, 8, 8), dtype=np.uint8)
    >>> PixelFeatures(size=4, grayscale=True).fit_transform(images).shape
    (2, 16)
    """

    _parameter_constraints = {
        "size": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "grayscale": ["boolean"],
        "image_shape": [tuple, list, None],
        "interpolation": [StrOptions({"bilinear", "bicubic", "nearest"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, size=32, *, grayscale=False, image_shape=None,
                 interpolation="bilinear", batch_size=256):
        self.size = size
        self.grayscale = grayscale
        self.image_shape = image_shape
        self.interpolation = interpolation
        self.batch_size = batch_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check ``X`` and fix the output shape.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : None
            Ignored.

        Returns
        -------
        PixelFeatures
            The fitted transformer (``self``).
        """
        check_images(self, X, reset=True, image_shape=self.image_shape)
        self.preprocessing_ = Preprocessing(
            input_size=as_size_pair(self.size, "size"),
            interpolation=self.interpolation,
            channels=1 if self.grayscale else 3,
        )
        return self

    def transform(self, X):
        """Resize each image and flatten its pixels, in [0, 1], channel by channel.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_images, channels * height * width), float32
            One row of pixels per image.
        """
        return self._pixels(X)

    def _pixels(self, X):
        """The transform's work, unwrapped by ``set_output`` (subclasses build on it)."""
        check_is_fitted(self)
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        height, width = self.preprocessing_.input_size
        pixels = np.empty((len(images), self.preprocessing_.channels * height * width),
                          dtype=np.float32)
        for start, batch in images.batches(self.batch_size, self.preprocessing_):
            pixels[start:start + len(batch)] = batch.flatten(1).numpy()
        return pixels

    def get_feature_names_out(self, input_features=None):
        """Get the names ``pixel_<channel>_<row>_<col>`` of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        ndarray of str objects
            One name per output column.
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)  # validates only
        height, width = self.preprocessing_.input_size
        return np.asarray(
            [f"pixel_{c}_{r}_{col}" for c in range(self.preprocessing_.channels)
             for r in range(height) for col in range(width)],
            dtype=object,
        )

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted state, for sktransfer.save."""
        return {"preprocessing": self.preprocessing_.to_json()}, {}

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        self.preprocessing_ = Preprocessing.from_json(description["preprocessing"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
