"""The ``sktransfer`` command: compare, extract, finetune, predict, export, probe, backbones.

Imports of torch and the estimators wait until a command runs, so that ``--help``
answers at once.
"""

import argparse
import difflib
import os
import sys
import time
import warnings
from pathlib import Path

DATA_HELP = ("a folder with one sub-folder of images per class, an .npz file with arrays "
             "X and y, or a .csv of image path and target(s) per row; default: "
             "scikit-learn's built-in digits")
ON_ERROR_HELP = ("what to do with image files that cannot be read: 'raise' lists them all "
                 "and stops before any work; 'skip' leaves them out with a warning "
                 "(default: %(default)s)")
TASK_CHOICES = ["auto", "classification", "multilabel", "regression"]
DEBUG_HELP = "show the full traceback of any error, and warnings with their source"
#: Errors that bad input raises: one line names the fix. Anything else is a bug and
#: keeps its traceback. (NotFittedError is a ValueError; WeightsUnavailableError a
#: FileNotFoundError.)
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, MemoryError)


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    formatwarning = warnings.formatwarning
    if not args.debug:  # a warning is one line for the user, not a line of our source
        warnings.formatwarning = _one_line_warning(args.command)
    try:
        args.run(args)
    except USAGE_ERRORS as error:
        if args.debug:
            raise
        print(f"sktransfer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sktransfer {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0


def _one_line_warning(command):
    def formatwarning(message, category, filename, lineno, line=None):
        return f"sktransfer {command}: warning: {message}\n"

    return formatwarning


class _Parser(argparse.ArgumentParser):
    """argparse, whose error for a misspelt option guesses what was meant."""

    #: The command parsers by name (set on the top-level parser).
    commands = {}

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.commands.get(getattr(namespace, "command", None), self)
            command.error(f"unrecognized arguments: {' '.join(extras)}"
                          f"{command.did_you_mean(extras)}")
        return namespace

    def did_you_mean(self, extras):
        options = [option for action in self._actions for option in action.option_strings]
        for extra in extras:
            if extra.startswith("-"):
                close = difflib.get_close_matches(extra.split("=")[0], options, n=1)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def _parser():
    parser = _Parser(
        prog="sktransfer",
        description="Transfer learning with pretrained CNNs, from scikit-learn.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare", help="transfer learning against classical baselines, as a report with plots",
        description="Evaluate raw-pixel baselines, frozen CNN features, fine-tuning at several "
                    "freeze depths, and training from scratch on the same stratified splits; "
                    "write results.csv, plots and report.md to the output folder.")
    compare.add_argument("data", nargs="?", help=DATA_HELP)
    compare.add_argument("-o", "--output", "--out", default="sktransfer-report",
                         help="output folder, created if missing (default: %(default)s)")
    compare.add_argument("--quick", action="store_true",
                         help="a preset of small images (48 px), 5 epochs, 3 depths and 3 "
                              "folds: minutes on a CPU; other options override it")
    _network_options(compare, precision=False)
    compare.add_argument("--backbones", type=_backbone_list,
                         help="several backbones, comma-separated, each a name or "
                              "name=/path/to/weights.pth; those without weights available "
                              "(offline: not embedded, no local file) are skipped with a warning")
    compare.add_argument("--freeze", type=_freeze_list,
                         help="comma-separated freeze depths, such as all,6,0 "
                              "(default: all and fractions of the depth down to 0)")
    compare.add_argument("--max-epochs", type=_positive_int,
                         help="most epochs of each fine-tuning (default: 20; --quick: 5)")
    compare.add_argument("--labels-per-class", type=_labels_list,
                         help="comma-separated, such as 5,20,all: adds a learning curve")
    compare.add_argument("--n-splits", "--folds", type=_positive_int, dest="n_splits",
                         help="number of stratified cross-validation folds (default: 5; "
                              "--quick: 3)")
    compare.add_argument("--inner-splits", type=_inner_splits, dest="inner_splits",
                         help="folds of each training part that choose the layer and the "
                              "depth of the 'chosen by inner CV' rows (default: 3; --quick: "
                              "2); 0 leaves those rows out, the fastest study")
    compare.add_argument("--task", choices=TASK_CHOICES,
                         help="what y is (default: auto: float targets are regression, a 2-D "
                              "0/1 indicator multi-label, other labels classes); regression "
                              "for integer counts")
    compare.add_argument("--choose-depth", action=argparse.BooleanOptionalAction, default=None,
                         help="add the row whose fine-tuning depth an inner CV chooses "
                              "(default: on; off with --quick, where it would add 6 "
                              "fine-tunings per fold)")
    compare.add_argument("--random-state", "--seed", type=int, dest="random_state",
                         help="seed of the folds and of training (default: 0)")
    _on_error_option(compare)
    compare.set_defaults(run=_compare)

    extract = commands.add_parser(
        "extract", help="CNN features of images, to an .npz file",
        description="Features of every image from one block of a pretrained network. "
                    "Labels are not needed: DATA may also be a flat folder (searched "
                    "recursively), one image file, or an .npz with X only.")
    extract.add_argument("data", nargs="?", help=DATA_HELP + "; or any folder or image file")
    extract.add_argument("-o", "--output", default="features.npz",
                         help="the .npz written: features, feature_names, and y and paths "
                              "where known (default: %(default)s)")
    _network_options(extract)
    extract.add_argument("--batch-size", type=_positive_int,
                         help="images per forward pass (default: auto, about 8 images "
                              "of 224 px)")
    extract.add_argument("--layer", type=_layer, default=-1,
                         help="block index (negative from the top) or name; "
                              "'sktransfer backbones NAME' lists them (default: %(default)s)")
    extract.add_argument("--pooling", default="avg", choices=["avg", "max", "avgmax"],
                         help="global pooling of the block's map (default: %(default)s)")
    _on_error_option(extract)
    extract.set_defaults(run=_extract)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a network; save it as a safe model file",
        description="Fine-tune a pretrained network on labelled images and save it with "
                    "sktransfer.save: a .safetensors file that loads without running code.")
    finetune.add_argument("data", nargs="?", help=DATA_HELP)
    finetune.add_argument("-o", "--output", default="model.safetensors",
                          help="model file written (default: %(default)s)")
    _network_options(finetune)
    finetune.add_argument("--freeze", type=_freeze, default=0,
                          help="bottom blocks kept frozen: 0 fine-tunes all, 'all' trains "
                               "only the new head, -k leaves the top k trainable "
                               "(default: %(default)s)")
    finetune.add_argument("--task", choices=TASK_CHOICES, default="auto",
                          help="what y is: a FineTuneClassifier learns classes or tags "
                               "(multilabel: a 0/1 column per tag), a FineTuneRegressor "
                               "quantities (default: auto: float targets are regression, "
                               "several 0/1 columns multi-label, other labels classes); "
                               "regression for integer counts")
    finetune.add_argument("--max-epochs", type=_positive_int, default=20,
                          help="most epochs; early stopping may end sooner "
                               "(default: %(default)s)")
    finetune.add_argument("--lr", type=_positive_float, default=1e-3,
                          help="learning rate of the head (default: %(default)s)")
    finetune.add_argument("--batch-size", type=_positive_int, default=32,
                          help="images per training step (default: %(default)s)")
    finetune.add_argument("--augment", choices=["light"],
                          help="training-time augmentation: 'light' is a random resized "
                               "crop and horizontal flip (default: none)")
    finetune.add_argument("--class-weight", choices=["balanced"],
                          help="weight classes inversely to their frequency (default: equal)")
    finetune.add_argument("--random-state", "--seed", type=int, default=0, dest="random_state",
                          help="seed of the validation split and of training "
                               "(default: %(default)s)")
    _on_error_option(finetune)
    finetune.set_defaults(run=_finetune)

    predict = commands.add_parser(
        "predict", help="predict with a saved model; writes a CSV of path and prediction",
        description="Predict with a saved model and write a CSV: path and prediction (a "
                    "class or a number), or path and one 0/1 column per tag for a "
                    "multi-label model.")
    predict.add_argument("model", help="a model file written by 'sktransfer finetune' or "
                                       "sktransfer.save (a fitted Pipeline too)")
    predict.add_argument("data", help="an image, a folder of images (searched recursively), "
                                      "a .csv whose first column is image paths (other "
                                      "columns are ignored), or an .npz with X")
    predict.add_argument("-o", "--output", help="CSV file written (default: standard output)")
    predict.add_argument("--proba", action="store_true",
                         help="add each class's (or tag's) probability, one column each "
                              "named probability_<class>")
    predict.add_argument("--trust-pickle", action="store_true",
                         help="also read pickle/joblib model files. Loading a pickle runs "
                              "code stored in it: only for files from a source you trust")
    _on_error_option(predict)
    predict.set_defaults(run=_predict)

    export = commands.add_parser(
        "export", help="write a saved model as an ONNX file that takes uint8 images",
        description="Write a fitted model (a feature extractor, a fine-tuned classifier or "
                    "regressor, or a Pipeline starting with one) as one ONNX file that runs "
                    "without torch: input 'images', uint8 (n, H, W, 3) at the model's input "
                    "size; outputs 'features', or 'label' and 'probabilities', or "
                    "'prediction'.")
    export.add_argument("model", help="a model file written by 'sktransfer finetune' or "
                                      "sktransfer.save")
    export.add_argument("-o", "--output", default="model.onnx",
                        help="ONNX file written (default: %(default)s)")
    export.add_argument("--trust-pickle", action="store_true",
                        help="also read pickle/joblib model files. Loading a pickle runs "
                             "code stored in it: only for files from a source you trust")
    export.set_defaults(run=_export)

    probe = commands.add_parser(
        "probe", help="which layer transfers: a linear probe on every block, table and plot",
        description="Cross-validate a standardized logistic regression on the pooled "
                    "features of every block of the backbone (one forward pass per image) "
                    "and on raw pixels; write probe.csv and layers.png. A diagnostic for "
                    "choosing 'extract --layer': it looks at every fold.")
    probe.add_argument("data", nargs="?", help=DATA_HELP)
    probe.add_argument("-o", "--output", default="sktransfer-probe",
                       help="output folder, created if missing (default: %(default)s)")
    _network_options(probe)
    probe.add_argument("--n-splits", "--folds", type=_positive_int, default=5, dest="n_splits",
                       help="stratified cross-validation folds (default: %(default)s)")
    probe.add_argument("--random-state", "--seed", type=int, default=0, dest="random_state",
                       help="seed of the folds (default: %(default)s)")
    _on_error_option(probe)
    probe.set_defaults(run=_probe)

    backbones = commands.add_parser(
        "backbones", help="list backbones, or the blocks of one",
        description="List the backbone names, or a backbone's blocks (index, name, output "
                    "channels, stride) to choose --layer or --freeze from.")
    backbones.add_argument("name", nargs="?", help="show this backbone's blocks")
    backbones.add_argument("--image-size", type=_positive_int,
                           help="input size for the strides shown (default: the weights' own)")
    backbones.set_defaults(run=_backbones)
    for command in commands.choices.values():  # also after the command: --debug is typed last
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
    parser.commands = commands.choices
    return parser


