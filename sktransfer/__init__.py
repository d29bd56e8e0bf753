"""Transfer learning with pretrained CNNs as scikit-learn estimators."""

from . import datasets
from ._backbones import BlockInfo, backbone_blocks, list_backbones
from ._compare import compare
from ._features import CNNFeatureExtractor
from ._finetune import FineTuneClassifier
from ._images import read_images
from ._pixels import PixelFeatures
from ._persistence import load, save
from ._report import write_report
from ._weights import WeightsUnavailableError

__version__ = "0.1.0"

__all__ = [
    "BlockInfo",
    "CNNFeatureExtractor",
    "FineTuneClassifier",
    "PixelFeatures",
    "WeightsUnavailableError",
    "backbone_blocks",
    "compare",
    "datasets",
    "list_backbones",
    "load",
    "read_images",
    "save",
    "write_report",
]
