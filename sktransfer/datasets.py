"""Image data sets: class folders, ``.npz`` arrays, CSV lists of images and targets, digits."""

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["check_image_files", "list_images", "load_csv", "load_data", "load_digits_images",
           "load_image_folder"]


def _image_extensions():
    Image.init()
    return {extension.lower() for extension in Image.registered_extensions()}


def load_image_folder(path, *, check_files=True, on_error="raise"):
    """Image paths and labels from a folder of class sub-folders.

    The layout torchvision's ``ImageFolder`` uses: ``path/<class>/<image>``. Files
    whose extension PIL does not know, and hidden files and folders, are skipped.

    Parameters
    ----------
    path : str or PathLike
        The folder holding one sub-folder per class.
    check_files : bool, default=True
        Decode every image now (in parallel; JPEGs at reduced scale), so that an
        unreadable or truncated file is found before any work, not halfway through
        training.
    on_error : {"raise", "skip"}, default="raise"
        What to do with unreadable files found by ``check_files``: raise one error
        that lists them all, or leave them out with a warning that lists them all.

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
    root = _existing_folder(path)
    X, y = _class_folders(root)
    loose = len(_image_files(root, recursive=False))
    if not X and loose:
        raise ValueError(
            f"'{path}' holds {loose} image(s) but no class sub-folders, so there are no "
            "labels. Move each class's images into a sub-folder of its own "
            "(path/<class>/<image>.jpg), or list image paths and labels in a CSV file "
            "(one 'path,label' row per image; see load_csv)."
        )
    if not X:
        raise ValueError(
            f"No images found in '{path}'. Expected one sub-folder per class holding "
            "image files (path/<class>/<image>.jpg)."
        )
    if check_files:
        keep = check_image_files(X, on_error=on_error)
        X, y = [X[i] for i in keep], [y[i] for i in keep]
    found = sorted(set(y))
    if len(found) < 2:
        raise ValueError(
            f"'{path}' holds images of only 1 class ({found[0]!r}); a classification "
            "study needs at least 2 class sub-folders."
        )
    return np.asarray(X), np.asarray(y)


def _existing_folder(path):
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"Image folder not found: '{root}'.")
    if not root.is_dir():
        raise ValueError(
            f"'{root}' is a file, not a folder. Give a folder with one sub-folder of "
            "images per class (path/<class>/<image>), or an .npz file with arrays X and y."
        )
    return root


def _image_files(folder, recursive=True):
    extensions = _image_extensions()
    files = sorted(folder.rglob("*") if recursive else folder.iterdir())
    return [str(f) for f in files if f.is_file() and f.suffix.lower() in extensions
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def _class_folders(root):
    X, y = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(folder)
        X += files
        y += [folder.name] * len(files)
    return X, y


def check_image_files(paths, *, on_error="raise"):
    """Decode every image file once, and deal with the unreadable ones.

    Decoding runs in threads (PIL releases the GIL); JPEGs are decoded at 1/8 scale,
    which still reads every byte of the file, so truncated files are caught cheaply.

    Parameters
    ----------
    paths : list of str
        The image files.
    on_error : {"raise", "skip"}, default="raise"
        "raise": one ValueError listing every unreadable file. "skip": a warning
        listing them, and they are left out.

    Returns
    -------
    list of int
        Indices of the readable files.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r} is not one of 'raise', 'skip'.")
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="sktransfer-check") as pool:
        problems = list(tqdm(pool.map(_decode_problem, paths), total=len(paths),
                             desc="checking images", unit="file",
                             disable=None if len(paths) >= 500 else True))
    bad = [f"'{path}' ({problem})" for path, problem in zip(paths, problems) if problem]
    if bad:
        listing = "; ".join(bad)
        if on_error == "raise":
            raise ValueError(
                f"{len(bad)} of {len(paths)} file(s) are not readable images: {listing}. "
                "Replace or remove them, or skip them (on_error='skip'; at the command "
                "line, --on-error skip)."
            )
        warnings.warn(f"Skipping {len(bad)} of {len(paths)} file(s) that are not readable "
                      f"images: {listing}.", UserWarning, stacklevel=3)
    return [i for i, problem in enumerate(problems) if not problem]


def _decode_problem(path):
    """None if the image decodes, else a short reason."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return reason if len(reason) < 120 else reason[:117] + "..."
    return None


def load_digits_images():
    """Load scikit-learn's 1,797 handwritten digits as 8x8 grayscale images in [0, 1].

    Returns
    -------
    X : ndarray of shape (1797, 8, 8), float32
        The images, ink bright (1) on a dark (0) background.
    y : ndarray of shape (1797,), int
        The digit each image shows, 0 to 9.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


