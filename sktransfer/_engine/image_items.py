"""One image of a list: a file path, a PIL image or an array, checked, decoded and keyed.

Files are only checked to exist when the list is read; :func:`decode_item` opens one
when its batch is needed, and :func:`item_key` names it for the per-image cache.
"""

import os

import joblib
import numpy as np
from PIL import Image, UnidentifiedImageError

#: An image has 1 (gray), 3 (RGB) or 4 (RGBA) channels.
CHANNEL_COUNTS = (1, 3, 4)


def check_items(items):
    if len(items) == 0:
        raise ValueError("X is empty: found 0 images, at least 1 is required.")
    missing = []
    for index, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                missing.append(os.fspath(item))
        elif not isinstance(item, (Image.Image, np.ndarray)):
            raise TypeError(
                f"X[{index}] is a {type(item).__name__}; each image must be a file path, "
                "a PIL image or a numpy array."
            )
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(
            f"{len(missing)} image file(s) not found: {shown}{more}. Check the paths "
            "(relative paths are read from the current directory "
            f"{os.getcwd()!r})."
        )
    return list(items)


def decode_item(item, index):
    """One list item as an (H, W, C) array."""
    if isinstance(item, Image.Image):
        return _pil_to_array(item)
    if isinstance(item, np.ndarray):
        return _check_item_array(item, index)
    path = os.fspath(item)
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_array(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {path!r} (X[{index}]).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as error:
        raise ValueError(
            f"Cannot read image file {path!r} (X[{index}]): {error}. The file is not a "
            "complete image that PIL can open (JPEG, PNG, ...): replace it or remove it from X."
        ) from None


def _pil_to_array(image):
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16)[..., np.newaxis]
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P"
                              else "RGB")
    array = np.asarray(image)
    return array[..., np.newaxis] if array.ndim == 2 else array


def _check_item_array(array, index):
    if array.dtype.kind not in "fiub":
        raise TypeError(f"X[{index}] has dtype {array.dtype}; image arrays must be numeric.")
    if array.ndim == 2:
        array = array[..., np.newaxis]
    elif array.ndim == 3 and array.shape[-1] not in CHANNEL_COUNTS:
        if array.shape[0] not in CHANNEL_COUNTS:
            raise ValueError(
                f"X[{index}] has shape {array.shape}; an image array needs 1, 3 or 4 "
                "channels, first or last: (H, W), (H, W, C) or (C, H, W)."
            )
        array = array.transpose(1, 2, 0)
    elif array.ndim != 3:
        raise ValueError(
            f"X[{index}] has {array.ndim} dimensions; an image is (H, W), (H, W, C) or (C, H, W)."
        )
    if 0 in array.shape:
        raise ValueError(f"X[{index}] is a zero-size image (shape {array.shape}).")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"X[{index}] contains NaN or infinity; images need finite pixels.")
    return array


def item_key(item):
    if isinstance(item, Image.Image):
        return "pil:" + joblib.hash((item.mode, item.size, item.tobytes()))
    if isinstance(item, np.ndarray):
        return "array:" + joblib.hash(item)
    stat = os.stat(item)
    return f"path:{os.path.abspath(item)}:{stat.st_size}:{stat.st_mtime_ns}"
