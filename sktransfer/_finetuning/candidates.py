"""The candidates of a depth search, as scikit-learn estimators on row indices.

``GridSearchCV`` clones, fits and scores a :class:`DepthCandidate` per depth and fold;
each reads the search's images and frozen-block outputs from one :class:`SearchData`,
which cloning does not copy.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score

from sktransfer._engine.images import take_rows
from sktransfer._finetuning.classifier import FineTuneClassifier
from sktransfer._training.transfer_net import resolve_freeze


def candidate_depth(freeze, block_names):
    """The number of frozen blocks of a candidate: ``freeze``, or a float in [0, 1] for
    that fraction of the blocks."""
    if isinstance(freeze, float) and 0 <= freeze <= 1:
        return int(round(freeze * len(block_names)))
    return resolve_freeze(freeze, len(block_names), block_names)


def check_folds_can_stop_early(classifier, y, splits):
    """Each fold's training part must hold a validation part: told before any training.

    ``classifier``: the search's settings, its classes set from all of ``y``.
    """
    for fold, (train, _) in enumerate(splits):
        if not classifier._stops_early(len(train)):
            continue
        try:
            encoded = classifier._encode_targets(y[train], len(train), warm=True)
            classifier._validation_split(encoded, 0)
        except ValueError as error:
            raise ValueError(
                f"Fold {fold} trains on {len(train)} of the {len(y)} samples: {error} "
                "(or fewer folds, cv).") from None


class SearchData:
    """What every candidate fit of one search reads, shared and never copied.

    ``X`` as the user gave it, ``trunk_inputs`` (number of frozen blocks -> the frozen
    blocks' outputs for all rows of ``X``), the FineTuneClassifier parameters and the
    backbone's block names. ``clone`` deep-copies an estimator's parameters: this one
    is its own copy, so no candidate copies the images or the outputs.
    """

    def __init__(self, X, trunk_inputs, classifier_params, block_names):
        self.X = X
        self.trunk_inputs = trunk_inputs
        self.classifier_params = classifier_params
        self.block_names = block_names

    def __deepcopy__(self, memo):
        return self


class DepthCandidate(ClassifierMixin, BaseEstimator):
    """One depth of a search, as an estimator on row indices of the search's images.

    ``fit(rows, y)`` trains a :class:`FineTuneClassifier` at depth ``freeze`` on the
    images of ``rows`` (a column of indices into ``shared.X``), with their precomputed
    frozen-block outputs; the prediction methods take rows the same way.
    """

    def __init__(self, freeze=0, *, shared=None):
        self.freeze = freeze
        self.shared = shared

    def fit(self, rows, y, sample_weight=None):
        rows = np.ravel(rows)
        self.depth_ = candidate_depth(self.freeze, self.shared.block_names)
        inputs = self.shared.trunk_inputs.get(self.depth_)
        self.model_ = FineTuneClassifier(**self.shared.classifier_params, freeze=self.depth_)
        self.model_._fit_on_trunk_inputs(take_rows(self.shared.X, rows), y, sample_weight,
                                         None if inputs is None else inputs[rows])
        self.classes_ = self.model_.classes_
        return self

    def score(self, rows, y, sample_weight=None):
        """Accuracy; straight from the frozen blocks' outputs where the search has them."""
        inputs = self.shared.trunk_inputs.get(self.depth_)
        if inputs is None or self.model_.tta is not None:
            return self.model_.score(self._images(rows), y, sample_weight=sample_weight)
        logits = self.model_._head_outputs_from_trunk(inputs[np.ravel(rows)], self.depth_)
        return float(accuracy_score(y, self.model_._labels(logits), sample_weight=sample_weight))

    def predict(self, rows):
        return self.model_.predict(self._images(rows))

    def predict_proba(self, rows):
        return self.model_.predict_proba(self._images(rows))

    def decision_function(self, rows):
        return self.model_.decision_function(self._images(rows))

    def _images(self, rows):
        return take_rows(self.shared.X, np.ravel(rows))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
