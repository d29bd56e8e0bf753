"""The feature layer chosen by inner cross-validation, on block features computed once.

Every image's pooled block outputs come from one forward pass of the fixed pretrained
network (:func:`sktransfer.study.probe.block_features`): a cache of inputs that the
layer probe and the "layer chosen by inner CV" rows share. The estimator of those
rows, :class:`ChosenLayerProbe`, takes row indices into that cache as ``X``.
"""

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sktransfer.study.probe import (block_features, make_probe, probe_columns, probe_rows,
                                    score_blocks)


class SharedBlockFeatures:
    """Every block's features of the study's images, extracted once per backbone."""

    def __init__(self, X, *, image_size=None, device="auto"):
        self.X, self.image_size, self.device = X, image_size, device
        self._features = {}

    def of(self, backbone):
        """The :class:`BlockFeatures` of ``backbone`` (a ``BackboneChoice``)."""
        if backbone.label not in self._features:
            self._features[backbone.label] = block_features(
                self.X, backbone=backbone.name, weights=backbone.weights,
                image_size=self.image_size, device=self.device, progress=False)
        return self._features[backbone.label]

    def seconds_per_image(self, backbone):
        """The extraction's wall time per image: each row's share of the one pass."""
        features = self.of(backbone)
        return features.seconds / len(features.values)


class ChosenLayerProbe(BaseEstimator):
    """A standardized linear probe on the block an inner CV of the training rows picks.

    Parameters
    ----------
    features : BlockFeatures
        Every block's features of every image; ``X`` holds row indices into them.
    task : Task
        Gives the linear model, its scoring and the inner folds.
    inner_splits : int, default=3
        Inner folds of the training rows; with too few labels for 2 folds the top
        block is kept (as the fixed row).
    random_state : int, default=0
        Seeds the inner folds.

    Attributes
    ----------
    layer_ : str
        The chosen block's name.
    probe_ : Pipeline
        The probe fitted on the chosen block's features of the training rows.
    """

    def __init__(self, features, *, task, inner_splits=3, random_state=0):
        self.features = features
        self.task = task
        self.inner_splits = inner_splits
        self.random_state = random_state

    def __sklearn_clone__(self):
        # The features are shared inputs, never changed by fit: no deep copy per fold.
        return type(self)(**self.get_params(deep=False))

    def fit(self, X, y):
        """Choose a block by inner CV of ``X``'s rows, then fit the probe on it."""
        rows = np.asarray(X).ravel()
        task, y = self.task, np.asarray(y)
        inner = task.inner_splitter(y, self.inner_splits, self.random_state)
        if inner is None:  # too few labels to choose: the top block, as the fixed row
            self.position_ = len(self.features.blocks) - 1
        else:
            scores, _ = score_blocks(self.features, y, inner, estimator=task.linear_model(),
                                     scoring=task.scoring, rows=rows)
            self.position_ = int(np.argmax([s.mean() for s in scores]))
        self.layer_ = self.features.blocks[self.position_].name
        self.probe_ = make_probe(task.linear_model()).fit(
            self.features.of_block(self.position_, rows), y)
        return self

    def predict(self, X):
        """The probe's predictions for ``X``'s rows."""
        check_is_fitted(self)
        rows = np.asarray(X).ravel()
        return self.probe_.predict(self.features.of_block(self.position_, rows))


def layer_probe(features, label, task, y, splits):
    """The probe of every block over the outer folds: a diagnostic (see ``probe_table``)."""
    import pandas as pd

    scores, seconds = score_blocks(features, y, splits, estimator=task.linear_model(),
                                   scoring=task.scoring)
    table = pd.DataFrame(probe_rows(features.blocks, scores, seconds, task.scoring),
                         columns=probe_columns(task.scoring))
    table.insert(0, "backbone", label)
    return table
