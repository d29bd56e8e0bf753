"""Content-addressed cache of per-image network outputs (features or activations).

One file per image and setting, keyed by the image's content, so that any subset of a
data set (a cross-validation fold, a grid-search split) reuses what an earlier fit
computed. Files are written to a temporary name and renamed, so a crash mid-write
never leaves a partial entry; an unreadable entry is recomputed.
"""

from pathlib import Path

import joblib
import numpy as np
from sklearn.utils.validation import check_memory

from ._persistence import atomic_path


def cached_rows(images, compute, *, memory, setting):
    """``compute(images)``, reading rows cached under ``memory`` and storing new ones.

    Parameters
    ----------
    images : ImageSet
    compute : callable
        Maps an ImageSet to an array with one row per image.
    memory : None, str, path or joblib.Memory
        Where to cache; ``None`` (or a Memory without location) computes directly.
    setting : object
        Everything besides the image that determines a row (weights digest, layer,
        preprocessing, ...); hashed into the cache folder's name.

    Returns
    -------
    ndarray with one row per image
    """
    location = check_memory(memory).location
    if location is None:
        return compute(images)
    folder = Path(location) / "sktransfer" / joblib.hash(setting)
    keys = images.item_keys()
    rows = [_read(folder, key) for key in keys]
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        computed = compute(images.subset(missing))
        for index, row in zip(missing, computed):
            _write(folder, keys[index], row)
            rows[index] = row
    return np.stack(rows)


def _path(folder, key):
    return folder / key[:2] / f"{key}.npy"


def _read(folder, key):
    try:
        return np.load(_path(folder, key), allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, or unreadable: recompute
        return None


def _write(folder, key, row):
    with atomic_path(_path(folder, key)) as temporary:
        with open(temporary, "wb") as file:
            np.save(file, row, allow_pickle=False)
