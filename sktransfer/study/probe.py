"""Which layer transfers: a linear probe on every block's features, from one pass.

Features become less general and more specific to the source task going up a network;
how far up they still serve *your* images is an empirical question. The probe answers it
cheaply: one forward pass per image yields the pooled output of every block, and a
standardized linear model is cross-validated on each block's columns.

Every fold's probe is fitted on that fold's training part only, but the curve as a
whole looks at every fold: it is a diagnostic for choosing ``layer``, not an unbiased
score of the chosen layer (nest it in an outer cross-validation for that, as
:func:`sktransfer.compare` does).
"""

import time
from collections import namedtuple

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, check_cv, cross_val_score
from sklearn.utils.multiclass import type_of_target
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer._engine.backbones import backbone_blocks
from sktransfer._extraction.cnn import CNNFeatureExtractor
from sktransfer._extraction.pixels import PixelFeatures
from sktransfer.study.tasks import metric_label

PROBE_COLUMNS = ["block", "name", "channels", "stride", "accuracy_mean", "accuracy_std",
                 "seconds"]


def probe_columns(scoring=None):
    """The probe table's columns; the score columns are named after ``scoring``."""
    metric = scoring or "accuracy"
    return [f"{metric}_{c.split('_')[1]}" if c.startswith("accuracy_") else c
            for c in PROBE_COLUMNS]


def score_column(table):
    """The probe table's mean-score column (``accuracy_mean``, ``r2_mean``, ...)."""
    return next(c for c in table.columns if c.endswith("_mean"))


def probe_layers(X, y, *, backbone="efficientnet_lite0", weights="imagenet", cv=5,
                 estimator=None, image_size=None, image_shape=None, device="auto",
                 precision="fp32", backend="auto", memory=None, pixel_size=32, scoring=None,
                 random_state=0, n_jobs=None, progress=True):
    """Score a linear probe on the features of every block, by cross-validation.

    Parameters
    ----------
    X : images
        Any accepted image input (see :func:`sktransfer.read_images`).
    y : array-like of shape (n_samples,)
        Class labels (with another ``estimator``, any target it takes).
    backbone, weights : see CNNFeatureExtractor
        As in :class:`CNNFeatureExtractor`.
    cv : int or cross-validation splitter, default=5
        An int gives shuffled stratified folds seeded by ``random_state``.
    estimator : classifier, default=None
        The probe, fitted on standardized features; default: logistic regression.
    image_size, image_shape, device, precision, backend, memory : see CNNFeatureExtractor
        As in :class:`CNNFeatureExtractor`.
    pixel_size : int or None, default=32
        Also probe raw pixels at this size (:class:`PixelFeatures`); None skips it.
    scoring : str, default=None
        A scikit-learn scoring name, naming the score columns; None: ``score``.
    random_state : int, default=0
        Seed of the folds when ``cv`` is an int.
    n_jobs : int, default=None
        Folds fitted in parallel, as in ``cross_val_score``.
    progress : bool, default=True
        Progress bar of the feature extraction.

    Returns
    -------
    pandas.DataFrame
        One row per block: ``block`` (index), ``name``, ``channels``, ``stride``,
        ``accuracy_mean``, ``accuracy_std`` (``<scoring>_mean``, ``_std``), ``seconds``
        (the probe's fits); ``attrs``: ``extract_seconds`` (the shared forward pass),
        ``pixels`` (the pixel probe's mean and std). :func:`plot_layer_probe` draws it.

    Examples
    --------
    >>> from sktransfer import probe_layers, datasets
    >>> X, y = datasets.load_digits_images()
    >>> table = probe_layers(X[:300], y[:300], image_size=32, cv=3)  # doctest: +SKIP
    >>> table.loc[table["accuracy_mean"].idxmax(), "name"]  # doctest: +SKIP
    'blocks.3'
    """
    y = np.asarray(y)
    _check_default_probe(estimator, y)
    features = block_features(X, backbone=backbone, weights=weights, image_size=image_size,
                              image_shape=image_shape, device=device, precision=precision,
                              backend=backend, memory=memory, progress=progress)
    splitter = _splitter(cv, y, random_state)
    scores, seconds = score_blocks(features, y, splitter, estimator=estimator, scoring=scoring,
                                   n_jobs=n_jobs)
    table = _probe_table(features, scores, seconds, scoring, backbone)
    if pixel_size is not None:
        table.attrs["pixels"] = _pixel_probe(X, y, splitter, pixel_size, image_shape,
                                             estimator, scoring, n_jobs)
    return table


def _pixel_probe(X, y, splitter, pixel_size, image_shape, estimator, scoring, n_jobs):
    """Mean and std score of the probe on raw pixels: the no-transfer baseline."""
    pixels = make_pipeline(PixelFeatures(pixel_size, image_shape=image_shape),
                           make_probe(estimator))
    scores = cross_val_score(pixels, X, y, cv=splitter, scoring=scoring, n_jobs=n_jobs)
    return float(scores.mean()), float(scores.std())


def _check_default_probe(estimator, y):
    if estimator is None and type_of_target(y) not in ("binary", "multiclass"):
        raise ValueError(
            f"The default probe (logistic regression) takes class labels; y is "
            f"{type_of_target(y)}. For a numeric target pass estimator=RidgeCV() and "
            "scoring='r2'.")


def _probe_table(features, scores, seconds, scoring, backbone):
    """The probe's table, with the extraction's seconds and the backbone in ``attrs``."""
    import pandas as pd

    table = pd.DataFrame(probe_rows(features.blocks, scores, seconds),
                         columns=probe_columns(scoring))
    table.attrs["extract_seconds"] = features.seconds
    table.attrs["backbone"] = backbone if isinstance(backbone, str) else type(backbone).__name__
    return table


