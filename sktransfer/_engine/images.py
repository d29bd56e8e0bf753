"""Images in, one way: every accepted form of ``X`` becomes an :class:`ImageSet`.

Accepted forms are numpy arrays ``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)``
with C in {1, 3, 4}; 2-D arrays ``(n, n_pixels)`` of flattened images (read with
``image_shape``); lists of PIL images, of arrays of any sizes, or of file paths;
1-D arrays or pandas Series of paths, and one-column 2-D arrays or DataFrames of paths
(what a ``ColumnTransformer`` passes). Integer pixels are scaled from their type's
range, float pixels are taken to be in [0, 1]. An :class:`ImageSet` yields preprocessed
float batches, decoding files only when their batch is needed.
"""

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from math import isqrt
from numbers import Integral, Real

import numpy as np
import torch
from PIL import Image
from sklearn.utils.validation import check_array, validate_data

from sktransfer._engine.image_items import CHANNEL_COUNTS, check_items, decode_item, item_key
from sktransfer._engine.preprocessing import prepare_batch



class ImageSet:
    """A validated collection of images.

    Build it with :func:`read_images` (or :func:`check_images` inside an estimator).

    Parameters
    ----------
    array : ndarray of shape (n, H, W, C), optional
        Images of one size, channels last (a view of the user's data, never copied whole).
    items : list, optional
        Paths, PIL images or arrays, decoded one by one when their batch is needed.
    """

    def __init__(self, *, array=None, items=None):
        self._array = array
        self._items = items

    def __len__(self):
        return len(self._array) if self._array is not None else len(self._items)

    def load(self, indices):
        """Return the images at ``indices`` as float32 tensors in [0, 1], channels first.

        Returns a single tensor ``(n, C, H, W)`` when all images share a shape,
        else a list of ``(C, H, W)`` tensors.
        """
        if self._array is not None:
            chunk = self._array[indices]
            return _to_float_tensor(chunk).permute(0, 3, 1, 2)  # astype made the one copy
        images = [_to_float_tensor(decode_item(self._items[i], i)).permute(2, 0, 1)
                  for i in indices]
        if all(img.shape == images[0].shape for img in images):
            return torch.stack(images)
        return images

    def prepare(self, indices, preprocessing):
        """Load the images at ``indices`` and apply ``preprocessing`` as one batch."""
        loaded = self.load(indices)
        if isinstance(loaded, list):
            return torch.cat([prepare_batch(img[None], preprocessing) for img in loaded])
        return prepare_batch(loaded, preprocessing)

    @property
    def in_memory(self):
        """Whether the images are one array (else files or PIL images, decoded as read)."""
        return self._array is not None

    def batches(self, batch_size, preprocessing):
        """Yield ``(start, batch)`` pairs of preprocessed consecutive images.

        Files and PIL images are decoded one batch ahead in a
        background thread (PIL releases the GIL while decoding), so decoding overlaps
        the network's compute.
        """
        bounds = ((start, min(start + batch_size, len(self)))
                  for start in range(0, len(self), batch_size))
        if self._array is not None:
            for start, stop in bounds:
                yield start, self.prepare(slice(start, stop), preprocessing)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sktransfer-decode") as pool:
            current = next(bounds, None)
            pending = current and pool.submit(self.prepare, range(*current), preprocessing)
            while current is not None:
                batch = pending.result()
                following = next(bounds, None)
                if following is not None:
                    pending = pool.submit(self.prepare, range(*following), preprocessing)
                yield current[0], batch
                current = following

    def subset(self, indices):
        """The images at ``indices``, as a new ImageSet."""
        if self._array is not None:
            return ImageSet(array=self._array[np.asarray(indices, dtype=np.intp)])
        return ImageSet(items=[self._items[i] for i in indices])

    def item_keys(self):
        """A content digest per image, for caching: pixels, or file path, size and mtime."""
        if self._array is not None:
            prefix = f"{self._array.dtype}{self._array.shape[1:]}".encode()
            return [hashlib.sha1(prefix + np.ascontiguousarray(image).tobytes()).hexdigest()
                    for image in self._array]
        return [hashlib.sha1(item_key(item).encode()).hexdigest() for item in self._items]


