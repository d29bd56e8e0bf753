"""Sphinx configuration of the sktransfer documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are errors);
``-D plot_gallery=0`` skips running the examples.
"""

import inspect
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The gallery runs the examples in this process: keep plots off screen and bars quiet.
os.environ.setdefault("MPLBACKEND", "Agg")

import sktransfer  # noqa: E402

project = "sktransfer"
author = "sktransfer developers"
copyright = "2026, sktransfer developers"
release = sktransfer.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinxarg.ext",
    "sphinx_copybutton",
]

templates_path = ["_templates"]
# The report folders (compare-quick-digits, ...) hold Markdown that `sktransfer
# compare` wrote; the guide shows their images, it does not build them as pages.
exclude_patterns = ["_build", "**/*.md"]

# -- API reference ---------------------------------------------------------------

autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_default_options = {"members": False, "inherited-members": False}


def _own_public_methods(cls):
    """Public methods a class gets from sktransfer's own classes, not scikit-learn's.

    scikit-learn's inherited methods (get_params, set_params, set_output, the
    metadata-routing requests) link to scikit-learn's own user guide, which is not
    part of this site; the class page says they exist.
    """
    names = []
    for name in dir(cls):
        if name.startswith("_") or re.fullmatch(r"set_\w+_request", name):
            continue  # scikit-learn writes the metadata-routing requests into each class
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        member = getattr(cls, name, None)  # available_if methods resolve to functions
        if (owner is not None and owner.__module__.startswith("sktransfer")
                and inspect.isroutine(member)):
            names.append(name)
    return names


_classes = [getattr(sktransfer, name) for name in sktransfer.__all__
            if inspect.isclass(getattr(sktransfer, name))]
autosummary_context = {
    "own_methods": {f"sktransfer.{cls.__name__}": _own_public_methods(cls) for cls in _classes},
    "sklearn_estimators": [f"sktransfer.{cls.__name__}" for cls in _classes
                           if hasattr(cls, "get_params")],
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Every numpydoc check on the documented (public) objects, except:
#   ES01  an extended summary: one-line summaries of fit/predict/transform are complete;
#   EX01  an Examples section on every method: the classes and functions have them,
#         repeating one per method would be noise (and each runs as a doctest);
#   SA01  a See Also section everywhere: it is written between related estimators and
#         functions, but a method such as fit has nothing useful to point to.
numpydoc_validation_checks = {"all", "ES01", "EX01", "SA01"}
numpydoc_validation_exclude = {
    # scikit-learn's own docstrings, inherited (not documented on this site)
    r"\.set_\w+_request$",
    r"\.get_metadata_routing$",
    r"\.get_params$",
    r"\.set_params$",
    r"\.set_output$",
    # One-line docstrings that point to FineTuneClassifier's method of the same name:
    # _finetuning/search.py is too close to the 400-line module limit
    # (tests/test_layers.py) for a full section each.
    r"FineTuneClassifierCV\.(predict|predict_proba|decision_function|score|transform"
    r"|get_feature_names_out)$",
    # A NamedTuple whose four fields the summary names; _engine/backbones.py is at
    # the 400-line limit.
    r"^sktransfer\.BlockInfo$",
}

# -- command line ------------------------------------------------------------------
# docs/cli.rst documents sktransfer.cli.parser.build_parser with sphinx-argparse.

# -- gallery -----------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # every script in examples/ is an example and runs at build time ...
    "filename_pattern": r".*\.py$",
    # ... except the helper that writes a folder of photo crops for the CLI
    "ignore_pattern": r"(__init__|make_photo_crops)\.py$",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "run_stale_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    "write_computation_times": False,  # no sg_execution_times.rst in docs/
}

# -- HTML ----------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sktransfer {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