def probe_rows(blocks, scores, seconds, scoring=None):
    """The probe table's rows: each block with its mean and std score and fit seconds."""
    mean, std = probe_columns(scoring)[4:6]
    return [{"block": block.index, "name": block.name, "channels": block.channels,
             "stride": block.reduction, mean: float(block_scores.mean()),
             std: float(block_scores.std()), "seconds": block_seconds}
            for block, block_scores, block_seconds in zip(blocks, scores, seconds)]


class BlockFeatures(namedtuple("BlockFeatures", "values columns blocks seconds")):
    """The pooled output of every block for a set of images, from one pass.

    ``values`` is (n_images, n_features); ``columns[i]`` selects block ``blocks[i]``'s
    columns; ``seconds`` is the extraction's wall time.
    """

    def of_block(self, position, rows=slice(None)):
        """The features of ``blocks[position]`` for ``rows``."""
        return self.values[rows][:, self.columns[position]]


def block_features(X, *, backbone="efficientnet_lite0", weights="imagenet", image_size=None,
                   image_shape=None, device="auto", precision="fp32", backend="auto",
                   memory=None, progress=True):
    """Every block's pooled features of ``X``, from one forward pass per image.

    The network is pretrained and fixed, and each image's row depends on that image
    alone, so computing the rows of every fold's images at once leaks nothing.

    Returns
    -------
    BlockFeatures
    """
    blocks = backbone_blocks(backbone, image_size=image_size)
    extractor = CNNFeatureExtractor(
        backbone, weights=weights, layer=[b.index for b in blocks], image_size=image_size,
        image_shape=image_shape, device=device, precision=precision, backend=backend,
        memory=memory, progress=progress)
    start = time.perf_counter()
    values = extractor.fit_transform(X)
    seconds = time.perf_counter() - start
    names = extractor.get_feature_names_out().astype(str)
    columns = [np.char.startswith(names, f"{block.name}_") for block in blocks]
    return BlockFeatures(values, columns, blocks, seconds)


def score_blocks(features, y, cv, *, estimator=None, scoring=None, n_jobs=None,
                 rows=slice(None)):
    """Cross-validated scores of the standardized probe on each block's features.

    Parameters
    ----------
    features : BlockFeatures
    y : ndarray of the labels of ``rows``
    cv : cross-validation splitter or iterable of splits (of ``rows``)
    estimator, scoring : as in :func:`probe_layers`
    rows : index of the images to use, default all

    Returns
    -------
    scores : list of ndarray, one (n_splits,) array per block
    seconds : list of float, the probe fits' wall time per block
    """
    probe = make_probe(estimator)
    splits = list(cv.split(np.zeros(len(y)), y)) if hasattr(cv, "split") else list(cv)
    scores, seconds = [], []
    for position in range(len(features.blocks)):
        start = time.perf_counter()
        scores.append(cross_val_score(probe, features.of_block(position, rows), y, cv=splits,
                                      scoring=scoring, n_jobs=n_jobs))
        seconds.append(time.perf_counter() - start)
    return scores, seconds


def make_probe(estimator=None):
    """The probe: a standardized ``estimator`` (default logistic regression)."""
    return make_pipeline(StandardScaler(), clone(estimator) if estimator is not None
                         else LogisticRegression(max_iter=1000))



def _splitter(cv, y, random_state):
    """Shuffled folds for an int ``cv``: stratified for class labels, plain otherwise."""
    if isinstance(cv, int):
        stratify = type_of_target(y) in ("binary", "multiclass")
        return (StratifiedKFold if stratify else KFold)(cv, shuffle=True,
                                                        random_state=random_state)
    return check_cv(cv, y, classifier=True)


def plot_layer_probe(table, path=None, *, ax=None):
    """Plot the probe's score against depth, with the raw-pixel probe as a line.

    Parameters
    ----------
    table : pandas.DataFrame
        What :func:`probe_layers` returns.
    path : str or PathLike, default=None
        Save the figure there (PNG).
    ax : matplotlib Axes, default=None
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into.

    See Also
    --------
    probe_layers : Compute the table.
    """
    from matplotlib.figure import Figure

    figure = None
    if ax is None:
        figure = Figure(figsize=(8, 4.5), layout="constrained")
        ax = figure.subplots()
    mean = score_column(table)
    metric = mean[:-len("_mean")]
    ax.errorbar(table["block"], table[mean], yerr=table[f"{metric}_std"],
                marker="o", color="#1f77b4", capsize=3,
                label=f"linear probe on each block ({table.attrs.get('backbone', 'backbone')})")
    best = table.loc[table[mean].idxmax()]
    ax.annotate(f"best: {best['name']} ({best[mean]:.3f})",
                (best["block"], best[mean]), textcoords="offset points",
                xytext=(0, 10), ha="center", fontsize=8)
    if "pixels" in table.attrs:
        mean, _ = table.attrs["pixels"]
        ax.axhline(mean, color="#7f7f7f", linestyle="--", label=f"raw pixels ({mean:.3f})")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.08 * (high - low))  # room for the "best" label
    ax.set_xticks(table["block"], table["name"], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("block (bottom to top)")
    ax.set_ylabel(f"{metric_label(metric)} (mean ± std over folds)")
    ax.set_title("which layer transfers: a diagnostic over all folds")
    ax.legend(fontsize=8)
    if figure is not None and path is not None:
        figure.savefig(path, dpi=110)
    return ax
