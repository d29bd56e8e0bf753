"""One place that resolves a backbone into (blocks, preprocessing).

A *block* is the unit that ``layer`` (feature extraction) and ``freeze`` (fine-tuning)
count in: the stem, each stage, and the final head-less convolution where the
architecture has one. Running the blocks in order gives the network's last feature
map; the classifier is never part of them.

A block outputs a feature map ``(n, C, H, W)`` (channels first, whatever the layout inside)
or, in vision transformers, a token sequence ``(n, 1 + patches, dim)``, class token first.
"""

import difflib
import math
from collections import OrderedDict
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import torch
from torch import nn

from sktransfer._engine.blocks import split_blocks
from sktransfer._engine.device import image_size_errors, seeded
from sktransfer._engine.preprocessing import Preprocessing
from sktransfer._engine.weights import (
    download_torchvision_state_dict,
    embedded_efficientnet_lite0_file,
    is_weights_path,
    load_by_order,
    load_state_dict_into,
    load_weights_file,
    timm_cached_weights,
    timm_weights_unavailable,
)

EMBEDDED_BACKBONES = ("efficientnet_lite0",)
TIMM_PREFIX = "timm/"

#: torchvision model families (the modules of their builders) that ``split_blocks`` cuts
#: into blocks; ``list_backbones("torchvision")`` lists only their models.
TORCHVISION_FAMILIES = (
    "alexnet", "convnext", "densenet", "efficientnet", "googlenet", "inception", "maxvit",
    "mnasnet", "mobilenetv2", "mobilenetv3", "regnet", "resnet", "shufflenetv2",
    "squeezenet", "swin_transformer", "vgg", "vision_transformer",
)
KNOWN_ARCHITECTURES = (
    "ResNet, EfficientNet, MobileNet, ConvNeXt, RegNet, VGG, DenseNet, Swin, ViT, MaxViT, "
    "GoogLeNet, Inception v3, ShuffleNet v2-like"
)


class BlockInfo(NamedTuple):
    """One block of a backbone: its index, name, output channels and total stride."""

    index: int
    name: str
    channels: int
    reduction: int


@dataclass
class Backbone:
    """A network cut into ordered blocks, with the preprocessing its weights expect.

    Attributes
    ----------
    name : str
        Name the backbone was resolved from.
    blocks : torch.nn.Sequential
        The blocks in order; ``blocks[i]`` consumes the output of ``blocks[i - 1]``.
    block_names : tuple of str
        A readable name for each block (``"stem"``, ``"layer3"``, ``"blocks.4"``, ...).
    preprocessing : Preprocessing
        Input size, mean, std and interpolation from the weights' metadata.
    """

    name: str
    blocks: nn.Sequential
    block_names: tuple
    preprocessing: Preprocessing

    def block_index(self, layer):
        """Resolve one ``layer`` (int, negative from the top, or block name) to an index."""
        n_blocks = len(self.block_names)
        if isinstance(layer, Integral) and not isinstance(layer, bool):
            if -n_blocks <= layer < n_blocks:
                return int(layer) % n_blocks
        elif isinstance(layer, str) and layer in self.block_names:
            return self.block_names.index(layer)
        valid = ", ".join(f"{i}={name!r}" for i, name in enumerate(self.block_names))
        raise ValueError(
            f"layer={layer!r} is not a block of backbone {self.name!r}, which has "
            f"{n_blocks} blocks: {valid}. Use an index (negative counts from the top) or "
            "a name; sktransfer.backbone_blocks() lists them with channels and stride."
        )

    def describe(self, image_size=None):
        """List the blocks with their output channels and stride (one dummy forward).

        For a token sequence the channels are the token width and the stride is the
        patch size.
        """
        height, width = image_size or self.preprocessing.input_size
        x = torch.zeros(1, self.preprocessing.channels, height, width)
        infos = []
        was_training = self.blocks.training
        self.blocks.eval()
        try:
            with torch.inference_mode(), image_size_errors((height, width)):
                for index, (name, block) in enumerate(zip(self.block_names, self.blocks)):
                    x = block(x)
                    infos.append(BlockInfo(index, name, *_channels_and_reduction(x, height, width)))
        finally:
            self.blocks.train(was_training)
        return infos


def _channels_and_reduction(output, height, width):
    """Channels and total stride of one block's output for a ``height x width`` input."""
    if output.ndim == 4:  # (n, C, H, W)
        return int(output.shape[1]), round(width / output.shape[-1])
    if output.ndim == 3:  # (n, 1 + patches, dim): one class token, then the patches
        patches = output.shape[1] - 1
        return int(output.shape[2]), round(math.sqrt(height * width / patches)) if patches else 0
    return int(output.shape[1]), 0


def weights_digest(module):
    """A digest of a module's parameters and buffers, for cache keys."""
    import joblib

    return joblib.hash({name: tensor.detach().cpu().numpy().tobytes()  # bytes: layout-free
                        for name, tensor in module.state_dict().items()})


