"""The package's layers import downward only: no import circle, and a newcomer can read
the architecture off this table. A module may import (at its top) only modules of lower
layers; imports inside functions (the lazy ones of the CLI, persistence and the package's
``__init__``) are outside this rule, as they run after every module has loaded.
"""

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sktransfer"

LAYERS = {
    # 0: no sktransfer imports at all
    "_io": 0, "_preprocessing": 0, "_device": 0, "_weights": 0, "_blocks": 0, "_onnx": 0,
    "_linear_head": 0,
    "datasets": 0, "dask": 0, "cli": 0, "__init__": 0,
    # 1: files and images
    "_cache": 1, "_images": 1, "_persistence": 1, "_tasks": 1,
    # 2: networks and the inference engine
    "_backbones": 2, "_inference": 2,
    # 3: what runs networks, below any estimator
    "_transfer_net": 3, "_trunk": 3, "_training": 3, "_lr_finder": 3, "_base": 3,
    # 4: estimators
    "_features": 4, "_pixels": 4, "_trainable": 4, "_hog": 5,
    "_finetune": 5, "_finetune_regressor": 5, "_finetune_cv": 6,
    # 6-8: what uses the estimators: the probe, the comparison, its report
    "_probe": 6, "_export": 6, "_compare": 7, "_report": 8,
    "__main__": 9,
}


def top_level_imports(path):
    """sktransfer modules imported at the top of ``path`` (``from .x import`` forms)."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported.update([node.module] if node.module else [a.name for a in node.names])
    return imported


MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert sorted(LAYERS) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down_the_layers(module):
    upward = {name: LAYERS[name] for name in top_level_imports(PACKAGE / f"{module}.py")
              if LAYERS[name] >= LAYERS[module]}
    assert not upward, f"{module} (layer {LAYERS[module]}) imports {upward}"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__"])
def test_each_module_imports_on_its_own(module):
    """Importing a module first (not through the package's lazy names) works."""
    import sys

    saved = {name: sys.modules.pop(name) for name in list(sys.modules)
             if name == "sktransfer" or name.startswith("sktransfer.")}
    try:
        importlib.import_module(f"sktransfer.{module}" if module != "__init__" else "sktransfer")
    finally:
        for name in [n for n in sys.modules if n == "sktransfer" or n.startswith("sktransfer.")]:
            del sys.modules[name]
        sys.modules.update(saved)
