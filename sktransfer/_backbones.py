"""One place that resolves a backbone into (blocks, preprocessing).

A *block* is the unit that ``layer`` (feature extraction) and ``freeze`` (fine-tuning)
count in: the stem, each stage, and the final head-less convolution where the
architecture has one. Running the blocks in order gives the network's last feature
map; the classifier is never part of them.
"""

import difflib
from collections import OrderedDict
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import torch
from torch import nn

from ._preprocessing import Preprocessing
from ._weights import (
    WeightsUnavailableError,
    download_torchvision_state_dict,
    embedded_efficientnet_lite0_file,
    is_weights_path,
    load_by_order,
    load_state_dict_into,
    load_weights_file,
)

EMBEDDED_BACKBONES = ("efficientnet_lite0",)
TIMM_PREFIX = "timm/"


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
        """List the blocks with their output channels and stride (one dummy forward)."""
        height, width = image_size or self.preprocessing.input_size
        x = torch.zeros(1, self.preprocessing.channels, height, width)
        infos = []
        was_training = self.blocks.training
        self.blocks.eval()
        with torch.inference_mode():
            for index, (name, block) in enumerate(zip(self.block_names, self.blocks)):
                x = block(x)
                reduction = round(width / x.shape[-1]) if x.ndim == 4 else 0
                infos.append(BlockInfo(index, name, int(x.shape[1]), reduction))
        self.blocks.train(was_training)
        return infos


def weights_digest(module):
    """A digest of a module's parameters and buffers, for cache keys."""
    import joblib

    return joblib.hash({name: tensor.detach().cpu().numpy().tobytes()  # bytes: layout-free
                        for name, tensor in module.state_dict().items()})


def list_backbones(source="all"):
    """Names accepted as ``backbone``.

    Parameters
    ----------
    source : {"all", "embedded", "torchvision", "timm"}, default="all"
        ``"embedded"`` lists backbones whose pretrained weights ship with the package
        (usable offline); ``"torchvision"`` its classification models; ``"timm"`` the
        timm models, prefixed ``"timm/"``. ``"all"`` lists embedded and torchvision
        names (timm's list is long: ask for it explicitly).

    Returns
    -------
    list of str
    """
    if source == "embedded":
        return list(EMBEDDED_BACKBONES)
    if source == "torchvision":
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)
    if source == "timm":
        import timm

        return [TIMM_PREFIX + name for name in timm.list_models()]
    if source == "all":
        return list_backbones("embedded") + list_backbones("torchvision")
    raise ValueError(
        f"source={source!r} is not one of 'all', 'embedded', 'torchvision', 'timm'."
    )


def backbone_blocks(backbone="efficientnet_lite0", image_size=None):
    """The blocks of a backbone, to choose ``layer`` or ``freeze`` from.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
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
        model name, ``"timm/<name>"``, or a module (used as given, deep-copied).
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except (OSError, RuntimeError, ValueError, ConnectionError) as error:
        if not pretrained:
            raise
        from huggingface_hub.constants import HF_HUB_CACHE

        raise WeightsUnavailableError(
            f"The pretrained weights of timm model {name!r} are not in the cache "
            f"directory '{HF_HUB_CACHE}' and could not be downloaded ({error}). Without "
            "network, download them elsewhere and pass the file as weights='/path/to/"
            f"{name}.safetensors', or use the embedded backbone 'efficientnet_lite0'."
        ) from None
    if not pretrained and weights is not None:
        _load_local(model, weights, backbone)
    return _assemble(backbone, model, _timm_preprocessing(model))


def _from_torchvision(name, weights):
    import torchvision
    from torchvision.models import get_model_weights

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(
            f"Unknown backbone {name!r}{_suggest(name, EMBEDDED_BACKBONES + tuple(known))}. "
            "Use a torchvision classification model name, 'efficientnet_lite0' (embedded "
            "weights), 'timm/<name>' or a torch.nn.Module; sktransfer.list_backbones() "
            "lists the names."
        )
    model = torchvision.models.get_model(name, weights=None)  # never let torchvision unpickle
    weights_enum_type = get_model_weights(name)
    chosen = weights_enum_type.DEFAULT
    if weights is None:
        pass
    elif is_weights_path(weights):
        _load_local(model, weights, name)
    else:
        chosen = weights_enum_type.DEFAULT if weights == "imagenet" else _torchvision_weights(
            weights, weights_enum_type, name)
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
    return _assemble(type(module).__name__, model, preprocessing, allow_single_block=True)


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


def _assemble(name, model, preprocessing, *, allow_single_block=False):
    named_blocks = _split_blocks(model)
    if named_blocks is None:
        if not allow_single_block:
            raise ValueError(
                f"Backbone {name!r} has no block structure that sktransfer knows "
                "(ResNet, EfficientNet, MobileNet, ConvNeXt, RegNet, VGG, DenseNet-like). "
                "Pass an nn.Sequential of its blocks as backbone instead."
            )
        named_blocks = [("module", model)]
    names = tuple(name_ for name_, _ in named_blocks)
    blocks = nn.Sequential(OrderedDict((str(i), block) for i, (_, block) in enumerate(named_blocks)))
    return Backbone(name, blocks, names, preprocessing)


def _split_blocks(model):
    """Cut a known architecture into (name, module) blocks, or return None."""
    children = dict(model.named_children())
    if {"conv_stem", "bn1", "blocks"} <= children.keys():  # timm EfficientNet, MobileNetV3
        blocks = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
        blocks += [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
        # In timm's EfficientNet conv_head belongs to the trunk; in MobileNetV3 it follows pooling.
        if type(model).__name__ == "EfficientNet" and "conv_head" in children:
            blocks.append(("head", nn.Sequential(model.conv_head, model.bn2)))
        return blocks
    if {"conv1", "bn1", "maxpool", "layer1", "layer4"} <= children.keys():  # ResNet family
        activation = children.get("relu") or children.get("act1")
        stem = nn.Sequential(model.conv1, model.bn1, activation, model.maxpool)
        return [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    if {"stem", "stages"} <= children.keys():  # timm ConvNeXt, RegNet, ...
        blocks = [("stem", model.stem)]
        blocks += [(f"stages.{i}", stage) for i, stage in enumerate(model.stages)]
        for extra in ("final_conv", "norm_pre"):
            if extra in children and not isinstance(children[extra], nn.Identity):
                blocks.append((extra, children[extra]))
        return blocks
    if {"stem", "trunk_output"} <= children.keys():  # torchvision RegNet
        return [("stem", model.stem)] + [
            (f"trunk_output.{n}", m) for n, m in model.trunk_output.named_children()
        ]
    for attribute in ("features", "layers"):  # torchvision MobileNet, EfficientNet, ConvNeXt, VGG, MNASNet
        if isinstance(children.get(attribute), nn.Sequential):
            return [(f"{attribute}.{n}", m) for n, m in children[attribute].named_children()]
    if isinstance(model, nn.Sequential) and len(model) > 0:
        return list(model.named_children())
    return None


def _suggest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