def _on_error_option(parser):
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help=ON_ERROR_HELP)


def _network_options(parser, *, precision=True):
    parser.add_argument("--backbone",
                        help="network: efficientnet_lite0 (embedded weights, the default), a "
                             "torchvision model name, or timm/<name>")
    parser.add_argument("--weights",
                        help="'imagenet' (default), 'none' for random initialization, or a "
                             "local .pth/.safetensors file")
    parser.add_argument("--image-size", type=_positive_int,
                        help="resize images to this size (default: the weights' own, 224 "
                             "for most)")
    parser.add_argument("--device", help="auto, cpu, cuda or mps (default: auto)")
    if precision:
        parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                            help="fp32 (default); bf16 where the CPU or GPU runs it natively "
                                 "(falls back to fp32 with a warning elsewhere); fp16 on CUDA")


def _freeze(text):
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid freeze {text!r}: use a number of bottom blocks (0 fine-tunes all, "
            "-k leaves the top k trainable) or 'all' (train only the head)") from None


def _freeze_list(text):
    return tuple(_freeze(part.strip()) for part in text.split(","))


def _backbone_list(text):
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(
            f"invalid backbones {text!r}: use names separated by commas, such as "
            "efficientnet_lite0,resnet18=resnet18.pth")
    return names


def _labels_list(text):
    try:
        return tuple("all" if part == "all" else _positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid labels per class {text!r}: use positive numbers or 'all', "
            "comma-separated, such as 5,20,all") from None


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a positive whole number")
    return value