def load_data(data=None, *, labels="required", on_error="raise"):
    """Load images and labels from a folder, an ``.npz`` or CSV file, an image, or the digits.

    Parameters
    ----------
    data : str, PathLike or None
        ``None`` loads the built-in digits. A folder of class sub-folders
        (``path/<class>/<image>``), an ``.npz`` with arrays ``X`` (and ``y``), a
        ``.csv`` of image paths and targets (see :func:`load_csv`), or, with
        ``labels="optional"``, also a folder of images without class sub-folders
        (searched recursively) or a single image file.
    labels : {"required", "optional"}, default="required"
        "required" (training, comparing) needs labels of at least 2 classes;
        "optional" (feature extraction) returns ``y=None`` where there are none.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image files: one error listing them all, or leave them out with a
        warning (see :func:`check_image_files`).

    Returns
    -------
    X : images
        Image paths, or the array of an ``.npz`` or of the digits.
    y : ndarray or None
        The targets; None where ``labels="optional"`` found none.
    """
    if labels not in ("required", "optional"):
        raise ValueError(f"labels={labels!r} is not one of 'required', 'optional'.")
    if data is None:
        return load_digits_images()
    path = Path(data)
    if path.suffix == ".npz":
        return _load_npz(path, labels)
    if path.suffix.lower() == ".csv":
        return load_csv(path, labels=labels, on_error=on_error)
    if labels == "required":
        return load_image_folder(os.fspath(path), on_error=on_error)
    if path.is_file():
        X = [os.fspath(path)]
        y = None
    else:
        X, y = _class_folders(_existing_folder(path))
        if not X or len(_image_files(path, recursive=False)) > 0:  # loose images: unlabelled
            X, y = _image_files(path), None
    if not X:
        raise ValueError(f"No image files found in '{path}'.")
    keep = check_image_files(X, on_error=on_error)
    X = np.asarray([X[i] for i in keep])
    return X, None if y is None else np.asarray([y[i] for i in keep])


def _load_npz(path, labels):
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: '{path}'.")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"'{path}' is not a readable .npz file ({error}).") from None
    with arrays:
        needed = {"X", "y"} if labels == "required" else {"X"}
        missing = needed - set(arrays.files)
        if missing:
            raise ValueError(
                f"'{path}' lacks the array(s) {sorted(missing)}; an .npz data file "
                f"holds images X and labels y (found {arrays.files})."
            )
        return arrays["X"], arrays["y"] if "y" in arrays.files else None


def load_csv(path, *, labels="required", on_error="raise"):
    """Image paths and targets from a CSV file: ``path,target[,target...]`` per row.

    Paths are relative to the CSV's folder (or absolute). A first row whose first cell
    does not end in an image file extension is a header. Files that are missing or do
    not decode are reported (or skipped) as ``on_error`` says. The targets are read as integers where every
    value is one, else as floats where every value is a number (a regression target),
    else as text (class labels); several columns of 0/1 are a multi-label indicator.

    Parameters
    ----------
    path : str or PathLike
        The CSV file.
    labels : {"required", "optional"}, default="required"
        "optional" also takes rows of a path alone, and then returns ``y=None``.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image files: see :func:`check_image_files`.

    Returns
    -------
    X : ndarray of str
        The image paths.
    y : ndarray of shape (n_images,) or (n_images, n_targets), or None
        The targets, typed as described above.
    """
    import csv

    if labels not in ("required", "optional"):
        raise ValueError(f"labels={labels!r} is not one of 'required', 'optional'.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: '{path}'.")
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = [row for row in csv.reader(stream) if any(cell.strip() for cell in row)]
    if rows and Path(rows[0][0].strip()).suffix.lower() not in _image_extensions():
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"'{path}' lists no images; each row is: image path, target(s).")
    widths = {len(row) for row in rows}
    fewest = 1 if labels == "optional" else 2
    if len(widths) > 1 or widths.pop() < fewest:
        raise ValueError(f"'{path}': every row needs an image path and the same number of "
                         f"targets{' (at least 1)' if fewest == 2 else ''}; found rows of "
                         f"{sorted({len(r) for r in rows})} cells.")
    paths = [os.fspath(path.parent / row[0].strip()) for row in rows]
    if len(rows[0]) == 1:  # paths alone
        keep = check_image_files(paths, on_error=on_error)
        return np.asarray([paths[i] for i in keep]), None
    targets = np.asarray([[cell.strip() for cell in row[1:]] for row in rows])
    empty = np.flatnonzero((targets == "").any(axis=1))
    if len(empty):
        raise ValueError(f"'{path}': {len(empty)} row(s) lack a target (first: row of "
                         f"'{paths[empty[0]]}'); fill them in or drop those rows.")
    y = _parse_targets(targets)
    keep = check_image_files(paths, on_error=on_error)
    return np.asarray([paths[i] for i in keep]), y[keep]


def _parse_targets(cells):
    """Text cells as integers, else floats, else text; one column is returned 1-D."""
    for kind in (int, float):
        try:
            values = np.vectorize(kind, otypes=[kind])(cells)
            break
        except (ValueError, OverflowError):  # OverflowError: digits beyond int64
            continue
    else:
        values = cells
    return values[:, 0] if values.shape[1] == 1 else values


def list_images(data, *, on_error="raise"):
    """List unlabelled images to predict on, with a name for each.

    Parameters
    ----------
    data : str or PathLike
        An image file, a folder (searched recursively), a ``.csv`` whose first column
        is image paths (see :func:`load_csv`; targets are ignored), or an ``.npz`` with
        array ``X``.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image files: see :func:`check_image_files`.

    Returns
    -------
    X : images
        The image paths, or the array of an ``.npz``.
    names : list of str
        The paths, or ``"0"``, ``"1"``, ... for the rows of an ``.npz``.
    """
    if data is None:
        raise ValueError("list_images needs a file or folder of images, got None.")
    X, _ = load_data(data, labels="optional", on_error=on_error)
    if X.dtype.kind in "US" and X.ndim == 1:
        return X.tolist(), X.tolist()
    return X, [str(i) for i in range(len(X))]