def take_rows(X, index):
    """Rows of X in the form the user gave (arrays stay arrays, lists stay lists)."""
    if isinstance(X, np.ndarray):
        return X[index]
    if hasattr(X, "iloc"):
        return X.iloc[index]
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(index)]
    if hasattr(X, "__array__") and not isinstance(X, (list, tuple)):  # array-likes
        return np.asarray(X)[index]
    return [X[i] for i in index]


def check_images(estimator, X, *, reset, image_shape=None):
    """Validate ``X`` for ``estimator`` and return an :class:`ImageSet`.

    Tabular input (2-D numeric arrays, DataFrames) goes through scikit-learn's
    ``validate_data`` so that ``n_features_in_`` and ``feature_names_in_`` behave as in
    any scikit-learn estimator; every other form is read by :func:`read_images`.
    """
    if _is_tabular(X):
        numeric = not _is_column_of_paths(X)  # a column of paths keeps its feature name
        X = validate_data(estimator, X, reset=reset, dtype="numeric" if numeric else None)
        return read_images(X, image_shape=image_shape)
    if reset:
        for attribute in ("n_features_in_", "feature_names_in_"):
            if hasattr(estimator, attribute):
                delattr(estimator, attribute)
    return read_images(X, image_shape=image_shape)


def read_images(X, *, image_shape=None):
    """Turn any accepted image input into an :class:`ImageSet`.

    Parameters
    ----------
    X : array-like, list of PIL images / arrays / paths, or 1-D array of paths
        See the module docstring for the accepted forms.
    image_shape : tuple of int, default=None
        ``(H, W)``, ``(H, W, C)`` or, for channel-first rows such as CIFAR's on
        OpenML, ``(C, H, W)`` of the rows of a 2-D array (channels last when the
        last entry is 1, 3 or 4, else first). ``None`` reads a row whose length is a
        square (or 3 x a square) as a square image, warning when the row looks
        channel-first, and any other row as a 1-pixel-high strip, with a warning.

    Returns
    -------
    ImageSet
        The validated images; files are decoded batch by batch, when needed.
    """
    _check_image_shape(image_shape)
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            f"X must be a collection of images, got a single path {X!r}. Wrap it in a "
            "list ([path]), or load a folder of class sub-folders with "
            "sktransfer.datasets.load_image_folder."
        )
    if isinstance(X, Image.Image):
        raise TypeError("X must be a collection of images, got one PIL image. Wrap it in a list.")
    if hasattr(X, "iloc") and getattr(X, "ndim", 2) == 1:  # pandas Series of paths
        X = X.tolist()
    if _is_column_of_paths(X):
        X = np.asarray(X)[:, 0]
    if isinstance(X, np.ndarray) and X.dtype.kind in "USO" and X.ndim == 1:
        X = X.tolist()
    if isinstance(X, (list, tuple)) and not _is_tabular(X):
        return ImageSet(items=check_items(X))
    return ImageSet(array=_check_array_images(X, image_shape))


def _is_tabular(X):
    if hasattr(X, "iloc"):
        return getattr(X, "ndim", 1) == 2
    if isinstance(X, np.ndarray):
        return X.ndim == 2
    if isinstance(X, (list, tuple)) and len(X) > 0:
        first = X[0]
        return isinstance(first, (list, tuple)) or (
            isinstance(first, Real) and not isinstance(first, bool)
        )
    return False