def _inner_splits(text):
    if text.strip() == "0":
        return 0
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"invalid inner splits {text!r}: use 0 (no inner-CV rows) or at least 2")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a positive number")
    return value


def _layer(text):
    try:
        return int(text)
    except ValueError:
        return text


def _network_params(args):
    weights = args.weights
    if weights is not None and weights.lower() == "none":
        weights = None
    elif weights is None:
        weights = "imagenet"
    params = {"weights": weights}
    for key in ("backbone", "image_size", "device", "precision"):
        if getattr(args, key, None) is not None:
            params[key] = getattr(args, key)
    return params


def _writable_file(path):
    """Check that ``path`` can be written, before any work: a result is never lost."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"The output '{path}' is a folder; give a file name.")
    _writable_folder(path.parent if str(path.parent) else Path("."))
    return path


def _writable_folder(folder):
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"The output folder '{folder}' is a file; give a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create the output folder '{folder}' "
                         f"({error.strerror}); choose another path with -o.") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"The output folder '{folder}' is not writable; choose another "
                         "path with -o.")
    return folder


def _compare(args):

    from sktransfer.study.compare import compare, study_settings
    from sktransfer.study.report import format_table, write_report
    from sktransfer.study.tasks import task_of
    from sktransfer.datasets import load_data

    out = _writable_folder(args.output)
    X, y = load_data(args.data, on_error=args.on_error)
    overrides = dict(_network_params(args), freeze=args.freeze, max_epochs=args.max_epochs,
                     labels_per_class=args.labels_per_class, n_splits=args.n_splits,
                     random_state=args.random_state, backbones=args.backbones,
                     inner_splits=args.inner_splits, task=args.task,
                     choose_depth=args.choose_depth)
    if overrides.pop("weights") != "imagenet":
        raise ValueError("compare runs pretrained and from-scratch rows itself; --weights "
                         "applies to extract and finetune only.")
    plan = study_settings(args.quick, **overrides)
    source = args.data or "scikit-learn's built-in digits"
    task = task_of(y, plan.task)
    description = (
        f"{len(y)} images of {task.describe(y)} from {source}; "
        f"{plan.n_splits}-fold {'stratified ' if task.stratified else ''}cross-validation; "
        f"backbone{'s' if len(plan.backbones) > 1 else ''} {', '.join(map(str, plan.backbones))} "
        f"(image size {plan.image_size or 'from its weights'}), fine-tuning for at most "
        f"{plan.max_epochs} epochs, {_early_stopping_rule(task)}; "
        f"{'quick' if args.quick else 'full'} preset, random_state {plan.random_state}.")
    print(description, file=sys.stderr)
    start = time.perf_counter()
    results = compare(X, y, quick=args.quick, **overrides)
    files = write_report(results, out, description=description)
    print(format_table(results))
    print(f"\n{time.perf_counter() - start:.0f} s; wrote " +
          ", ".join(str(path) for path in files.values()))


def _early_stopping_rule(task):
    """When the study stops fine-tuning early (sktransfer.study.compare._early_stopping)."""
    from sktransfer._finetuning.base import MIN_VALIDATION_IMAGES

    rule = (f"stopping early where the validation part holds at least {MIN_VALIDATION_IMAGES} "
            "images")
    return rule + (" and every class has at least 3 training images" if task.stratified else "")


def _extract(args):
    import numpy as np

    from sktransfer._extraction.cnn import CNNFeatureExtractor
    from sktransfer.datasets import load_data

    output = _writable_file(args.output)
    X, y = load_data(args.data, labels="optional", on_error=args.on_error)
    extractor = CNNFeatureExtractor(**_network_params(args), layer=args.layer,
                                    pooling=args.pooling, batch_size=args.batch_size or "auto",
                                    progress=True)
    features = extractor.fit_transform(X)
    arrays = {"features": features, "feature_names": extractor.get_feature_names_out().astype(str)}
    if y is not None:
        arrays["y"] = y
    if isinstance(X, np.ndarray) and X.dtype.kind in "US":
        arrays["paths"] = X
    np.savez_compressed(output, **arrays)
    print(f"{features.shape[0]} x {features.shape[1]} features written to {output}")


def _finetune(args):
    from sktransfer._finetuning.classifier import FineTuneClassifier
    from sktransfer._finetuning.regressor import FineTuneRegressor
    from ._persistence import save
    from sktransfer.study.tasks import task_of
    from sktransfer.datasets import load_data

    output = _writable_file(args.output)
    X, y = load_data(args.data, on_error=args.on_error)
    task = task_of(y, args.task)
    print(f"fine-tuning on {len(y)} images of {task.describe(y)}"
          f"{' (read off the targets; --task overrides)' if args.task == 'auto' else ''}",
          file=sys.stderr)
    params = dict(_network_params(args), freeze=args.freeze, max_epochs=args.max_epochs,
                  lr=args.lr, batch_size=args.batch_size, augment=args.augment,
                  random_state=args.random_state, verbose=1)
    if task.name == "regression":
        if args.class_weight:
            raise ValueError("--class-weight weights classes; a regression target has none. "
                             "Leave it out, or use --task classification.")
        model = FineTuneRegressor(**params)
    else:
        model = FineTuneClassifier(**params, class_weight=args.class_weight)
    model.fit(X, y)
    save(model, output)
    print(f"best epoch {model.best_epoch_} of {len(model.history_)}; model written to "
          f"{output} (load it with sktransfer.load or 'sktransfer predict')")


def _predict(args):
    import csv

    from sktransfer.datasets import list_images

    model = _load_model(Path(args.model), trust_pickle=args.trust_pickle)
    if not hasattr(model, "predict"):
        raise ValueError(f"'{args.model}' does not hold a model with predict.")
    if args.proba and not hasattr(model, "predict_proba"):
        raise ValueError(f"--proba needs a classifier; '{args.model}' holds a model without "
                         "predict_proba (a regressor?). Leave --proba out.")
    output = _writable_file(args.output) if args.output else None
    X, names = list_images(args.data, on_error=args.on_error)
    header, columns = _predictions(model, X, proba=args.proba)
    with (open(output, "w", newline="") if output else _stdout()) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["path", *header])
        writer.writerows(zip(names, *columns))


def _predictions(model, X, *, proba):
    """Column names and columns: the prediction, or one 0/1 column per tag; probabilities."""
    import numpy as np
    from sklearn.base import is_classifier

    predicted = np.asarray(model.predict(X))
    classes = [str(c) for c in getattr(model, "classes_", [])]
    if predicted.ndim == 1:
        header, columns = ["prediction"], [predicted]
    elif is_classifier(model) and len(classes) == predicted.shape[1]:  # multi-label: tags
        header, columns = list(classes), list(predicted.T)
    else:  # several regression targets
        header = [f"prediction_{i}" for i in range(predicted.shape[1])]
        columns = list(predicted.T)
    if proba:
        header += [f"probability_{c}" for c in classes]
        columns += [[f"{p:.4f}" for p in column] for column in model.predict_proba(X).T]
    return header, columns


class _stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        return False


def _load_model(path, *, trust_pickle):
    """A model from sktransfer's safe format; from a pickle only with ``trust_pickle``."""
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: '{path}'.")
    from sktransfer._engine.io import file_kind

    kind = file_kind(path)
    if kind == "safetensors":
        from ._persistence import load

        return load(path)
    if kind == "pickle":
        if not trust_pickle:
            raise ValueError(
                f"'{path}' is a pickle (joblib) file, not sktransfer's safe format. Loading "
                "a pickle runs code stored in the file, so a file from someone else can "
                "take over this machine; nothing was loaded. If you trust its source, "
                "pass --trust-pickle; better, save models with sktransfer.save (or "
                "'sktransfer finetune'), whose files load without running code.")
        import joblib

        return joblib.load(path)
    raise ValueError(
        f"'{path}' is not a model file: neither sktransfer's safe format (written by "
        "sktransfer.save or 'sktransfer finetune') nor a pickle.")


