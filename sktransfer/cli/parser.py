"""The ``sktransfer`` command's parser: one function per command declares its options."""

import argparse
import difflib

from sktransfer.cli import commands

DATA_HELP = ("a folder with one sub-folder of images per class, an .npz file with arrays "
             "X and y, or a .csv of image path and target(s) per row; default: "
             "scikit-learn's built-in digits")
ON_ERROR_HELP = ("what to do with image files that cannot be read: 'raise' lists them all "
                 "and stops before any work; 'skip' leaves them out with a warning "
                 "(default: %(default)s)")
TASK_CHOICES = ["auto", "classification", "multilabel", "regression"]
DEBUG_HELP = "show the full traceback of any error, and warnings with their source"
TRUST_PICKLE_HELP = ("also read pickle/joblib model files. Loading a pickle runs code stored "
                     "in it: only for files from a source you trust")
SEED_HELP = "seed of the {} (default: %(default)s)"


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


def build_parser():
    """The ``sktransfer`` command's :class:`argparse.ArgumentParser`."""
    parser = _Parser(
        prog="sktransfer",
        description="Transfer learning with pretrained CNNs, from scikit-learn.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in (_add_compare, _add_extract, _add_finetune, _add_predict, _add_export,
                        _add_probe, _add_backbones):
        add_command(subparsers)
    for command in subparsers.choices.values():  # also after the command: --debug comes last
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
    parser.commands = subparsers.choices
    return parser


def _add_compare(subparsers):
    compare = subparsers.add_parser(
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
    _study_options(compare)
    _on_error_option(compare)
    compare.set_defaults(run=commands.run_compare)


def _study_options(compare):
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


def _add_extract(subparsers):
    extract = subparsers.add_parser(
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
    extract.set_defaults(run=commands.run_extract)


def _add_finetune(subparsers):
    finetune = subparsers.add_parser(
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
    _training_options(finetune)
    _on_error_option(finetune)
    finetune.set_defaults(run=commands.run_finetune)


def _training_options(finetune):
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
                          help=SEED_HELP.format("validation split and of training"))


def _add_predict(subparsers):
    predict = subparsers.add_parser(
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
    predict.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    _on_error_option(predict)
    predict.set_defaults(run=commands.run_predict)


def _add_export(subparsers):
    export = subparsers.add_parser(
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
    export.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    export.set_defaults(run=commands.run_export)


def _add_probe(subparsers):
    probe = subparsers.add_parser(
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
                       help=SEED_HELP.format("folds"))
    _on_error_option(probe)
    probe.set_defaults(run=commands.run_probe)


def _add_backbones(subparsers):
    backbones = subparsers.add_parser(
        "backbones", help="list backbones, or the blocks of one",
        description="List the backbone names, or a backbone's blocks (index, name, output "
                    "channels, stride) to choose --layer or --freeze from.")
    backbones.add_argument("name", nargs="?", help="show this backbone's blocks")
    backbones.add_argument("--image-size", type=_positive_int,
                           help="input size for the strides shown (default: the weights' own)")
    backbones.set_defaults(run=commands.run_backbones)


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

