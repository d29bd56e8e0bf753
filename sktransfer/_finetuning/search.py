"""How deep to freeze, chosen by cross-validation, with the frozen trunk computed once.

:class:`FineTuneClassifierCV` runs scikit-learn's ``GridSearchCV`` over ``freeze`` on row
indices. Its estimator, a :class:`~sktransfer._finetuning.candidates.DepthCandidate`,
fits a :class:`FineTuneClassifier` on the images of its rows with the frozen blocks'
outputs for those rows, computed once for every depth and fold, and scores it (by
default, accuracy straight from those outputs).
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.model_selection import GridSearchCV, check_cv
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.cache import check_cache_folder
from sktransfer._engine.device import resolve_device, resolve_precision
from sktransfer._engine.estimator import NETWORK_PARAMETER_DOCS, with_parameter_docs
from sktransfer._engine.images import check_images
from sktransfer._engine.inference import (
    Inference,
    block_output_shapes,
    inference_batch_size,
    resolve_backend,
)
from sktransfer._finetuning.candidates import (
    DepthCandidate,
    SearchData,
    candidate_depth,
    check_folds_can_stop_early,
)
from sktransfer._finetuning.classifier import FineTuneClassifier
from sktransfer._finetuning.settings import TRAINING_PARAMETER_DOCS
from sktransfer._training.trunk import FrozenTrunk

#: The parameters of the search itself; the rest are FineTuneClassifier's.
SEARCH_PARAMETERS = ("freezes", "cv", "scoring", "n_jobs", "refit")
#: Default candidate depths: everything frozen, three quarters, half, a quarter, none.
DEFAULT_FREEZES = ("all", 0.75, 0.5, 0.25, 0)


@with_parameter_docs(NETWORK_PARAMETER_DOCS, TRAINING_PARAMETER_DOCS)
class FineTuneClassifierCV(ClassifierMixin, TransformerMixin, BaseEstimator):
    """A :class:`FineTuneClassifier` whose freeze depth is chosen by cross-validation.

    In the spirit of ``LogisticRegressionCV``: ``fit`` scores every candidate depth on
    every fold and refits the best depth on all the data (``best_estimator_``, a
    :class:`FineTuneClassifier`, which predicts). It runs ``GridSearchCV`` over
    ``freeze`` and gives its ``cv_results_``, faster: without augmentation the frozen
    trunk is computed **once** for all depths and folds (one pass through the blocks
    yields the input of every candidate's first trainable block), and each fold and
    depth trains and scores only its trainable top.

    Parameters
    ----------
    {backbone}
    {weights}
    freezes : sequence of int, float or "all", default=("all", 0.75, 0.5, 0.25, 0)
        Candidate depths: as ``freeze`` of :class:`FineTuneClassifier`, or a float in
        [0, 1] for that fraction of the backbone's blocks.
    cv : int or cross-validation splitter, default=5
        An int gives stratified folds (unshuffled, as ``GridSearchCV`` does).
    scoring : str or callable, default=None
        None scores accuracy, from the trunk computed once; any scikit-learn scorer
        runs each fold's model on its test images.
    n_jobs : int, default=None
        Fold and depth fits run in parallel.
    refit : bool, default=True
        Refit the best depth on all the data, for ``predict``, ``predict_proba``,
        ``transform`` and ``score``. False only scores the candidates (``freeze_``,
        ``best_score_``, ``cv_results_``), as ``GridSearchCV(refit=False)`` does.
    {lr}
    {layer_lr_decay}
    {optimizer}
    {weight_decay}
    {max_epochs}
    {batch_size}
    {batchnorm}
    {head_init}
    {early_stopping}
    {patience}
    {validation_fraction}
    {augment}
        With augmentation nothing can be shared: each fit runs the whole network.
    {tta}
        Scores the candidates with it too (each through the whole network).
    {class_weight}
    {threshold}
    {image_size}
    {image_shape}
    {device}
    {random_state}
    {verbose}
    {progress}
    {memory}
    {training_precision}
    {backend}

    Attributes
    ----------
    freeze_ : int or str
        The chosen candidate, as given in ``freezes``.
    best_score_ : float
        Mean cross-validated score of the chosen depth.
    best_index_ : int
        Index of the chosen depth in ``cv_results_``.
    cv_results_ : dict
        With ``GridSearchCV``'s keys: ``params``, ``param_freeze``,
        ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time``, ... (``pandas.DataFrame`` takes it).
    n_frozen_ : int
        The chosen candidate's number of frozen blocks.
    best_estimator_ : FineTuneClassifier
        The chosen depth refitted on all the data (``refit=True`` only); its
        ``net_``, ``history_``, ``batchnorm_``, ``head_init_``, ... describe the model
        that predicts.
    classes_ : ndarray
        Class labels, as :class:`FineTuneClassifier` sets them.
    n_features_in_ : int
        Columns of ``X`` during fit, when ``X`` was a 2-D array.

    See Also
    --------
    FineTuneClassifier : The estimator whose depth is searched.
    probe_layers : Which block's frozen features transfer best.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTuneClassifierCV
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 12)
    >>> search = FineTuneClassifierCV("resnet18", weights=None, freezes=["all", 3],
    ...                               image_size=32, max_epochs=1, cv=2, random_state=0)
    >>> search.fit(X, y).freeze_ in ("all", 3)
    True
    """

    _parameter_constraints = {
        **{k: v for k, v in FineTuneClassifier._parameter_constraints.items()
           if k not in ("freeze", "warm_start", "checkpoint")},
        "freezes": ["array-like"],
        "cv": ["cv_object"],
        "scoring": [None, str, callable],
        "n_jobs": [None, Integral],
        "refit": ["boolean"],
    }

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet",
                 freezes=DEFAULT_FREEZES, cv=5, scoring=None, n_jobs=None, refit=True, lr=1e-3,
                 layer_lr_decay=0.75, optimizer="adamw", weight_decay=1e-4, max_epochs=None,
                 batch_size=32, batchnorm="auto", head_init="auto", early_stopping="auto",
                 patience=3, validation_fraction=0.15,
                 augment=None, tta=None, class_weight=None, threshold=0.5, image_size=None,
                 image_shape=None, device="auto", random_state=None, verbose=0,
                 progress="auto", memory=None, precision="fp32", backend="auto"):
        self.backbone = backbone
        self.weights = weights
        self.freezes = freezes
        self.cv = cv
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.lr = lr
        self.layer_lr_decay = layer_lr_decay
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.batchnorm = batchnorm
        self.head_init = head_init
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.augment = augment
        self.tta = tta
        self.class_weight = class_weight
        self.threshold = threshold
        self.image_size = image_size
        self.image_shape = image_shape
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress
        self.memory = memory
        self.precision = precision
        self.backend = backend

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Score every depth on every fold, then refit the best depth on all the data.

        Parameters
        ----------
        X : images
            Any accepted image input (see :func:`sktransfer.read_images`).
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels, or a 0/1 indicator matrix, as :class:`FineTuneClassifier` takes.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights in each fold's loss and score and in the refit's loss, as
            ``GridSearchCV`` passes them (without metadata routing).

        Returns
        -------
        FineTuneClassifierCV
            The fitted search (``self``).
        """
        images, device = self._check_runtime(X)
        classifier = FineTuneClassifier(**self._classifier_params())
        classifier._encode_targets(y, len(images), warm=False)  # checks y once, clearly
        self.classes_ = classifier.classes_
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, np.empty(len(images)),
                                                 dtype=np.float32, ensure_non_negative=True)
        y = y.toarray() if hasattr(y, "toarray") else np.asarray(y)
        backbone = resolve_backbone(self.backbone, self.weights)
        depths = self._candidate_depths(backbone.block_names)
        splits = list(check_cv(self.cv, y, classifier=True).split(np.zeros(len(y)), y))
        check_folds_can_stop_early(classifier, y, splits)
        shared = SearchData(X, self._shared_inputs(images, backbone, sorted(set(depths)), device),
                            self._classifier_params(), backbone.block_names)
        search = GridSearchCV(DepthCandidate(shared=shared), {"freeze": list(self.freezes)},
                              scoring=self.scoring, n_jobs=self.n_jobs, refit=False, cv=splits,
                              error_score="raise")
        weight = {} if sample_weight is None else {"sample_weight": sample_weight}
        search.fit(np.arange(len(y))[:, None], y, **weight)
        self._keep_results(search, depths)
        if self.refit:
            self.best_estimator_ = FineTuneClassifier(**self._classifier_params(),
                                                      freeze=self.n_frozen_)
            self.best_estimator_._fit_on_trunk_inputs(X, y, sample_weight,
                                                      shared.trunk_inputs.get(self.n_frozen_))
        return self

    def _check_runtime(self, X):
        """Images, device, backend and cache folder, checked before any work."""
        images = check_images(self, X, reset=True, image_shape=self.image_shape)
        device = resolve_device(self.device)
        resolve_backend(self.backend, device,
                        resolve_precision(device, self.precision, warn=False))
        check_cache_folder(self.memory)
        return images, device

    def _classifier_params(self):
        """The parameters every candidate's FineTuneClassifier takes (all but freeze)."""
        return {k: v for k, v in self.get_params(deep=False).items()
                if k not in SEARCH_PARAMETERS}

    def _candidate_depths(self, block_names):
        """The number of frozen blocks of each candidate, in order."""
        if len(self.freezes) == 0:
            raise ValueError("freezes is empty: give at least one candidate depth.")
        return [candidate_depth(freeze, block_names) for freeze in self.freezes]

    def _shared_inputs(self, images, backbone, depths, device):
        """Every candidate's trunk inputs for all images, from one pass ({}: not shared)."""
        if self.augment is not None:
            return {}
        preprocessing = backbone.preprocessing.with_size(self.image_size)
        blocks = backbone.blocks.eval().to(device)
        shapes = block_output_shapes(blocks, preprocessing)
        # As each fold's FineTuneClassifier computes its own: the pretrained blocks, in
        # eval mode, at its precision and inference batch size.
        precision = resolve_precision(device, self.precision, warn=False)
        trunk = FrozenTrunk(Inference(blocks, device, precision, self.backend), blocks,
                            block_shapes=shapes, preprocessing=preprocessing, memory=self.memory,
                            batch_size=inference_batch_size("auto", preprocessing.input_size))
        inputs = trunk.inputs_at(images, depths)
        return {depth: tensor for depth, tensor in inputs.items() if tensor is not None}

    def _keep_results(self, search, depths):
        self.cv_results_ = search.cv_results_
        self.best_index_ = int(search.best_index_)
        self.best_score_ = float(search.best_score_)
        self.freeze_ = search.best_params_["freeze"]
        self.n_frozen_ = depths[self.best_index_]

    # -- the refitted model --------------------------------------------------------

    def _refitted(self):
        if not self.refit:
            raise AttributeError(
                f"This {type(self).__name__} was initialized with refit=False: it only scores "
                "the depths (freeze_, cv_results_). Set refit=True to predict or transform.")
        return True

    def _best(self):
        check_is_fitted(self)
        return self.best_estimator_

    @available_if(_refitted)
    def predict(self, X):
        """Predict labels with ``best_estimator_``, as :meth:`FineTuneClassifier.predict`."""
        return self._best().predict(X)

    @available_if(_refitted)
    def predict_proba(self, X):
        """Predict probabilities with ``best_estimator_``, as ``FineTuneClassifier`` does."""
        return self._best().predict_proba(X)

    @available_if(_refitted)
    def decision_function(self, X):
        """Compute ``best_estimator_``'s logits (:meth:`FineTuneClassifier.decision_function`)."""
        return self._best().decision_function(X)

    @available_if(_refitted)
    def score(self, X, y, sample_weight=None):
        """Return the accuracy of ``best_estimator_`` on ``X``, ``y`` (needs ``refit=True``)."""
        return self._best().score(X, y, sample_weight=sample_weight)

    def transform(self, X):
        """Compute ``best_estimator_``'s features (:meth:`FineTuneClassifier.transform`)."""
        # Not available_if: scikit-learn's set_output wraps transform and drops the check.
        self._refitted()
        return self._best().transform(X)

    def get_feature_names_out(self, input_features=None):
        """Get the names of ``transform``'s columns (``best_estimator_``'s)."""
        self._refitted()
        return self._best().get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- safe files (sktransfer.save / sktransfer.load) ------------------------------

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted search, for sktransfer.save."""
        results = {key: (list(value) if key == "param_freeze" else
                         value if key == "params" else np.asarray(value).tolist())
                   for key, value in self.cv_results_.items()}
        description = {"freeze_": self.freeze_, "n_frozen_": self.n_frozen_,
                       "best_score_": self.best_score_, "best_index_": self.best_index_,
                       "classes": self.classes_.tolist(),
                       "classes_dtype": self.classes_.dtype.str, "cv_results_": results}
        if not self.refit:
            return description, {}
        best, tensors = self.best_estimator_._get_safe_state()
        return ({**description, "best_estimator_": best},
                {f"best_estimator_.{name}": tensor for name, tensor in tensors.items()})

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted search from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        self.freeze_, self.n_frozen_ = description["freeze_"], description["n_frozen_"]
        self.best_score_, self.best_index_ = description["best_score_"], description["best_index_"]
        self.classes_ = np.asarray(description["classes"],
                                   dtype=np.dtype(description["classes_dtype"]))
        self.cv_results_ = {
            key: (np.ma.MaskedArray(value, dtype=object) if key == "param_freeze" else
                  value if key == "params" else np.asarray(value))
            for key, value in description["cv_results_"].items()}
        if "best_estimator_" in description:
            best = FineTuneClassifier(**self._classifier_params(), freeze=self.n_frozen_)
            if hasattr(self, "n_features_in_"):
                best.n_features_in_ = self.n_features_in_
            best._set_safe_state(description["best_estimator_"],
                                 {name.removeprefix("best_estimator_."): tensor
                                  for name, tensor in tensors.items()})
            self.best_estimator_ = best
