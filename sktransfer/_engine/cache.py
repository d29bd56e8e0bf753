"""Content-addressed cache of per-image network outputs (features or activations).

One file per image and computation, keyed by the image's content, so that any subset of a
data set (a cross-validation fold, a grid-search split) reuses what an earlier fit
computed. Files are written to a temporary name and renamed, so a crash mid-write
never leaves a partial entry; an unreadable entry is recomputed.
"""

import os
import threading
from pathlib import Path

import joblib
import numpy as np
from sklearn.utils.validation import check_memory

from sktransfer._engine.io import atomic_path


def check_cache_folder(memory):
    """Check ``memory`` names a folder that can be created and written, before any work.

    Returns
    -------
    Path or None
        The cache's folder; None when nothing is cached.
    """
    location = _location(memory)
    if location is None:
        return None
    folder = Path(location)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"memory={os.fspath(memory) if isinstance(memory, (str, os.PathLike)) else memory!r}"
            f" is a file; the cache needs a folder. Give a folder path (created if missing), "
            "a joblib.Memory, or None."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"Cannot create the cache folder '{folder}' given as memory ({error.strerror}). "
            "Give a folder you can write to, or memory=None."
        ) from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"The cache folder '{folder}' given as memory is not writable. "
                         "Give a folder you can write to, or memory=None.")
    return folder


def cached_rows(images, compute, *, memory, computation):
    """``compute(images)``, reading rows cached under ``memory`` and storing new ones.

    Parameters
    ----------
    images : ImageSet
    compute : callable
        Maps an ImageSet to an array with one row per image.
    memory : None, str, path or joblib.Memory
        Where to cache; ``None`` (or a Memory without location) computes directly.
    computation : object
        Everything besides the image that determines a row (weights digest, layer,
        preprocessing, ...); hashed into the cache folder's name.

    Returns
    -------
    ndarray with one row per image
    """
    location = _location(memory)
    if location is None:
        return compute(images)
    folder = Path(location) / "sktransfer" / joblib.hash(computation)
    keys = images.item_keys()
    rows = [_read(folder, key) for key in keys]
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        computed = compute(images.subset(missing))
        for index, row in zip(missing, computed):
            _write(folder, keys[index], row)
            rows[index] = row
    return np.stack(rows)


def _location(memory):
    """The folder a ``memory`` parameter names (a path, or a joblib.Memory's), or None."""
    if isinstance(memory, (str, os.PathLike)):
        return os.fspath(memory)
    return check_memory(memory).location


def _path(folder, key):
    return folder / key[:2] / f"{key}.npy"


#: np.load parses each file's header with ast.literal_eval, which CPython 3.11.7 and
#: earlier can fail in concurrent threads ("AST constructor recursion depth
#: mismatch", python/cpython#106905): threads sharing a cache read one at a time.
_READ_LOCK = threading.Lock()


def _read(folder, key):
    try:
        with _READ_LOCK:
            return np.load(_path(folder, key), allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, or unreadable: recompute
        return None


def _write(folder, key, row):
    with atomic_path(_path(folder, key)) as temporary:
        with open(temporary, "wb") as file:
            np.save(file, row, allow_pickle=False)
