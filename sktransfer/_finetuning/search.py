"""How deep to freeze, chosen by cross-validation, with the frozen trunk computed once."""

import time
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import _fit_context
from sklearn.metrics import accuracy_score, check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight

from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.estimator import NETWORK_PARAMETER_DOCS, with_parameter_docs
from sktransfer._engine.device import resolve_precision
from sktransfer._finetuning.classifier import FineTuneClassifier
from sktransfer._engine.images import take_rows
from sktransfer._engine.inference import Inference, block_output_shapes, inference_batch_size
from sktransfer._finetuning.base import TRAINING_PARAMETER_DOCS
from sktransfer._training.transfer_net import resolve_freeze
from sktransfer._training.trunk import FrozenTrunk

#: The parameters of the search itself; the rest are FineTuneClassifier's.
SEARCH_PARAMETERS = ("freezes", "cv", "scoring", "n_jobs", "refit")
#: Default candidate depths: everything frozen, three quarters, half, a quarter, none.
DEFAULT_FREEZES = ("all", 0.75, 0.5, 0.25, 0)


@with_parameter_docs(NETWORK_PARAMETER_DOCS, TRAINING_PARAMETER_DOCS)
class FineTuneClassifierCV(FineTuneClassifier):
    """A :class:`FineTuneClassifier` whose freeze depth is chosen by cross-validation.

    In the spirit of ``LogisticRegressionCV``: ``fit`` scores every candidate depth on
    every fold and refits the best depth on all the data. It gives the same
    ``cv_results_`` as ``GridSearchCV(FineTuneClassifier(), {"freeze": freezes})``,
    faster: without augmentation the frozen trunk is computed **once** for all depths
    and folds (one pass through the blocks yields the input of every candidate's first
    trainable block), and each fold and depth trains and scores only its trainable top.

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
    class_weight : None, "balanced" or dict, default=None
    threshold : float, default=0.5
        As in :class:`FineTuneClassifier` (multi-label ``y``).
    {image_size}
    {image_shape}
    {device}
    {random_state}
    {verbose}
    {progress}
    {memory}
    precision : {"fp32", "bf16"}, default="fp32"
    {backend}

    Attributes
    ----------
    freeze_ : int or str
        The chosen candidate, as given in ``freezes``.
    best_score_ : float
    best_index_ : int
    cv_results_ : dict
        With ``GridSearchCV``'s keys: ``params``, ``param_freeze``,
        ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time``, ... (``pandas.DataFrame`` takes it).
    n_frozen_, batchnorm_, head_init_, classes_, net_, history_, best_epoch_ : as in
        :class:`FineTuneClassifier`
        Of the model refitted on all the data at the chosen depth.

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
        "max_epochs": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, backbone="efficientnet_lite0", *, weights="imagenet",
                 freezes=DEFAULT_FREEZES, cv=5, scoring=None, n_jobs=None, refit=True, lr=1e-3,
                 layer_lr_decay=0.75, optimizer="adamw", weight_decay=1e-4, max_epochs=None,
                 batch_size=32, batchnorm="auto", head_init="auto", early_stopping="auto", patience=3, validation_fraction=0.15,
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

    # FineTuneClassifier's parameters that a search does not take: fixed here.
    warm_start = False
    checkpoint = None

    def find_lr(self, X, y, sample_weight=None, **options):
        """Not for a search: the rate depends on the depth. See :meth:`FineTuneClassifier.find_lr`.

        Raises
        ------
        TypeError
            Always, naming the two ways that work.
        """
        raise TypeError("FineTuneClassifierCV searches depths, and the learning rate depends "
                        "on the depth: run FineTuneClassifier(freeze=depth, ...).find_lr(X, y) "
                        "for one depth, or set lr='auto' here to find a rate inside every "
                        "candidate's fit.")

    @available_if(lambda self: self._refitted())
    def decision_function(self, X):
        """As :meth:`FineTuneClassifier.decision_function`, by the refitted model."""
        return super().decision_function(X)

    def _refitted(self):
        if not self.refit:
            raise AttributeError(
                f"This {type(self).__name__} was initialized with refit=False: it only scores "
                "the depths (freeze_, cv_results_). Set refit=True to predict or transform.")
        return True

    @available_if(_refitted)
    def predict(self, X):
        """As :meth:`FineTuneClassifier.predict`, by the refitted model (needs ``refit=True``)."""
        return super().predict(X)

    @available_if(_refitted)
    def predict_proba(self, X):
        """As :meth:`FineTuneClassifier.predict_proba`, by the refitted model (needs ``refit=True``)."""
        return super().predict_proba(X)

    def transform(self, X):
        """As :meth:`FineTuneClassifier.transform`, by the refitted model (needs ``refit=True``)."""
        # Not available_if: scikit-learn's set_output wraps transform and drops the check.
        self._refitted()
        return super().transform(X)

    @available_if(_refitted)
    def score(self, X, y, sample_weight=None):
        """As :meth:`FineTuneClassifier.score`, by the refitted model (needs ``refit=True``)."""
        return super().score(X, y, sample_weight=sample_weight)

    @available_if(lambda self: False)
    def partial_fit(self, X, y, classes=None):
        """Not offered: a search fits its candidates anew, as ``GridSearchCV`` does."""

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Score every depth on every fold, then refit the best depth on all the data.

        Parameters
        ----------
        X : images
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights in each fold's loss and score and in the refit's loss, as
            ``GridSearchCV`` passes them (without metadata routing).

        Returns
        -------
        self : FineTuneClassifierCV
        """
        images, device = self._check_runtime(X)
        self._encode_targets(y, len(images), warm=False)  # checks y once, for a clear error
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, np.empty(len(images)),
                                                 dtype=np.float32, ensure_non_negative=True)
        y = y.toarray() if hasattr(y, "toarray") else np.asarray(y)
        backbone = resolve_backbone(self.backbone, self.weights)
        n_blocks = len(backbone.block_names)
        candidates = self._candidates(n_blocks, backbone.block_names)
        depths = [depth for _, depth in candidates]
        shared = self._shared_inputs(images, backbone, sorted(set(depths)), device)
        splits = list(check_cv(self.cv, y, classifier=True).split(np.zeros(len(y)), y))
        self._check_folds_can_stop_early(y, splits)
        jobs = [(index, depth, fold, train, test) for fold, (train, test) in enumerate(splits)
                for index, (_, depth) in enumerate(candidates)]
        outcomes = Parallel(n_jobs=self.n_jobs)(
            delayed(self._fit_and_score)(X, y, depth, train, test, shared, sample_weight)
            for _, depth, _, train, test in jobs)
        self.cv_results_ = self._results(candidates, jobs, outcomes, len(splits))
        self.best_index_ = int(np.argmin(self.cv_results_["rank_test_score"]))
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.freeze_ = candidates[self.best_index_][0]
        self._n_frozen_chosen = depths[self.best_index_]
        if not self.refit:
            return self
        self._given_trunk_inputs = {d: t for d, t in shared.items() if d == self._n_frozen_chosen}
        try:
            return self._fit(X, y, epochs=None, warm=False,
                             sample_weight=sample_weight)
        finally:
            self.__dict__.pop("_given_trunk_inputs", None)

    def _freeze_setting(self):
        return self._n_frozen_chosen

    def _check_folds_can_stop_early(self, y, splits):
        """Each fold's training part must hold a validation part: told before any training."""
        for fold, (train, _) in enumerate(splits):
            if not self._stops_early(len(train)):
                continue
            try:
                self._validation_split(self._encode_targets(y[train], len(train), warm=True), 0)
            except ValueError as error:
                raise ValueError(
                    f"Fold {fold} trains on {len(train)} of the {len(y)} samples: {error} "
                    "(or fewer folds, cv).") from None

    def _target_state(self):
        results = {key: (list(value) if key == "param_freeze" else
                         value if key == "params" else np.asarray(value).tolist())
                   for key, value in self.cv_results_.items()}
        return {**super()._target_state(), "freeze_": self.freeze_,
                "n_frozen_chosen": self._n_frozen_chosen, "best_score_": self.best_score_,
                "best_index_": self.best_index_, "cv_results_": results}

    def _set_target_state(self, description):
        super()._set_target_state(description)
        self.freeze_, self._n_frozen_chosen = description["freeze_"], description["n_frozen_chosen"]
        self.best_score_, self.best_index_ = description["best_score_"], description["best_index_"]
        self.cv_results_ = {
            key: (np.ma.MaskedArray(value, dtype=object) if key == "param_freeze" else
                  value if key == "params" else np.asarray(value))
            for key, value in description["cv_results_"].items()}

    def _candidates(self, n_blocks, block_names):
        """(as given, number of frozen blocks) for each candidate, in order."""
        candidates = []
        for freeze in self.freezes:
            if isinstance(freeze, float) and 0 <= freeze <= 1:
                depth = int(round(freeze * n_blocks))
            else:
                depth = resolve_freeze(freeze, n_blocks, block_names)
            candidates.append((freeze, depth))
        if not candidates:
            raise ValueError("freezes is empty: give at least one candidate depth.")
        return candidates

    def _shared_inputs(self, images, backbone, depths, device):
        """Every candidate's trunk inputs for all images, from one pass (None: not shared)."""
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

    def _fit_and_score(self, X, y, depth, train, test, shared, sample_weight):
        params = {k: v for k, v in self.get_params().items()
                  if k not in SEARCH_PARAMETERS}
        model = FineTuneClassifier(**params, freeze=depth)
        model._given_trunk_inputs = {depth: shared[depth][train]} if depth in shared else {}
        start = time.perf_counter()
        weight = {} if sample_weight is None else {"sample_weight": sample_weight[train]}
        model.fit(take_rows(X, train), y[train], **weight)
        model.__dict__.pop("_given_trunk_inputs", None)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        test_weight = {} if sample_weight is None else {"sample_weight": sample_weight[test]}
        if self.scoring is None and depth in shared and self.tta is None:
            logits = model._head_outputs_from_trunk(shared[depth][test], depth)
            score = float(accuracy_score(y[test], model._labels(logits), **test_weight))
        else:
            score = float(check_scoring(model, self.scoring)(model, take_rows(X, test), y[test],
                                                             **test_weight))
        return fit_time, time.perf_counter() - start, score

    def _results(self, candidates, jobs, outcomes, n_splits):
        from scipy.stats import rankdata

        scores = np.empty((len(candidates), n_splits))
        fit_times, score_times = np.empty_like(scores), np.empty_like(scores)
        for (index, _, fold, _, _), (fit_time, score_time, score) in zip(jobs, outcomes):
            scores[index, fold], fit_times[index, fold], score_times[index, fold] = \
                score, fit_time, score_time
        results = {"params": [{"freeze": freeze} for freeze, _ in candidates],
                   "param_freeze": np.ma.MaskedArray([f for f, _ in candidates], dtype=object)}
        for fold in range(n_splits):
            results[f"split{fold}_test_score"] = scores[:, fold]
        results.update(mean_test_score=scores.mean(1), std_test_score=scores.std(1),
                       rank_test_score=rankdata(-scores.mean(1), method="min").astype(np.int32),
                       mean_fit_time=fit_times.mean(1), std_fit_time=fit_times.std(1),
                       mean_score_time=score_times.mean(1), std_score_time=score_times.std(1))
        return results
