"""The study's backbones: which can be had, their labels and blocks, and the depths and
layers that settings name on them."""

import difflib
import os
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.weights import WeightsUnavailableError


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone of the study: its name, weights, label in the report and blocks."""

    name: object
    weights: object
    label: str
    blocks: tuple


def available_backbones(specs, image_size=None):
    """The study's backbones whose weights can be had; the others are skipped with a warning.

    A spec is a name (``"resnet18"``, pretrained ImageNet weights), a ``"name=path"``
    string or a ``(name, weights)`` pair. Offline, only the embedded backbone and
    local weights files (or weights already in the download cache) are available.
    """
    chosen = []
    for spec in specs:
        name, weights = _backbone_spec(spec)
        try:
            backbone = resolve_backbone(name, weights)
        except WeightsUnavailableError as error:
            warnings.warn(f"Skipping backbone {name!r}: {error}", UserWarning, stacklevel=3)
            continue
        label = name if isinstance(name, str) else type(name).__name__
        if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
            label = f"{label} ({Path(weights).name})"  # name=path: tell weight files apart
        taken, base, copy = {choice.label for choice in chosen}, label, 1
        while label in taken:  # the same backbone twice: keep their rows apart
            copy += 1
            label = f"{base} #{copy}"
        size = backbone.preprocessing.with_size(image_size).input_size
        chosen.append(BackboneChoice(name, weights, label, tuple(backbone.describe(size))))
    if not chosen:
        raise ValueError(f"None of the backbones {list(specs)} has weights available; "
                         "the embedded 'efficientnet_lite0' always has.")
    return chosen


def _backbone_spec(spec):
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"A backbone given as a tuple is (name, weights), got {spec!r}.")
        return spec
    if isinstance(spec, str) and "=" in spec:
        name, path = spec.split("=", 1)
        return name, path
    return spec, "imagenet"


def _depth(fraction, n_blocks):
    return int(round(fraction * n_blocks))


def _is_fraction(value):
    return isinstance(value, Real) and not isinstance(value, Integral)


def _is_index(value):
    return isinstance(value, Integral) and not isinstance(value, bool)


def freeze_depth(freeze, backbone):
    """``freeze`` as fine-tuning takes it ("all" or an int); a ValueError if out of range."""
    n_blocks = len(backbone.blocks)
    if _is_fraction(freeze) and 0 <= freeze <= 1:
        return _depth(freeze, n_blocks)
    if freeze == "all" or (_is_index(freeze) and -n_blocks <= freeze <= n_blocks):
        return freeze
    raise ValueError(
        f"freeze={freeze!r} is not a depth of {backbone.label}, which has {n_blocks} "
        f"blocks. Use 'all' (train only the head), 0 (fine-tune all) to {n_blocks} frozen "
        f"bottom blocks, -k to leave the top k trainable, or a fraction of the depth in "
        "[0, 1]."
    )


def feature_block(layer, backbone):
    """The index of the block a ``feature_layers`` entry names; a ValueError if none.

    A fraction is the top block of the part ``freeze=fraction`` keeps frozen, so that
    the two rows share a trunk: 1.0 is the top block, 0.0 (no frozen part) the bottom one.
    """
    names = [block.name for block in backbone.blocks]
    n_blocks = len(names)
    if _is_fraction(layer) and 0 <= layer <= 1:
        return max(_depth(layer, n_blocks) - 1, 0)
    if _is_index(layer) and -n_blocks <= layer < n_blocks:
        return int(layer) % n_blocks
    if isinstance(layer, str) and layer in names:
        return names.index(layer)
    close = difflib.get_close_matches(layer, names, n=1) if isinstance(layer, str) else []
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"feature_layers: {layer!r}{guess} is not a block of {backbone.label}, which has "
        f"{n_blocks} blocks: {', '.join(names)}. Use a block name, an index from "
        f"{-n_blocks} to {n_blocks - 1} (negative counts from the top), or a fraction of "
        "the depth in [0, 1]; sktransfer.backbone_blocks() lists the blocks."
    )
