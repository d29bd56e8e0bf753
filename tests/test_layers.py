"""The package's layers, as import-linter contracts in pyproject.toml; modules that
import on their own; pieces small enough to read."""

import ast
import importlib
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sktransfer"
#: The most lines of one module, and of one function (its docstring included).
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
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


def test_modules_and_functions_are_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "split these: " + "; ".join(too_long)
