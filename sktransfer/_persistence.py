"""Safe model files: safetensors weights plus a JSON description, never a pickle.

``save(model, path)`` writes one ``.safetensors`` file: the arrays (network weights, a
linear model's coefficients, ...) as tensors, and in its metadata the estimators'
parameters and fitted settings as JSON. ``load(path)`` rebuilds the model from them
without unpickling anything, so a file from an untrusted source cannot run code: only
allow-listed classes are built, and their state is plain numbers, strings and arrays
(the approach of skops). joblib and pickle files can run code: load those from trusted
sources only.
"""

import os

import numpy as np

from sktransfer._engine.io import read_tensors, write_tensors

#: scikit-learn estimators a safe file may hold: fitted state of plain arrays and numbers.
SAFE_SKLEARN_CLASSES = {
    "sklearn.compose.TransformedTargetRegressor",
    "sklearn.decomposition.PCA",
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.LogisticRegression",
    "sklearn.linear_model.Ridge",
    "sklearn.linear_model.RidgeCV",
    "sklearn.linear_model.RidgeClassifier",
    "sklearn.linear_model.SGDClassifier",
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.multioutput.MultiOutputRegressor",
    "sklearn.preprocessing.LabelBinarizer",
    "sklearn.preprocessing.MaxAbsScaler",
    "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.Normalizer",
    "sklearn.preprocessing.StandardScaler",
    "sklearn.svm.LinearSVC",
    "sklearn.svm.LinearSVR",
    "sklearn.svm.SVC",
    "sklearn.svm.SVR",
}
SKTRANSFER_CLASSES = ("CNNFeatureExtractor", "FineTuneClassifier", "FineTuneClassifierCV",
                      "FineTuneRegressor", "HOGFeatures", "PixelFeatures")


def save(model, path):
    """Save a fitted model without pickle: safetensors weights and a JSON description.

    Parameters
    ----------
    model : estimator or Pipeline
        Fitted: an sktransfer estimator (``SKTRANSFER_CLASSES``)
        with a named backbone, a scikit-learn estimator among ``SAFE_SKLEARN_CLASSES``
        (scalers, PCA, linear models, SVMs), or a ``Pipeline`` of these. Anything else
        is refused: save it with joblib, and load such files from trusted sources only.
    path : str or PathLike
        Where to write; ``.safetensors`` by convention.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import numpy as np, sktransfer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> X, y = np.zeros((4, 8, 8), dtype=np.uint8), [0, 1, 0, 1]
    >>> X[1::2] = 255
    >>> model = make_pipeline(sktransfer.CNNFeatureExtractor(image_size=32),
    ...                       LogisticRegression()).fit(X, y)
    >>> sktransfer.save(model, "model.safetensors")  # doctest: +SKIP
    >>> sktransfer.load("model.safetensors").predict(X)  # doctest: +SKIP
    array([0, 1, 0, 1])
    """
    tensors = {}
    description = _describe(model, "", tensors)
    write_tensors(path, tensors, description)


#: Parameters that name places the program writes to: a file does not choose them.
WRITE_LOCATIONS = ("memory", "checkpoint")


def load(path):
    """Load a model written by :func:`save`; nothing is unpickled, no code runs.

    A file never chooses where the program writes: the loaded estimators have
    ``memory=None`` and ``checkpoint=None`` whatever the saved ones had. Pass them
    again if you want them, e.g. ``model.set_params(memory="cache/")`` (or
    ``set_params(<step>__memory=...)`` on a Pipeline).

    Parameters
    ----------
    path : str or PathLike
        A file written by :func:`save`.

    Returns
    -------
    estimator or Pipeline
        Fitted, predicting as the saved one did.

    See Also
    --------
    save : Write such a file.
    """
    tensors, description = read_tensors(path)
    return _rebuild(description, tensors, path)


def _describe(model, prefix, tensors):
    """The JSON description of ``model``; its arrays go into ``tensors`` under ``prefix``."""
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    if isinstance(model, Pipeline):
        steps = [[name, None if step in (None, "passthrough") else
                  _describe(step, f"{prefix}{index}.", tensors)]
                 for index, (name, step) in enumerate(model.steps)]
        return {"class": "Pipeline", "steps": steps}
    if type(model).__name__ in SKTRANSFER_CLASSES and hasattr(model, "_get_safe_state"):
        check_is_fitted(model)
        description, own = model._get_safe_state()
        tensors.update({prefix + name: tensor for name, tensor in own.items()})
        if hasattr(model, "n_features_in_"):
            description["n_features_in_"] = int(model.n_features_in_)
        return {"class": type(model).__name__, "params": _json_params(model), **description}
    own = {}  # tensor names relative to the estimator, as _rebuild sees them
    description = _describe_sklearn(model, "", own, fitted=True)
    tensors.update({prefix + name: tensor for name, tensor in own.items()})
    return description


