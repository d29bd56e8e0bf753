"""What a comparison runs: :class:`StudySettings`, its presets and :func:`study_settings`."""

import difflib
from dataclasses import dataclass, fields, replace

from torch import nn

KINDS = ("classical", "features", "finetune", "scratch")


@dataclass(frozen=True)
class StudySettings:
    """What a comparison runs; :func:`study_settings` fills it from a preset.

    ``freeze`` holds depths as fine-tuning takes them ("all", a number of frozen bottom
    blocks, -k for the top k trainable) or fractions of the backbone's depth (floats in
    [0, 1], resolved once its blocks are known: ``round(fraction * n_blocks)`` frozen).
    ``feature_layers`` holds block indices (negative from the top), block names, or
    fractions: the top block of the part ``freeze=fraction`` keeps frozen (1.0 is the
    top block; 0.0 the bottom one). Invalid values raise before anything is trained.
    ``backbones`` holds names, or ``(name, weights)`` pairs for local weights files.
    ``inner_splits`` folds of each outer training part choose the layer and the depth
    of the "chosen by inner CV" rows (0 leaves those rows out); ``choose_depth`` False
    leaves out the costlier of the two, the fine-tuning depth. ``task`` is "auto" (read
    off ``y``: see :func:`sktransfer.study.tasks.task_of`), "classification", "multilabel"
    or "regression". ``random_state`` seeds the folds, the label subsamples and every
    network.
    """

    backbones: tuple = ("efficientnet_lite0",)
    image_size: int | None = None
    max_epochs: int = 20
    freeze: tuple = ("all", 0.75, 0.5, 0)
    feature_layers: tuple = (-1,)
    pixel_size: int = 32
    n_splits: int = 5
    inner_splits: int = 3
    choose_depth: bool = True
    task: str = "auto"
    labels_per_class: tuple = ("all",)
    batch_size: int = 32
    device: str = "auto"
    random_state: int = 0
    kinds: tuple = KINDS


PRESETS = {
    "full": StudySettings(),
    # Small images, few epochs, depths and folds: the digits in minutes on 2 cores. The
    # depth search (6 more fine-tunings per outer fold) is left to the full study.
    "quick": StudySettings(image_size=48, max_epochs=5, freeze=("all", 0.67, 0), pixel_size=16,
                           n_splits=3, inner_splits=2, choose_depth=False, batch_size=64),
}


# Names people bring from other tools, which string similarity cannot guess.
SETTING_ALIASES = {"folds": "n_splits", "n_folds": "n_splits", "cv": "n_splits",
                   "seed": "random_state", "epochs": "max_epochs", "layer": "feature_layers",
                   "layers": "feature_layers", "model": "backbones", "inner_cv": "inner_splits"}


def study_settings(quick=False, **overrides):
    """The preset (``quick`` or full) with the given non-None overrides applied.

    ``backbone="name"`` is accepted for ``backbones=("name",)``.

    Raises
    ------
    TypeError
        For an override that is not a field of :class:`StudySettings`; the message
        lists the valid names and suggests the closest.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "backbone" in overrides:
        if "backbones" in overrides:
            raise TypeError("Give backbone (one) or backbones (several), not both.")
        overrides["backbones"] = (overrides.pop("backbone"),)
    _check_setting_names(overrides)
    if isinstance(overrides.get("backbones"), (str, nn.Module)):
        overrides["backbones"] = (overrides["backbones"],)
    if isinstance(overrides.get("kinds"), str):
        overrides["kinds"] = (overrides["kinds"],)
    return replace(PRESETS["quick" if quick else "full"], **overrides)


def check_settings(plan):
    """Raise a ValueError for settings no comparison can run, before any work."""
    unknown = set(plan.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds {sorted(unknown)} are not among {KINDS}.")
    if plan.inner_splits == 1 or plan.inner_splits < 0:
        raise ValueError(f"inner_splits={plan.inner_splits}: use 0 (no rows chosen by inner "
                         "CV) or at least 2 folds.")


def _check_setting_names(overrides):
    valid = [field.name for field in fields(StudySettings)]
    unknown = [name for name in overrides if name not in valid]
    if not unknown:
        return
    guesses = []
    for name in unknown:
        close = SETTING_ALIASES.get(name) or next(
            iter(difflib.get_close_matches(name, valid, n=1)), None)
        guesses.append(f"{name!r} (did you mean {close!r}?)" if close else repr(name))
    raise TypeError(
        f"Unknown comparison setting{'s' if len(unknown) > 1 else ''} {', '.join(guesses)}. "
        f"Valid settings: {', '.join(valid)}."
    )
