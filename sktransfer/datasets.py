"""Image data sets: a folder of class sub-folders, and the built-in digits (offline)."""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["list_images", "load_data", "load_digits_images", "load_image_folder"]


def _image_extensions():
    Image.init()
    return {extension.lower() for extension in Image.registered_extensions()}


def load_image_folder(path, *, check_files=True):
    """Image paths and labels from a folder of class sub-folders.

    The layout torchvision's ``ImageFolder`` uses: ``path/<class>/<image>``. Files
    whose extension PIL does not know, and hidden files and folders, are skipped.

    Parameters
    ----------
    path : str or PathLike
        The folder holding one sub-folder per class.
    check_files : bool, default=True
        Open each image's header now, so an unreadable file is named at once rather
        than halfway through training.

    Returns
    -------
    X : ndarray of str, shape (n_images,)
        Image paths, sorted by class, then file name.
    y : ndarray of str, shape (n_images,)
        Class (sub-folder) names.

    Examples
    --------
    >>> from sktransfer.datasets import load_image_folder
    >>> X, y = load_image_folder("photos")  # doctest: +SKIP
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Image folder not found: '{root}'.")
    if not root.is_dir():
        raise ValueError(
            f"'{root}' is a file, not a folder. Give a folder with one sub-folder of "
            "images per class (path/<class>/<image>), or an .npz file with arrays X and y."
        )
    extensions = _image_extensions()
    X, y = [], []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in classes:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in extensions and not file.name.startswith("."):
                X.append(str(file))
                y.append(folder.name)
    if not X:
        raise ValueError(
            f"No images found in '{root}'. Expected one sub-folder per class holding "
            "image files (path/<class>/<image>.jpg)."
        )
    found = sorted(set(y))
    if len(found) < 2:
        raise ValueError(
            f"'{root}' holds images of only 1 class ({found[0]!r}); a classification "
            "study needs at least 2 class sub-folders."
        )
    if check_files:
        _check_readable(X)
    return np.asarray(X), np.asarray(y)


def _check_readable(paths):
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - the header is parsed on open
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            bad.append(f"'{path}' ({type(error).__name__})")
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{len(bad)} file(s) are not readable images: {shown}. "
                         "Replace or remove them.")


def load_digits_images():
    """scikit-learn's 1,797 handwritten digits as 8x8 grayscale images in [0, 1].

    Returns
    -------
    X : ndarray of shape (1797, 8, 8), float32
    y : ndarray of shape (1797,), int
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


def load_data(data=None):
    """Images and labels from a folder, an ``.npz`` file with ``X`` and ``y``, or the digits.

    Parameters
    ----------
    data : str, PathLike or None
        ``None`` loads the built-in digits.

    Returns
    -------
    X, y
    """
    if data is None:
        return load_digits_images()
    path = Path(data)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"Data file not found: '{path}'.")
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"X", "y"} - set(arrays.files)
            if missing:
                raise ValueError(
                    f"'{path}' lacks the array(s) {sorted(missing)}; an .npz data file "
                    f"holds images X and labels y (found {arrays.files})."
                )
            return arrays["X"], arrays["y"]
    return load_image_folder(os.fspath(path))


def list_images(data):
    """Unlabelled images to predict on, with a name for each.

    Parameters
    ----------
    data : str or PathLike
        An image file, a folder (searched recursively), or an ``.npz`` with array ``X``.

    Returns
    -------
    X : images
    names : list of str
        The paths, or ``"0"``, ``"1"``, ... for the rows of an ``.npz``.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"Not found: '{path}'.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            if "X" not in arrays.files:
                raise ValueError(f"'{path}' has no array X (found {arrays.files}).")
            X = arrays["X"]
        return X, [str(i) for i in range(len(X))]
    if path.is_file():
        return [str(path)], [str(path)]
    extensions = _image_extensions()
    files = [str(f) for f in sorted(path.rglob("*"))
             if f.is_file() and f.suffix.lower() in extensions and not f.name.startswith(".")]
    if not files:
        raise ValueError(f"No image files found in '{path}'.")
    return files, files