def list_backbones(source="all"):
    """List the names accepted as ``backbone``.

    Parameters
    ----------
    source : {"all", "embedded", "torchvision", "timm"}, default="all"
        ``"embedded"``: backbones whose weights ship with the package (offline);
        ``"torchvision"``: its classification models of the families sktransfer cuts
        into blocks; ``"timm"``: timm's, prefixed ``"timm/"``; ``"all"``: embedded and
        torchvision names (timm's list is long: ask for it explicitly).

    Returns
    -------
    list of str
        The names, for ``backbone=`` or :func:`backbone_blocks`.
    """
    if source == "embedded":
        return list(EMBEDDED_BACKBONES)
    if source == "torchvision":
        import torchvision

        return [name for name in torchvision.models.list_models(module=torchvision.models)
                if _torchvision_family(name) in TORCHVISION_FAMILIES]
    if source == "timm":
        import timm

        return [TIMM_PREFIX + name for name in timm.list_models()]
    if source == "all":
        return list_backbones("embedded") + list_backbones("torchvision")
    raise ValueError(
        f"source={source!r} is not one of 'all', 'embedded', 'torchvision', 'timm'."
    )


def backbone_blocks(backbone="efficientnet_lite0", image_size=None):
    """List the blocks of a backbone, to choose ``layer`` or ``freeze`` from.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        A name of :func:`list_backbones`, or a module, as ``backbone=`` takes it.
    image_size : int or (int, int), default=None
        Input size for the strides shown; default: the weights' own.

    Returns
    -------
    list of BlockInfo
        ``(index, name, channels, reduction)`` for each block, bottom to top.

    Examples
    --------
    >>> from sktransfer import backbone_blocks
    >>> [b.name for b in backbone_blocks("resnet18")]
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    resolved = resolve_backbone(backbone, weights=None)
    size = resolved.preprocessing.with_size(image_size).input_size
    return resolved.describe(size)


def resolve_backbone(backbone, weights="imagenet", *, seed=0):
    """Build a backbone's network, load its weights and split it into blocks.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        ``"efficientnet_lite0"`` (embedded weights), a torchvision classification
        model name, ``"timm/<name>"``, or a module (deep-copied): an ``nn.Sequential``
        of blocks, or a torchvision or timm network of an architecture listed in
        :func:`sktransfer.list_backbones`.
    weights : {"imagenet"}, str, path or None, default="imagenet"
        ``"imagenet"``: the default pretrained weights. ``None``: random
        initialization (seeded by ``seed``). A path: a local ``.pth``/``.pt``/
        ``.safetensors`` state dict. For torchvision, also a weights name such as
        ``"IMAGENET1K_V2"`` or ``"ResNet50_Weights.IMAGENET1K_V2"``. For a module,
        ``"imagenet"`` and ``None`` keep its own parameters.
    seed : int, default=0
        Seed of the random initialization, so that building twice gives one network.

    Returns
    -------
    Backbone
    """
    with seeded(seed, torch.device("cpu")):
        if isinstance(backbone, nn.Module):
            return _from_module(backbone, weights)
        if not isinstance(backbone, str):
            raise TypeError(
                f"backbone must be a name (str) or a torch.nn.Module, got "
                f"{type(backbone).__name__}. sktransfer.list_backbones() lists the names."
            )
        if backbone in EMBEDDED_BACKBONES:
            return _embedded(backbone, weights)
        if backbone.startswith(TIMM_PREFIX):
            return _from_timm(backbone, weights)
        return _from_torchvision(backbone, weights)


def _embedded(name, weights):
    import timm

    model = timm.create_model(name, pretrained=False)
    if weights == "imagenet":
        path = embedded_efficientnet_lite0_file()
        load_by_order(model, load_weights_file(path), source=f"'{path}'", backbone_name=name)
    elif weights is not None:
        _load_local(model, weights, name)
    return _assemble(name, model, _timm_preprocessing(model))


def _from_timm(backbone, weights):
    import timm

    name = backbone[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        raise ValueError(
            f"Unknown timm model {name!r}{_suggest(name, timm.list_models())}. "
            "timm.list_models() lists them."
        )
    pretrained = weights == "imagenet"
    overlay = timm_cached_weights(name) if pretrained else None
    try:
        model = timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError, ConnectionError) as error:
        if not pretrained:
            raise
        raise timm_weights_unavailable(name, error) from None
    if not pretrained and weights is not None:
        _load_local(model, weights, backbone)
    return _assemble(backbone, model, _timm_preprocessing(model))


def _from_torchvision(name, weights):
    import torchvision
    from torchvision.models import get_model_weights

    if name not in torchvision.models.list_models(module=torchvision.models):
        candidates = EMBEDDED_BACKBONES + tuple(list_backbones("torchvision"))
        raise ValueError(
            f"Unknown backbone {name!r}{_suggest(name, candidates)}. "
            "Use a torchvision classification model name, 'efficientnet_lite0' (embedded "
            "weights), 'timm/<name>' or a torch.nn.Module; sktransfer.list_backbones() "
            "lists the names."
        )
    if _torchvision_family(name) not in TORCHVISION_FAMILIES:
        raise ValueError(
            f"torchvision model {name!r} is of a family that sktransfer cannot cut into "
            f"blocks yet (it knows {KNOWN_ARCHITECTURES}). Pass an nn.Sequential of its "
            "blocks as backbone instead; sktransfer.list_backbones() lists the names that work."
        )
    weights_enum_type = get_model_weights(name)
    if weights is None or is_weights_path(weights) or weights == "imagenet":
        chosen = weights_enum_type.DEFAULT
    else:
        chosen = _torchvision_weights(weights, weights_enum_type, name)
    model = torchvision.models.get_model(  # weights=None: never let torchvision unpickle
        name, weights=None, **_torchvision_arguments(name, chosen, pretrained=weights is not None))
    if is_weights_path(weights):
        _load_local(model, weights, name)
    elif weights is not None:
        load_state_dict_into(
            model, download_torchvision_state_dict(chosen), source=str(chosen),
            backbone_name=name,
        )
    transform = chosen.transforms()
    preprocessing = Preprocessing(
        input_size=(transform.crop_size[0],) * 2,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )
    return _assemble(name, model, preprocessing)


def _torchvision_family(name):
    """The module of a torchvision model's builder: "resnet", "swin_transformer", ..."""
    from torchvision.models import get_model_builder

    return get_model_builder(name).__module__.rsplit(".", 1)[-1]


