"""Scale-out on Dask: feature extraction of large collections, partition by partition.

Grid searches need nothing from this module: run scikit-learn's own ``GridSearchCV`` under
``joblib.parallel_config(backend="dask")`` with a ``dask.distributed.Client``. This module
adds :func:`extract_features`, which maps a fitted extractor over partitions of a large
collection and returns a dask array, shipping the network to each worker once.

Needs the ``dask`` extra: ``pip install "sktransfer[dask]"``.
"""

import numpy as np

__all__ = ["extract_features"]


def _import_dask():
    try:
        import dask
        import dask.array
    except ImportError:
        raise ImportError(
            "sktransfer.dask needs dask: pip install \"sktransfer[dask]\"") from None
    return dask


def _transform_partition(extractor, images):
    return extractor.transform(images)


def extract_features(X, extractor, *, partition_size=1024):
    """Compute the features of a large collection as a dask array, rows in input order.

    Parameters
    ----------
    X : list or 1-D array of paths, numpy array of images, or dask array
        The images. A dask array is split along its chunks of the first axis (the
        other axes are merged into one chunk); other inputs in ``partition_size`` rows.
    extractor : CNNFeatureExtractor, FineTuneClassifier or FineTuneRegressor
        Fitted (a fine-tuned model gives its penultimate features). With a
        ``dask.distributed`` client it is scattered to every worker once,
        so each worker deserializes the network once, not once per partition; with
        dask's local threaded scheduler all tasks share the object.
    partition_size : int, default=1024
        Images per task, for inputs that are not dask arrays.

    Returns
    -------
    dask.array.Array of shape (n_images, n_features), float32
        Lazy: call ``.compute()`` (or store it, e.g. ``.to_zarr``). Equal to
        ``extractor.transform(X)`` up to float rounding of different batch boundaries.

    Examples
    --------
    >>> from sktransfer import CNNFeatureExtractor
    >>> from sktransfer.dask import extract_features
    >>> extractor = CNNFeatureExtractor().fit(paths[:1])          # doctest: +SKIP
    >>> features = extract_features(paths, extractor).compute()   # doctest: +SKIP
    """
    from sklearn.utils.validation import check_is_fitted

    dask = _import_dask()
    import dask.array as da

    check_is_fitted(extractor)
    if not (isinstance(partition_size, int) and partition_size >= 1):
        raise ValueError(f"partition_size must be a positive int, got {partition_size!r}.")
    n_features = len(extractor.get_feature_names_out())
    shared = _share(extractor)
    transform = dask.delayed(_transform_partition, pure=True)
    parts = []
    for n_rows, partition in _partitions(X, partition_size, da):
        parts.append(da.from_delayed(transform(shared, partition), shape=(n_rows, n_features),
                                     dtype=np.float32))
    if not parts:
        raise ValueError("X is empty: found 0 images, at least 1 is required.")
    return da.concatenate(parts, axis=0)


def _share(extractor):
    """The extractor once per worker: scattered with a distributed client; without one
    (dask's local threads), the tasks share the very object."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return extractor
    return client.scatter(extractor, broadcast=True, hash=False)


def _partitions(X, partition_size, da):
    if isinstance(X, da.Array):
        if X.ndim < 2:
            raise ValueError(f"A dask array of images needs 2 to 4 dimensions, got {X.ndim}.")
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
        # One delayed numpy block per chunk of rows.
        yield from zip(X.chunks[0], X.to_delayed().ravel())
        return
    if hasattr(X, "iloc"):
        X = X.tolist() if X.ndim == 1 else X.to_numpy()
    for start in range(0, len(X), partition_size):
        partition = X[start:start + partition_size]
        yield len(partition), partition
