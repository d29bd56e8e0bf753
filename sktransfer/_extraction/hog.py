"""The classical hand-made image features: histograms of oriented gradients (HOG)."""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from sktransfer._extraction.pixels import PixelFeatures


class HOGFeatures(PixelFeatures):
    """Histograms of oriented gradients (Dalal and Triggs) of resized images.

    Each image is resized (and made grayscale) as :class:`PixelFeatures` does, then
    described by scikit-image's :func:`skimage.feature.hog` with the parameters of the
    same names: the classical pipeline that transfer learning displaced, HOG + a linear
    or RBF SVM. Takes every image input that :class:`CNNFeatureExtractor` takes.

    Parameters
    ----------
    size : int or (int, int), default=64
        Images are resized to ``size x size`` (or ``(height, width)``) before HOG.
    orientations : int, default=9
        Histogram bins of gradient orientation (as in ``skimage.feature.hog``).
    pixels_per_cell : (int, int), default=(8, 8)
        Size of a cell, in pixels of the resized image.
    cells_per_block : (int, int), default=(3, 3)
        Cells per normalization block; the image must hold at least one block.
    block_norm : {"L2-Hys", "L1", "L1-sqrt", "L2"}, default="L2-Hys"
        Normalization of each block (as in ``skimage.feature.hog``).
    transform_sqrt : bool, default=False
        Power-law compression (square root) of the image before the gradients.
    grayscale : bool, default=True
        HOG of the luminance; False takes, at each pixel, the gradient of the channel
        where it is strongest (``channel_axis=-1``), as Dalal and Triggs did.
    image_shape : tuple of int, default=None
        Shape ``(H, W)`` or ``(H, W, C)`` of the rows of a 2-D ``X``.
    interpolation : {"bilinear", "bicubic", "nearest"}, default="bilinear"
        Resampling of the resize, as in :class:`PixelFeatures`.
    batch_size : int, default=256
        Images resized at once.

    Attributes
    ----------
    preprocessing_ : Preprocessing
        Output size, channels and interpolation applied to every image.
    n_features_in_ : int
        Columns of ``X`` during fit, when ``X`` was a 2-D array.
    grid_ : tuple of int
        ``(blocks down, blocks across, cells_per_block..., orientations)``: the shape
        that each row of the output flattens.

    See Also
    --------
    PixelFeatures : The resized pixels themselves.
    CNNFeatureExtractor : Features of a pretrained network.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import HOGFeatures
    >>> images = np.random.default_rng(0).random((2, 32, 32))
    >>> HOGFeatures(size=32, cells_per_block=(2, 2)).fit_transform(images).shape
    (2, 324)
    """

    _parameter_constraints = {
        **PixelFeatures._parameter_constraints,
        "orientations": [Interval(Integral, 1, None, closed="left")],
        "pixels_per_cell": [tuple, list],
        "cells_per_block": [tuple, list],
        "block_norm": [StrOptions({"L2-Hys", "L1", "L1-sqrt", "L2"})],
        "transform_sqrt": ["boolean"],
    }

    def __init__(self, size=64, *, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3),
                 block_norm="L2-Hys", transform_sqrt=False, grayscale=True, image_shape=None,
                 interpolation="bilinear", batch_size=256):
        super().__init__(size, grayscale=grayscale, image_shape=image_shape,
                         interpolation=interpolation, batch_size=batch_size)
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.transform_sqrt = transform_sqrt

    def fit(self, X, y=None):
        """Check ``X``, and that the resized image holds at least one HOG block.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : None
            Ignored.

        Returns
        -------
        HOGFeatures
            The fitted transformer (``self``).

        Raises
        ------
        ValueError
            When ``size`` is too small for ``pixels_per_cell`` x ``cells_per_block``.
        """
        super().fit(X, y)
        cell, block = _pair(self.pixels_per_cell, "pixels_per_cell"), _pair(
            self.cells_per_block, "cells_per_block")
        cells = [s // c for s, c in zip(self.preprocessing_.input_size, cell)]
        if cells[0] < block[0] or cells[1] < block[1]:
            raise ValueError(
                f"size={self.size!r} gives {cells[0]}x{cells[1]} cells of {cell[0]}x{cell[1]} "
                f"pixels, fewer than one block of cells_per_block={block}. Use a larger size "
                "or smaller pixels_per_cell or cells_per_block.")
        self.grid_ = (cells[0] - block[0] + 1, cells[1] - block[1] + 1, *block,
                      self.orientations)
        return self

    def transform(self, X):
        """Compute the HOG vector of each image.

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_images, n_features), float32
            One row per image; ``n_features`` is the product of ``grid_``.
        """
        from skimage.feature import hog

        check_is_fitted(self)
        height, width = self.preprocessing_.input_size
        channels = self.preprocessing_.channels
        pixels = self._pixels(X).reshape(-1, channels, height, width)
        options = dict(orientations=self.orientations,
                       pixels_per_cell=_pair(self.pixels_per_cell, "pixels_per_cell"),
                       cells_per_block=_pair(self.cells_per_block, "cells_per_block"),
                       block_norm=self.block_norm, transform_sqrt=self.transform_sqrt,
                       feature_vector=True)
        out = np.empty((len(pixels), int(np.prod(self.grid_))), dtype=np.float32)
        for i, image in enumerate(pixels):
            if channels == 1:
                out[i] = hog(image[0], **options)
            else:
                out[i] = hog(np.moveaxis(image, 0, -1), channel_axis=-1, **options)
        return out

    def get_feature_names_out(self, input_features=None):
        """Get the names ``hog_<block row>_<block col>_<cell row>_<cell col>_<orientation>``.

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
        return np.asarray(["hog_" + "_".join(map(str, index))
                           for index in np.ndindex(*self.grid_)], dtype=object)

    def _get_safe_state(self):
        description, tensors = super()._get_safe_state()
        return {**description, "grid": list(self.grid_)}, tensors

    def _set_safe_state(self, description, tensors):
        super()._set_safe_state(description, tensors)
        self.grid_ = tuple(description["grid"])


def _pair(value, name):
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, Integral) and v >= 1 for v in pair):
        raise ValueError(f"{name}={value!r}: give two positive integers (rows, columns).")
    return pair