def _describe_sklearn(model, prefix, tensors, *, fitted):
    """An allow-listed scikit-learn estimator: its parameters and, if ``fitted``, state."""
    from sklearn.utils.validation import check_is_fitted

    name = _public_name(type(model))
    if name not in SAFE_SKLEARN_CLASSES:
        raise TypeError(
            f"save cannot store a {type(model).__name__} safely: it stores sktransfer's "
            f"estimators, Pipelines and {', '.join(sorted(n.rsplit('.', 1)[1] for n in SAFE_SKLEARN_CLASSES))}. "
            "Use joblib.dump for other models, and load such files from trusted sources only."
        )
    params = model.get_params(deep=False)
    description = {"class": name, "params": {
        key: _encode(value, f"{prefix}params.{key}", tensors, key)
        for key, value in params.items()}}
    if fitted:
        check_is_fitted(model)
        description["fitted"] = {
            key: _encode(value, f"{prefix}{key}", tensors, key)
            for key, value in vars(model).items() if key not in params}
    return description


def _rebuild(description, tensors, path):
    from sklearn.pipeline import Pipeline

    kind = description.get("class")
    if kind == "Pipeline":
        return Pipeline([
            (name, "passthrough" if node is None else
             _rebuild(node, _under(tensors, f"{index}."), path))
            for index, (name, node) in enumerate(description["steps"])])
    if kind in SKTRANSFER_CLASSES:
        import sktransfer

        model = getattr(sktransfer, kind)(**_params_from_json(description["params"]))
        if "n_features_in_" in description:
            model.n_features_in_ = description["n_features_in_"]
        model._set_safe_state(description, tensors)
        return model
    if kind in SAFE_SKLEARN_CLASSES:
        import importlib

        module, name = kind.rsplit(".", 1)
        model = getattr(importlib.import_module(module), name)(
            **{key: _decode(value, tensors, path) for key, value in description["params"].items()})
        for key, value in description.get("fitted", {}).items():
            setattr(model, key, _decode(value, tensors, path))
        return model
    raise ValueError(f"'{path}' holds an unknown estimator {kind!r}; it was not written by "
                     "this version of sktransfer.save.")


def _under(tensors, prefix):
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def _public_name(cls):
    """``sklearn.linear_model.LogisticRegression`` for the class in ``..._logistic``."""
    parts = cls.__module__.split(".")
    public = ".".join(part for part in parts if not part.startswith("_"))
    return f"{public}.{cls.__qualname__}"


def _encode(value, key, tensors, attribute):
    """Plain JSON, a reference to a tensor for numeric arrays, or an allow-listed
    estimator's description; refuse anything else."""
    import torch
    from sklearn.base import BaseEstimator

    if isinstance(value, BaseEstimator):
        fitted = attribute.endswith("_")  # estimators_, regressor_: else a parameter
        return {"estimator": _describe_sklearn(value, f"{key}.", tensors, fitted=fitted)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return {"scalar": value.dtype.str, "value": value.item()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        tensors[key] = torch.from_numpy(value.copy())  # own memory: safetensors refuses views
        return {"tensor": key}
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO" and all(
            isinstance(item, (str, int, float)) for item in value.ravel().tolist()):
        return {"array": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{key}.{i}", tensors, attribute) for i, item in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):  # class_weight: keys may be numbers
        return {"dict": [[_encode(k, key, tensors, attribute), _encode(v, key, tensors, attribute)]
                         for k, v in value.items()]}
    raise TypeError(
        f"The fitted attribute {attribute} ({type(value).__name__}) cannot be stored in a "
        "safe file. Use joblib.dump for this model, and load it from trusted sources only."
    )


def _decode(value, tensors, path):
    if isinstance(value, list):
        return [_decode(item, tensors, path) for item in value]
    if not isinstance(value, dict):
        return value
    if "estimator" in value:
        return _rebuild(value["estimator"], tensors, path)
    if "tensor" in value:
        return tensors[value["tensor"]].numpy()
    if "scalar" in value:
        return np.dtype(value["scalar"]).type(value["value"])
    if "array" in value:
        return np.asarray(value["array"], dtype=np.dtype(value["dtype"]))
    if "tuple" in value:
        return tuple(_decode(item, tensors, path) for item in value["tuple"])
    if "dict" in value:
        return {_decode(k, tensors, path): _decode(v, tensors, path) for k, v in value["dict"]}
    raise ValueError(f"Unknown entry {sorted(value)} in a model file.")


def _json_params(model):
    params = model.get_params()
    for name, value in params.items():
        if name == "class_weight" and isinstance(value, dict):
            params[name] = {"__pairs__": [[k.item() if hasattr(k, "item") else k, v]
                                          for k, v in value.items()]}
        elif name == "memory" and value is not None and not isinstance(value, (str, os.PathLike)):
            params[name] = getattr(value, "location", None)
        elif isinstance(value, os.PathLike):
            params[name] = os.fspath(value)
        elif not isinstance(value, (str, int, float, bool, type(None), list, tuple)):
            raise TypeError(
                f"{name} (a {type(value).__name__}) cannot be stored in a safe model file, "
                "which holds names and numbers only. Use a named backbone and string "
                "options, or joblib.dump for trusted use."
            )
    return params


def _params_from_json(params):
    params = dict(params)
    params.update({name: None for name in WRITE_LOCATIONS if name in params})
    if isinstance(params.get("class_weight"), dict) and "__pairs__" in params["class_weight"]:
        params["class_weight"] = {k: v for k, v in params["class_weight"]["__pairs__"]}
    for name in ("image_size", "image_shape"):
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    return params

