"""ONNX export for deployment: a fitted model as one file that runs without torch.

The network part (normalisation, the BatchNorm-folded blocks, pooling and the fitted
head) is exported by torch; scikit-learn steps after it in a Pipeline are converted by
skl2onnx, and the two graphs are joined with ``onnx.compose``.
"""

import copy

import numpy as np
import torch
from sklearn.base import is_classifier, is_regressor
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from torch import nn

from sktransfer._engine.estimator import NetworkEstimator
from sktransfer._engine.inference import TTAViews, inference_blocks, run_blocks
from sktransfer._engine.io import atomic_path
from sktransfer._engine.onnx import OPSET, export_bytes
from sktransfer._engine.preprocessing import to_channels

#: The ai.onnx.ml operator set of converted scikit-learn steps.
ML_OPSET = 3
#: The network's output in a Pipeline's file, where scikit-learn steps take it.
NETWORK_OUTPUT = "network_features"


def export_onnx(model, path):
    """Write a fitted model as an ONNX file that takes uint8 images.

    The file runs in any ONNX runtime, without torch or sktransfer. Its input
    ``images`` is a uint8 array ``(n, H, W, 3)`` of the fitted input size
    (``preprocessing_.input_size``: resize images to it first); the normalisation is
    inside. Its outputs are what the model gives in Python:

    - ``features`` for a :class:`CNNFeatureExtractor` or a Pipeline ending in a
      transformer (``transform``);
    - ``label`` and ``probabilities`` for a classifier (``predict``, ``predict_proba``);
    - ``prediction`` for a regressor (``predict``).

    Parameters
    ----------
    model : estimator
        A fitted :class:`CNNFeatureExtractor`, :class:`FineTuneClassifier` or
        :class:`FineTuneRegressor`, or a fitted ``Pipeline`` of one of those followed
        by scikit-learn steps that skl2onnx converts.
    path : str or path
        The ``.onnx`` file written (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import numpy as np, onnxruntime
    >>> from sktransfer import CNNFeatureExtractor, export_onnx
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    >>> extractor = CNNFeatureExtractor(image_size=32).fit(images)
    >>> path = export_onnx(extractor, getfixture("tmp_path") / "extractor.onnx")
    >>> session = onnxruntime.InferenceSession(path)
    >>> session.run(["features"], {"images": images})[0].shape
    (2, 1280)
    """
    import onnx

    network, tail = _split(model)
    graph = onnx.load_from_string(_network_graph(network, features_only=bool(tail)))
    if tail:
        graph = _join(graph, _tail_graph(tail, len(network.get_feature_names_out())))
    onnx.checker.check_model(graph)
    with atomic_path(path) as temporary:
        onnx.save_model(graph, temporary)
    return path


def _split(model):
    """The network estimator and the fitted scikit-learn steps after it.

    A fitted search that refits (``FineTuneClassifierCV``, ``GridSearchCV``) stands for
    the network it refitted, its ``best_estimator_``.
    """
    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    steps = [(name, step) for name, step in steps if step not in (None, "passthrough")]
    first = steps[0][1] if steps else None
    network = getattr(first, "best_estimator_", first)
    if not isinstance(network, NetworkEstimator):
        raise TypeError(
            f"export_onnx takes a fitted CNNFeatureExtractor, FineTuneClassifier or "
            f"FineTuneRegressor, a search refitted on one (refit=True), or a Pipeline that "
            f"starts with one; got {type(model).__name__} starting with "
            f"{type(first).__name__ if steps else 'nothing'}.")
    for _, step in steps:
        check_is_fitted(step)
    return network, steps[1:]


class _DeployedNetwork(nn.Module):
    """uint8 images (n, H, W, 3) in; the estimator's outputs out, as torch computes them."""

    def __init__(self, estimator, *, features_only):
        super().__init__()
        self.preprocessing = estimator.preprocessing_
        self.blocks = inference_blocks(estimator._fitted_blocks(), torch.device("cpu"))
        fine_tuned = hasattr(estimator, "net_")
        self.layers = [estimator.n_blocks_ - 1] if fine_tuned else list(estimator.layers_)
        self.pooling = "avg" if fine_tuned else estimator.pooling
        tta = getattr(estimator, "tta", None)
        self.views = TTAViews(tta) if tta is not None and not features_only else None
        if self.views is not None and len(self.views) > 2:
            raise ValueError(
                f"tta={tta!r}: the light views (zoom and shift) do not export to ONNX. Set "
                "tta=None or 'flip' on the model to export it with those views left out.")
        self.head = (None if features_only or not fine_tuned
                     else copy.deepcopy(estimator.net_.module_.head).cpu())
        self.features_only = features_only
        self.estimator = estimator

    def forward(self, images):
        x = images.permute(0, 3, 1, 2).float() / 255
        x = to_channels(x, self.preprocessing.channels)  # luminance for 1, as in fit
        if self.preprocessing.mean is not None:
            x = ((x - torch.tensor(self.preprocessing.mean).view(1, -1, 1, 1))
                 / torch.tensor(self.preprocessing.std).view(1, -1, 1, 1))
        if self.views is not None:
            x = self.views(x)
        features = run_blocks(self.blocks, x, self.layers, self.pooling)
        if self.views is not None:
            features = features.unflatten(0, (len(self.views), -1)).mean(0)
        if self.head is None:
            return features
        return self._predictions(self.head(features))

    def _predictions(self, outputs):
        estimator = self.estimator
        if is_regressor(estimator):
            scale = torch.as_tensor(estimator.target_scale_, dtype=torch.float32)
            predicted = outputs * scale + torch.as_tensor(estimator.target_mean_,
                                                          dtype=torch.float32)
            return predicted[:, 0] if estimator._single_target else predicted
        if estimator._multilabel:
            probabilities = torch.sigmoid(outputs)
            return (probabilities >= estimator.threshold).long(), probabilities
        return outputs.argmax(1), torch.softmax(outputs, 1)

    def output_names(self):
        if self.head is None:
            return [NETWORK_OUTPUT if self.features_only else "features"]
        if is_regressor(self.estimator):
            return ["prediction"]
        return ["label" if self.estimator._multilabel else "label_index", "probabilities"]


