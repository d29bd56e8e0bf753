"""A network's new head fit exactly, by a convex solver, before any gradient step (LP-FT).

A random head's large early gradients distort pretrained features (Kumar et al.,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
ICLR 2022). Fitting the head first on the frozen network's pooled features, as a
linear probe would, starts fine-tuning from the probe's solution: with every block
frozen it *is* the probe.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from threadpoolctl import threadpool_limits

#: Ridge penalties chosen among by efficient leave-one-out, on the scaled features.
RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 8))
#: Inverse L2 penalties of the logistic probe, chosen by an inner CV on the log loss.
#: Short, and no weaker than the comparison's own logistic regression (C=1): the
#: weakest penalties take the most solver iterations on features wider than the data.
LOGISTIC_CS = (0.01, 0.1, 1.0)
#: Folds of that inner CV (fewer where a class has fewer images).
INNER_FOLDS = 3
#: A class or tag the training part never shows gets this logit: never predicted.
ABSENT_LOGIT = -20.0


def fit_linear_head(features, y, kind, *, n_outputs, sample_weight=None, class_weight=None,
                    random_state=0):
    """Weight ``(n_outputs, n_features)`` and bias ``(n_outputs,)`` of the best linear head.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        The frozen network's pooled features of the training part.
    y : ndarray
        ``"classes"``: class indices in ``range(n_outputs)``; ``"tags"``: a 0/1
        matrix; ``"quantities"``: standardized targets, one column per output.
    kind : {"classes", "tags", "quantities"}
        Multinomial logistic regression, one logistic regression per tag, or ridge
        regression; each on the centred features scaled by one common factor (see
        :func:`scale_features`), its penalty chosen by inner CV.
    sample_weight : ndarray of shape (n_samples,), default=None
    class_weight : dict of int to float, default=None
        Loss weight of each class index (classes only).

    Returns
    -------
    weight, bias : ndarray
        The head on the raw features (the scaling folded in).
    """
    # One BLAS thread: the solvers' products are small, and a multithreaded BLAS next
    # to torch's OpenMP threads spent 45x longer on them (0.96 s against 0.02 s for one
    # logistic regression of 150 x 1280 features, 2-core EPYC).
    with threadpool_limits(1, user_api="blas"):
        return _fit_linear_head(features, y, kind, n_outputs, sample_weight, class_weight,
                                random_state)


def _fit_linear_head(features, y, kind, n_outputs, sample_weight, class_weight, random_state):
    mean, scale = scale_features(features, sample_weight)
    scaled = (features - mean) / scale
    if kind == "quantities":
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaled, y, sample_weight=sample_weight)
        coef, intercept = model.coef_.reshape(n_outputs, -1), np.reshape(model.intercept_, -1)
    elif kind == "classes":
        coef, intercept = _logistic(scaled, y, n_outputs, sample_weight, class_weight,
                                    random_state)
    else:
        heads = [_logistic(scaled, y[:, tag].astype(int), 2, sample_weight, None,
                           random_state)
                 for tag in range(n_outputs)]
        coef = np.stack([c[1] - c[0] for c, _ in heads])  # sigmoid(z) = softmax([0, z])[1]
        intercept = np.array([b[1] - b[0] for _, b in heads])
    weight = coef / scale
    return weight.astype(np.float32), (intercept - weight @ mean).astype(np.float32)


def scale_features(features, sample_weight=None):
    """Per-feature means and one common scale: the root mean square of the centred features.

    Not per-feature standardization: on a few dozen images many pooled features are
    nearly constant, and dividing by their tiny spread turns a test image's ordinary
    value into thousands of standard deviations. Measured on the few-shot sets of
    benchmarks/bench_small_data.py, logistic regression on per-feature standardized
    features scored 0.944 on the textures and 0.963 on the faces, on commonly scaled
    ones 0.991 and 0.975; ridge's R² on the brick-share patches fell to -5.5 on two of
    three splits (0.87-0.89 commonly scaled). One common factor only sets the penalty's
    scale, as the network's own head sees the features.
    """
    mean = np.average(features, axis=0, weights=sample_weight)
    spread = np.average(np.square(features - mean).mean(axis=1), weights=sample_weight)
    return mean, float(np.sqrt(spread)) or 1.0


def _logistic(features, y, n_outputs, sample_weight, class_weight, random_state):
    """Softmax logits (one row per output) of an L2 logistic regression of ``y``."""
    present, counts = np.unique(y, return_counts=True)
    coef = np.zeros((n_outputs, features.shape[1]))
    intercept = np.full(n_outputs, ABSENT_LOGIT)
    if len(present) == 1:  # one class or a constant tag: it alone is predicted
        intercept[present[0]] = 0.0
        return coef, intercept
    folds = min(INNER_FOLDS, int(counts.min()))
    model = LogisticRegression(class_weight=class_weight, max_iter=1000)
    if folds >= 2:
        model = GridSearchCV(model, {"C": LOGISTIC_CS}, scoring="neg_log_loss", cv=StratifiedKFold(
            folds, shuffle=True, random_state=random_state))
    model.fit(features, y, sample_weight=sample_weight)
    model = getattr(model, "best_estimator_", model)
    if len(present) == 2:  # one row z for the second class: softmax([-z/2, z/2])
        rows = np.vstack([-model.coef_ / 2, model.coef_ / 2])
        biases = np.r_[-model.intercept_ / 2, model.intercept_ / 2]
    else:
        rows, biases = model.coef_, model.intercept_
    coef[present], intercept[present] = rows, biases
    return coef, intercept