def _torchvision_arguments(name, weights_enum, *, pretrained):
    """The builder arguments torchvision itself passes when it loads ``weights_enum``."""
    family = _torchvision_family(name)
    if family == "vision_transformer":  # the positional embedding is built for one size
        return {"image_size": weights_enum.meta["min_size"][0]}
    if family in ("googlenet", "inception"):  # their ported weights take inputs in [-1, 1]
        return {"transform_input": pretrained, "init_weights": not pretrained}
    return {}


def _torchvision_weights(weights, enum_type, name):
    if isinstance(weights, enum_type):
        return weights
    if isinstance(weights, str):
        member = weights.rsplit(".", 1)[-1]
        if weights.startswith(enum_type.__name__ + ".") or "." not in weights:
            if member in enum_type.__members__:
                return enum_type[member]
    valid = ", ".join(["'imagenet'", "None", "a file path"] + [f"'{m}'" for m in enum_type.__members__])
    raise ValueError(f"weights={weights!r} is not valid for backbone {name!r}; use one of: {valid}.")


def _from_module(module, weights):
    import copy

    model = copy.deepcopy(module)
    if weights is not None and weights != "imagenet":
        _load_local(model, weights, type(module).__name__)
    if getattr(model, "pretrained_cfg", None):
        preprocessing = _timm_preprocessing(model)
    else:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        preprocessing = Preprocessing((224, 224), IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    return _assemble(type(module).__name__, model, preprocessing, given_module=True)


def _load_local(model, weights, name):
    if not is_weights_path(weights):
        raise ValueError(
            f"weights={weights!r} is not valid for backbone {name!r}: use 'imagenet', None, "
            "or the path of a local .pth/.pt/.safetensors state dict."
        )
    load_state_dict_into(model, load_weights_file(weights), source=f"'{weights}'",
                         backbone_name=name)


def _timm_preprocessing(model):
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    interpolation = config["interpolation"]
    return Preprocessing(
        input_size=tuple(config["input_size"][1:]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
    )


def _assemble(name, model, preprocessing, *, given_module=False):
    named_blocks = split_blocks(model)
    if named_blocks is None:
        if given_module:
            raise ValueError(
                f"backbone is a {name} module, which is neither an nn.Sequential of blocks "
                f"nor an architecture that sktransfer cuts into blocks ({KNOWN_ARCHITECTURES}): "
                "its output (for a classifier, the class scores) is no feature map. Pass its "
                "trunk as an nn.Sequential of its blocks, without the classifier: e.g. "
                "nn.Sequential(*list(model.children())[:-1]) when its children run in that "
                "order, or nn.Sequential(model) to take its whole output as one block."
            )
        raise ValueError(
            f"Backbone {name!r} has no block structure that sktransfer knows "
            f"({KNOWN_ARCHITECTURES}). Pass an nn.Sequential of its blocks as backbone instead."
        )
    names = tuple(name_ for name_, _ in named_blocks)
    blocks = nn.Sequential(OrderedDict((str(i), block) for i, (_, block) in enumerate(named_blocks)))
    return Backbone(name, blocks, names, preprocessing)


def _suggest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