def _is_column_of_paths(X):
    """A one-column 2-D array or DataFrame of file paths."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] != 1:
        return False
    first = X.iloc[0, 0] if hasattr(X, "iloc") else X[0, 0]
    return isinstance(first, (str, os.PathLike))


def _check_array_images(X, image_shape):
    X = check_array(
        X, allow_nd=True, dtype="numeric", ensure_min_samples=1, input_name="X"
    )
    _warn_if_float_pixels_look_8_bit(X)
    if X.ndim == 2:
        return _rows_as_images(X, image_shape)
    if X.ndim == 3:
        images = X[..., np.newaxis]
    elif X.ndim == 4:
        if X.shape[-1] in CHANNEL_COUNTS:
            images = X
        elif X.shape[1] in CHANNEL_COUNTS:
            images = X.transpose(0, 2, 3, 1)
        else:
            raise ValueError(
                f"X has shape {X.shape}, a 4-D array needs 1, 3 or 4 channels, in the "
                "last axis (n, H, W, C) or the second axis (n, C, H, W)."
            )
    else:
        raise ValueError(
            f"X has {X.ndim} dimensions (shape {X.shape}); expected (n, n_pixels), "
            "(n, H, W), (n, H, W, C) or (n, C, H, W)."
        )
    if 0 in images.shape[1:3]:
        raise ValueError(f"X holds zero-size images (shape {X.shape}); images need H, W >= 1.")
    return images


def _rows_as_images(X, image_shape):
    """The rows of a 2-D array as (n, H, W, C) images."""
    n_pixels = X.shape[1]
    if image_shape is not None:
        shape = tuple(image_shape)
        if np.prod(shape) != n_pixels:
            raise ValueError(
                f"X has {n_pixels} columns but image_shape={shape!r} needs "
                f"{np.prod(shape)}. Set image_shape to the shape of one image, "
                "or None to infer it.")
        if _is_channel_first(shape):
            return X.reshape(len(X), *shape).transpose(0, 2, 3, 1)
        return X.reshape(len(X), *shape[:2], shape[2] if len(shape) == 3 else 1)
    side = isqrt(n_pixels)
    if side * side == n_pixels:
        return X.reshape(len(X), side, side, 1)
    side = isqrt(n_pixels // 3)
    if n_pixels % 3 == 0 and side * side * 3 == n_pixels:
        images = X.reshape(len(X), side, side, 3)
        channel_first = X.reshape(len(X), 3, side, side).transpose(0, 2, 3, 1)
        # Read the wrong way, photo crops are rougher: measured ratios 0.46 for
        # channel-first rows, 6.3 for channel-last ones, 1.0 for noise.
        if _roughness(channel_first) < 0.7 * _roughness(images):
            warnings.warn(
                f"X has rows of {n_pixels} values, read as {side}x{side} RGB images with "
                "the channels last (H, W, C); they look channel-first (C, H, W), as "
                f"CIFAR is served by OpenML. Pass image_shape=(3, {side}, {side}) if they "
                f"are, or image_shape=({side}, {side}, 3) to silence this warning.",
                UserWarning, stacklevel=4)
        return images
    warnings.warn(
        f"X has rows of {n_pixels} values, not a square image: each row is read as an "
        f"image 1 pixel high and {n_pixels} wide. If the rows are flattened images, pass "
        "their shape as image_shape=(H, W, C), or (C, H, W) for channel-first rows.",
        UserWarning, stacklevel=4)
    return X.reshape(len(X), 1, n_pixels, 1)


def _is_channel_first(shape):
    return (len(shape) == 3 and shape[2] not in CHANNEL_COUNTS
            and shape[0] in CHANNEL_COUNTS)


def _roughness(images):
    """Mean absolute difference of vertically adjacent pixels of the first images."""
    sample = images[:64].astype(np.float32)
    return float(np.abs(np.diff(sample, axis=1)).mean())


def _warn_if_float_pixels_look_8_bit(X):
    if X.dtype.kind == "f" and X.size and X.max() > 1.5:
        warnings.warn(
            f"X holds float pixels up to {X.max():g}; float images are read as values in "
            "[0, 1], so these are out of range. If they are 0-255 values, divide X by 255 "
            "(or pass them as uint8).",
            UserWarning, stacklevel=4)


def _check_image_shape(image_shape):
    if image_shape is None:
        return
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) not in (2, 3)
        or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1
                   for s in image_shape)
    ):
        raise ValueError(
            f"image_shape must be (H, W) or (H, W, C) of positive ints, got {image_shape!r}."
        )
    if (len(image_shape) == 3 and image_shape[2] not in CHANNEL_COUNTS
            and image_shape[0] not in CHANNEL_COUNTS):
        raise ValueError(
            f"image_shape={tuple(image_shape)!r} has neither 1, 3 nor 4 channels, last "
            "(H, W, C) or first (C, H, W).")


def _to_float_tensor(array):
    """uint8 / uint16 / other ints scaled to [0, 1]; floats are taken as they are.

    Always a fresh float32 copy of one batch: the input may be read-only (memmap, PIL).
    Computed by numpy, in one thread: see :func:`sktransfer._engine.preprocessing.prepare_batch`.
    """
    if array.dtype.kind in "iu":
        scale = np.float32(65535.0 if array.dtype == np.uint16 else 255.0)
        return torch.from_numpy(np.divide(array, scale, dtype=np.float32))
    return torch.from_numpy(array.astype(np.float32))