def _network_graph(estimator, *, features_only):
    """ONNX bytes of the network part: the features, or the estimator's predictions."""
    import onnx

    module = _DeployedNetwork(estimator, features_only=features_only).eval()
    height, width = estimator.preprocessing_.input_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    names = module.output_names()
    try:
        exported = export_bytes(module, example, input_names=["images"], output_names=names)
    except Exception as error:  # noqa: BLE001 - the exporter fails in many ways
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{type(estimator).__name__}'s network cannot be exported to "
                         f"ONNX ({type(error).__name__}: {reason}).") from error
    if "label_index" not in names:
        return exported
    graph = onnx.load_from_string(exported)
    _look_up_labels(graph, np.asarray(estimator.classes_))
    return graph.SerializeToString()


def _look_up_labels(graph, classes):
    """Replace the output ``label_index`` by ``label``: ``classes[label_index]``, looked
    up in the graph (classes may be strings)."""
    from onnx import helper, numpy_helper

    if classes.dtype.kind in "OUS":
        classes = classes.astype(object)
    graph.graph.initializer.append(numpy_helper.from_array(classes, "classes"))
    graph.graph.node.append(helper.make_node("Gather", ["classes", "label_index"], ["label"]))
    index = next(output for output in graph.graph.output if output.name == "label_index")
    graph.graph.output.remove(index)
    element = helper.np_dtype_to_tensor_dtype(classes.dtype)
    graph.graph.output.insert(0, helper.make_tensor_value_info("label", element, ["batch"]))


def _tail_graph(steps, n_features):
    """The scikit-learn steps after the network, converted by skl2onnx; its input is
    ``network_features``, its outputs named as :func:`export_onnx` says."""
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    last = steps[-1][1]
    options = {id(last): {"zipmap": False}} if is_classifier(last) else None
    try:
        tail = convert_sklearn(
            Pipeline(steps), initial_types=[(NETWORK_OUTPUT, FloatTensorType([None, n_features]))],
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET}, options=options)
    except Exception as error:  # noqa: BLE001 - skl2onnx fails in many ways
        named = [f"{name!r} ({type(step).__name__})" for name, step in steps
                 if type(step).__name__ in str(error)] or ["after the network"]
        raise TypeError(
            f"skl2onnx cannot convert the Pipeline step {' or '.join(named)} to ONNX "
            f"({type(error).__name__}: {str(error).strip()[:300]}). Leave that step out of "
            "the Pipeline to export it.") from error
    names = (["label", "probabilities"] if is_classifier(last)
             else ["prediction"] if is_regressor(last) else ["features"])
    if is_regressor(last) and np.ndim(last.predict(_tail_input(steps[:-1], n_features))) == 1:
        _flatten_output(tail)  # skl2onnx gives (n, 1) where predict gives (n,)
    for output, name in zip(tail.graph.output, names):
        if output.name != name:
            tail.graph.node.append(helper.make_node("Identity", [output.name], [name]))
            output.name = name
    return tail


def _tail_input(steps, n_features):
    """What the last step gets for one image of zero features."""
    X = np.zeros((1, n_features), dtype=np.float32)
    return Pipeline(steps).transform(X) if steps else X


def _flatten_output(graph):
    """Reshape the graph's one output to 1-D."""
    from onnx import TensorProto, helper, numpy_helper

    output = graph.graph.output[0]
    shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape")
    graph.graph.initializer.append(shape)
    graph.graph.node.append(helper.make_node("Reshape", [output.name, "flat_shape"],
                                             [output.name + "_flat"]))
    graph.graph.output.remove(output)
    graph.graph.output.append(helper.make_tensor_value_info(output.name + "_flat",
                                                            TensorProto.FLOAT, [None]))


def _join(network, tail):
    """One graph: the network's features into the tail's steps."""
    from onnx import compose

    network.ir_version = tail.ir_version = max(network.ir_version, tail.ir_version)
    return compose.merge_models(network, tail, io_map=[(NETWORK_OUTPUT, NETWORK_OUTPUT)])
