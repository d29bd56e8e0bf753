"""Cutting a network into blocks: the rules for the architectures sktransfer knows.

Generic rules cover the layouts most CNNs share (a stem and stages, ``features``
sequences, timm's ``blocks``); torchvision architectures whose forward does more than
running its children in order (Swin, ViT, MaxViT, GoogLeNet, Inception v3, ShuffleNet
v2, DenseNet) have a split of their own, dispatched on torchvision's classes.
"""

import math
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def split_blocks(model):
    """Cut a known architecture into (name, module) blocks, or return None."""
    split = _torchvision_split(model)
    if split is not None:
        return split(model)
    children = dict(model.named_children())
    if {"conv_stem", "bn1", "blocks"} <= children.keys():  # timm EfficientNet, MobileNetV3
        blocks = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
        blocks += [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
        # In timm's EfficientNet conv_head belongs to the trunk; in MobileNetV3 it follows pooling.
        if type(model).__name__ == "EfficientNet" and "conv_head" in children:
            blocks.append(("conv_head", nn.Sequential(model.conv_head, model.bn2)))
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


def _torchvision_split(model):
    """The split of a torchvision architecture that the generic rules cannot cut, or None."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("torchvision.models."):
            return _TORCHVISION_SPLITS.get(cls.__name__)
    return None


def _swin_blocks(model):
    """Swin: one block per ``features`` entry, each made channels-first (the stages work
    on channels-last maps ``(n, H, W, C)``); the final norm ends the last block."""
    from torchvision.ops import Permute

    stages = list(model.features)
    blocks = []
    for index, stage in enumerate(stages):
        layers = [stage] if index == 0 else [Permute([0, 2, 3, 1]), stage]
        if index == len(stages) - 1:
            layers.append(model.norm)
        blocks.append((f"features.{index}", nn.Sequential(*layers, Permute([0, 3, 1, 2]))))
    return blocks


def _vit_blocks(model):
    """ViT: a stem (patches, class token, positional embedding), then one block per
    encoder layer; the final LayerNorm ends the last one."""
    layers = list(model.encoder.layers.named_children())
    last_name, last = layers[-1]
    return [("stem", _VitStem(model)), *layers[:-1],
            (last_name, nn.Sequential(last, model.encoder.ln))]


class _VitStem(nn.Module):
    """Patch projection, class token and positional embedding of a torchvision ViT.

    At an input size other than the network's own, the positional embedding is resized
    bicubically, as torchvision's ``interpolate_embeddings`` does to fine-tune at a new
    resolution. Height and width must be multiples of the patch size.
    """

    def __init__(self, vit):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        self.patch_size = vit.patch_size

    def forward(self, x):
        height, width = x.shape[-2:]
        patch = self.patch_size
        if height % patch or width % patch:
            trained = math.isqrt(self.pos_embedding.shape[1] - 1) * patch
            nearest = max(1, round(height / patch)) * patch
            raise ValueError(
                f"This vision transformer cuts images into {patch}x{patch} patches: their "
                f"height and width must be multiples of {patch}, got {height}x{width}. Set "
                f"image_size to a multiple of {patch}, e.g. {nearest} (its weights were "
                f"trained at {trained})."
            )
        x = self.conv_proj(x)
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self._positions(grid))

    def _positions(self, grid):
        side = math.isqrt(self.pos_embedding.shape[1] - 1)
        if grid == (side, side):
            return self.pos_embedding
        token, patches = self.pos_embedding[:, :1], self.pos_embedding[:, 1:]
        patches = patches.transpose(1, 2).reshape(1, -1, side, side)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=True)
        return torch.cat([token, patches.flatten(2).transpose(1, 2)], dim=1)


def _maxvit_blocks(model):
    """MaxViT: the stem, then its blocks (whose attention grids fix the input size)."""
    stem = _FixedGridStem(model.stem, model.blocks[0].grid_size)
    return [("stem", stem)] + [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]


class _FixedGridStem(nn.Module):
    """MaxViT's stem, refusing the input sizes that its blocks' fixed grids cannot take."""

    def __init__(self, stem, grid):
        super().__init__()
        self.stem = stem
        self.grid = tuple(grid)

    def forward(self, x):
        height, width = x.shape[-2:]
        # The stem and the first block each halve the size, rounding up.
        if (-(-height // 4), -(-width // 4)) != self.grid:
            size = (4 * self.grid[0], 4 * self.grid[1])
            raise ValueError(
                f"MaxViT's attention grids are fixed when it is built: this one takes images "
                f"of {size[0]}x{size[1]} pixels, got {height}x{width}. Set "
                f"image_size={size[0] if size[0] == size[1] else size}."
            )
        return self.stem(x)


_NOT_TRUNK = ("avgpool", "dropout", "fc")


def _inception_blocks(model):
    """GoogLeNet, Inception v3: the layers before the first inception module make the
    stem, then one block per stage of modules (``inception4a``-``4e``, ``Mixed_6a``-``6e``),
    led by the pooling between stages; the aux classifiers and the head stay out."""
    stages = OrderedDict(stem=[_TransformInput(model)] if model.transform_input else [])
    pending = []
    for name, child in model.named_children():
        if name in _NOT_TRUNK or name.lower().startswith("aux"):
            continue
        match = re.fullmatch(r"(inception\d|Mixed_\d)[a-z]", name)
        if match is None:
            (pending if len(stages) > 1 else stages["stem"]).append(child)
        else:
            stages.setdefault(match.group(1), []).extend([*pending, child])
            pending = []
    stages[next(reversed(stages))].extend(pending)
    return [(name, nn.Sequential(*layers)) for name, layers in stages.items()]


class _TransformInput(nn.Module):
    """GoogLeNet's and Inception v3's own conversion of ImageNet-normalized images to the
    [-1, 1] range their ported weights take (the network class's ``_transform_input``)."""

    def __init__(self, network):
        super().__init__()
        self.network_type = type(network)
        self.transform_input = True

    def forward(self, x):
        return self.network_type._transform_input(self, x)


def _shufflenet_blocks(model):
    """ShuffleNet v2: conv1 and max pooling as the stem, stage2-4, conv5."""
    return [("stem", nn.Sequential(model.conv1, model.maxpool))] + [
        (name, getattr(model, name)) for name in ("stage2", "stage3", "stage4", "conv5")
    ]


def _densenet_blocks(model):
    """DenseNet: one block per ``features`` entry; the ReLU that its forward applies after
    the last norm ends the last block."""
    blocks = [(f"features.{n}", m) for n, m in model.features.named_children()]
    last_name, last = blocks[-1]
    return blocks[:-1] + [(last_name, nn.Sequential(last, nn.ReLU()))]


_TORCHVISION_SPLITS = {
    "SwinTransformer": _swin_blocks,
    "VisionTransformer": _vit_blocks,
    "MaxVit": _maxvit_blocks,
    "GoogLeNet": _inception_blocks,
    "Inception3": _inception_blocks,
    "ShuffleNetV2": _shufflenet_blocks,
    "DenseNet": _densenet_blocks,
}