def _export(args):
    from ._export import export_onnx

    import onnx

    model = _load_model(Path(args.model), trust_pickle=args.trust_pickle)
    output = export_onnx(model, _writable_file(args.output))
    graph = onnx.load(output).graph
    shape = ", ".join(str(dim.dim_param or dim.dim_value)
                      for dim in graph.input[0].type.tensor_type.shape.dim)
    print(f"wrote {output}: input 'images', uint8 ({shape}); outputs "
          f"{', '.join(repr(o.name) for o in graph.output)}")


def _probe(args):
    from sktransfer.study.probe import plot_layer_probe, probe_layers
    from sktransfer.datasets import load_data

    out = _writable_folder(args.output)
    X, y = load_data(args.data, on_error=args.on_error)
    table = probe_layers(X, y, cv=args.n_splits, random_state=args.random_state,
                         **_network_params(args))
    table.to_csv(out / "probe.csv", index=False)
    plot_layer_probe(table, out / "layers.png")
    print(table.round(3).to_string(index=False))
    if "pixels" in table.attrs:
        print(f"raw pixels: {table.attrs['pixels'][0]:.3f}")
    print(f"wrote {out / 'probe.csv'}, {out / 'layers.png'}")


def _backbones(args):
    from sktransfer._engine.backbones import backbone_blocks, list_backbones

    if args.name is None:
        print("embedded (offline):", ", ".join(list_backbones("embedded")))
        print("torchvision:", ", ".join(list_backbones("torchvision")))
        print("timm: any timm model as timm/<name> (sktransfer backbones timm/<name>)")
        return
    print(f"{'index':>5s}  {'block':<16s} {'channels':>8s} {'stride':>6s}")
    for block in backbone_blocks(args.name, image_size=args.image_size):
        print(f"{block.index:>5d}  {block.name:<16s} {block.channels:>8d} {block.reduction:>6d}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
