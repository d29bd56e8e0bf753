"""Safe model files: safetensors weights plus a JSON description, never a pickle.

``save(model, path)`` writes one ``.safetensors`` file: the network's tensors, and in its
metadata the estimator's parameters, classes and fitted settings as JSON. ``load(path)``
rebuilds the estimator from them without unpickling anything, so a file from an untrusted
source cannot run code. (joblib and pickle files can: load those from trusted sources only.)
"""

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

FORMAT = "sktransfer-model"
VERSION = 1


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash mid-write leaves the old file (or none), never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_tensors(path, tensors, description):
    """Atomically write ``tensors`` and a JSON ``description`` as one safetensors file."""
    from safetensors.torch import save_file

    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "sktransfer": json.dumps(description)}
    with atomic_path(path) as temporary:
        save_file(plain, temporary, metadata=metadata)


def read_tensors(path):
    """Tensors and JSON description of a file written by :func:`write_tensors`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: '{path}'.")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"'{path}' is not a safetensors file ({error}).") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"'{path}' is a safetensors file but not an sktransfer model "
                         "(no sktransfer metadata); was it written by sktransfer.save?")
    return tensors, json.loads(metadata["sktransfer"])


def save(model, path):
    """Save a fitted CNNFeatureExtractor or FineTuneClassifier without pickle.

    Parameters
    ----------
    model : CNNFeatureExtractor or FineTuneClassifier
        Fitted, with a named backbone (a module backbone has no name to rebuild from:
        use joblib for those, and load such files from trusted sources only).
    path : str or PathLike
        Where to write; ``.safetensors`` by convention.

    Examples
    --------
    >>> import numpy as np, sktransfer
    >>> X = np.zeros((2, 8, 8), dtype=np.uint8)
    >>> model = sktransfer.CNNFeatureExtractor(image_size=32).fit(X)
    >>> sktransfer.save(model, "features.safetensors")  # doctest: +SKIP
    >>> sktransfer.load("features.safetensors").transform(X).shape  # doctest: +SKIP
    (2, 1280)
    """
    from sklearn.utils.validation import check_is_fitted

    from ._features import CNNFeatureExtractor
    from ._finetune import FineTuneClassifier

    if not isinstance(model, (CNNFeatureExtractor, FineTuneClassifier)):
        raise TypeError(f"save takes a CNNFeatureExtractor or FineTuneClassifier, got "
                        f"{type(model).__name__}; use joblib for other estimators.")
    check_is_fitted(model)
    description = {"class": type(model).__name__, "params": _json_params(model),
                   "preprocessing": asdict(model.preprocessing_)}
    if hasattr(model, "n_features_in_"):
        description["n_features_in_"] = int(model.n_features_in_)
    if isinstance(model, CNNFeatureExtractor):
        description["layers_"] = model.layers_
        tensors = model.backbone_.blocks.state_dict()
    else:
        description.update(
            classes=model.classes_.tolist(), classes_dtype=model.classes_.dtype.str,
            n_frozen_=model.n_frozen_, best_epoch_=model.best_epoch_,
            history=[{k: v for k, v in epoch.items() if k != "batches"} for epoch in model.history_],
        )
        tensors = model.net_.module_.state_dict()
    write_tensors(path, tensors, description)


def load(path):
    """Load a model written by :func:`save`; nothing is unpickled.

    Returns
    -------
    CNNFeatureExtractor or FineTuneClassifier
        Fitted, predicting as the saved one did.
    """
    from ._backbones import resolve_backbone
    from ._features import CNNFeatureExtractor
    from ._finetune import FineTuneClassifier
    from ._preprocessing import Preprocessing

    tensors, description = read_tensors(path)
    classes = {"CNNFeatureExtractor": CNNFeatureExtractor, "FineTuneClassifier": FineTuneClassifier}
    if description.get("class") not in classes:
        raise ValueError(f"'{path}' holds an unknown estimator {description.get('class')!r}.")
    params = _params_from_json(description["params"])
    model = classes[description["class"]](**params)
    backbone = resolve_backbone(params["backbone"], weights=None)
    preprocessing = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in description["preprocessing"].items()})
    if "n_features_in_" in description:
        model.n_features_in_ = description["n_features_in_"]
    if isinstance(model, CNNFeatureExtractor):
        backbone.blocks.load_state_dict(tensors)
        model.backbone_, model.preprocessing_ = backbone, preprocessing
        model.layers_ = description["layers_"]
        model._feature_names_out = model._probe_feature_names()
        model._make_inference_blocks()
        return model
    model.classes_ = np.asarray(description["classes"], dtype=np.dtype(description["classes_dtype"]))
    model._restore(backbone, preprocessing, tensors, history=description["history"],
                   best_epoch=description["best_epoch_"])
    return model


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
            raise ValueError(
                f"{name} (a {type(value).__name__}) cannot be stored in a safe model file, "
                "which holds names and numbers only. Use a named backbone and string "
                "options, or joblib.dump for trusted use."
            )
    return params


def _params_from_json(params):
    params = dict(params)
    if isinstance(params.get("class_weight"), dict) and "__pairs__" in params["class_weight"]:
        params["class_weight"] = {k: v for k, v in params["class_weight"]["__pairs__"]}
    for name in ("image_size", "image_shape"):
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    return params

