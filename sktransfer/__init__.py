"""Transfer learning with pretrained CNNs as scikit-learn estimators.

The public names are imported when first used (PEP 562), so that the command line's
``--help`` and tools that only need one name do not wait for torch to import.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "BlockInfo": "_engine.backbones",
    "CNNFeatureExtractor": "_extraction.cnn",
    "FineTuneClassifier": "_finetuning.classifier",
    "FineTuneClassifierCV": "_finetuning.search",
    "FineTuneRegressor": "_finetuning.regressor",
    "HOGFeatures": "_extraction.hog",
    "OnnxFallbackWarning": "_engine.onnx",
    "PixelFeatures": "_extraction.pixels",
    "WeightsUnavailableError": "_engine.weights",
    "backbone_blocks": "_engine.backbones",
    "compare": "study.compare",
    "datasets": None,
    "export_onnx": "_export",
    "list_backbones": "_engine.backbones",
    "load": "_persistence",
    "plot_layer_probe": "study.probe",
    "probe_layers": "study.probe",
    "read_images": "_engine.images",
    "save": "_persistence",
    "write_report": "study.report",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'sktransfer' has no attribute {name!r}")
    module = _PUBLIC[name]
    value = (importlib.import_module(f".{name}", __name__) if module is None
             else getattr(importlib.import_module(f".{module}", __name__), name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
