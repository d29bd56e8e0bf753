"""The package's layers, as import-linter contracts in pyproject.toml, and modules that
import on their own."""

import importlib
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sktransfer"
MODULES = sorted(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                 for path in PACKAGE.rglob("*.py") if path.name != "__main__.py")


def test_import_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml")) == 0


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    """Importing a module first (not through the package's lazy names) works."""
    saved = {name: sys.modules.pop(name) for name in list(sys.modules)
             if name == "sktransfer" or name.startswith("sktransfer.")}
    try:
        importlib.import_module(module.removesuffix(".__init__"))
    finally:
        for name in [n for n in sys.modules if n == "sktransfer" or n.startswith("sktransfer.")]:
            del sys.modules[name]
        sys.modules.update(saved)
