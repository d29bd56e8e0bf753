"""The ``sktransfer`` command: compare, extract, finetune, predict, backbones."""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

DATA_HELP = ("a folder with one sub-folder of images per class, or an .npz file with arrays "
             "X and y; default: scikit-learn's built-in digits")


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        args.run(args)
    except (ValueError, TypeError, FileNotFoundError, MemoryError) as error:
        print(f"sktransfer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sktransfer {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="sktransfer",
        description="Transfer learning with pretrained CNNs, from scikit-learn.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare", help="transfer learning against classical baselines, as a report with plots",
        description="Evaluate raw-pixel baselines, frozen CNN features, fine-tuning at several "
                    "freeze depths, and training from scratch on the same stratified splits; "
                    "write results.csv, plots and report.md to --out.")
    compare.add_argument("data", nargs="?", help=DATA_HELP)
    compare.add_argument("--out", default="sktransfer-report", help="output folder (default: %(default)s)")
    compare.add_argument("--quick", action="store_true",
                         help="small images, few epochs, depths and folds: minutes on a CPU")
    _network_options(compare)
    compare.add_argument("--freeze", type=_freeze_list,
                         help="comma-separated freeze depths, such as all,6,0")
    compare.add_argument("--max-epochs", type=int)
    compare.add_argument("--labels-per-class", type=_labels_list,
                         help="comma-separated, such as 5,20,all: adds a learning curve")
    compare.add_argument("--folds", type=int, dest="n_splits", help="number of stratified folds")
    compare.add_argument("--seed", type=int)
    compare.set_defaults(run=_compare)

    extract = commands.add_parser("extract", help="CNN features of images, to an .npz file")
    extract.add_argument("data", nargs="?", help=DATA_HELP)
    extract.add_argument("-o", "--output", default="features.npz")
    _network_options(extract)
    extract.add_argument("--layer", type=_layer, default=-1, help="block index or name (default: -1)")
    extract.add_argument("--pooling", default="avg", choices=["avg", "max", "avgmax"])
    extract.add_argument("--weights", default="imagenet")
    extract.set_defaults(run=_extract)

    finetune = commands.add_parser("finetune", help="fine-tune a network, save it with joblib")
    finetune.add_argument("data", nargs="?", help=DATA_HELP)
    finetune.add_argument("-o", "--output", default="model.joblib")
    _network_options(finetune)
    finetune.add_argument("--freeze", type=_freeze, default=0)
    finetune.add_argument("--max-epochs", type=int, default=20)
    finetune.add_argument("--lr", type=float, default=1e-3)
    finetune.add_argument("--weights", default="imagenet")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.set_defaults(run=_finetune)

    predict = commands.add_parser(
        "predict", help="predict with a saved model; writes a CSV of path, label, probability")
    predict.add_argument("model", help="a file written by 'sktransfer finetune' (trusted source only)")
    predict.add_argument("data", help="an image, a folder of images (searched recursively) or an .npz")
    predict.add_argument("-o", "--output", help="CSV file (default: standard output)")
    predict.set_defaults(run=_predict)

    backbones = commands.add_parser("backbones", help="list backbones, or the blocks of one")
    backbones.add_argument("name", nargs="?", help="show this backbone's blocks")
    backbones.add_argument("--image-size", type=int)
    backbones.set_defaults(run=_backbones)
    return parser


def _network_options(parser):
    parser.add_argument("--backbone", help="network name (default: efficientnet_lite0)")
    parser.add_argument("--image-size", type=int, help="resize images to this size")
    parser.add_argument("--device", help="auto, cpu, cuda or mps (default: auto)")


def _freeze(text):
    return "all" if text == "all" else int(text)


def _freeze_list(text):
    return tuple(_freeze(part) for part in text.split(","))


def _labels_list(text):
    return tuple("all" if part == "all" else int(part) for part in text.split(","))


def _layer(text):
    try:
        return int(text)
    except ValueError:
        return text


def _network_params(args):
    return {key: value for key, value in (
        ("backbone", args.backbone), ("image_size", args.image_size), ("device", args.device),
    ) if value is not None}


def _compare(args):
    from ._compare import compare, study_settings
    from ._report import format_table, write_report
    from .datasets import load_data

    X, y = load_data(args.data)
    overrides = dict(_network_params(args), freeze=args.freeze, max_epochs=args.max_epochs,
                     labels_per_class=args.labels_per_class, n_splits=args.n_splits,
                     seed=args.seed)
    plan = study_settings(args.quick, **overrides)
    source = args.data or "scikit-learn's built-in digits"
    description = (
        f"{len(y)} images of {len(np.unique(y))} classes from {source}; "
        f"{plan.n_splits}-fold stratified cross-validation; backbone {plan.backbone} "
        f"(image size {plan.image_size or 'from its weights'}), fine-tuning for at most "
        f"{plan.max_epochs} epochs with early stopping; "
        f"{'quick' if args.quick else 'full'} preset, seed {plan.seed}.")
    print(description, file=sys.stderr)
    start = time.perf_counter()
    results = compare(X, y, quick=args.quick, **overrides)
    files = write_report(results, args.out, description=description)
    print(format_table(results))
    print(f"\n{time.perf_counter() - start:.0f} s; wrote " +
          ", ".join(str(path) for path in files.values()))


def _extract(args):
    from ._features import CNNFeatureExtractor
    from .datasets import load_data

    X, y = load_data(args.data)
    extractor = CNNFeatureExtractor(**_network_params(args), weights=args.weights,
                                    layer=args.layer, pooling=args.pooling, progress=True)
    features = extractor.fit_transform(X)
    arrays = {"features": features, "y": y,
              "feature_names": extractor.get_feature_names_out().astype(str)}
    if X.dtype.kind in "US":
        arrays["paths"] = X
    np.savez_compressed(args.output, **arrays)
    print(f"{features.shape[0]} x {features.shape[1]} features written to {args.output}")


def _finetune(args):
    import joblib

    from ._finetune import FineTuneClassifier
    from .datasets import load_data

    X, y = load_data(args.data)
    model = FineTuneClassifier(**_network_params(args), weights=args.weights, freeze=args.freeze,
                               max_epochs=args.max_epochs, lr=args.lr, random_state=args.seed,
                               verbose=1)
    model.fit(X, y)
    joblib.dump(model, args.output)
    print(f"best epoch {model.best_epoch_} of {len(model.history_)}; model written to {args.output}")


def _predict(args):
    import joblib

    from .datasets import list_images

    model_path = Path(args.model)
    if not model_path.is_file():
        raise FileNotFoundError(f"Model file not found: '{model_path}'.")
    model = joblib.load(model_path)
    if not hasattr(model, "predict_proba"):
        raise ValueError(f"'{model_path}' does not hold a classifier with predict_proba.")
    X, names = list_images(args.data)
    proba = model.predict_proba(X)
    labels = model.classes_[proba.argmax(1)]
    output = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(output)
        writer.writerow(["path", "label", "probability"])
        for name, label, p in zip(names, labels, proba.max(1)):
            writer.writerow([name, label, f"{p:.4f}"])
    finally:
        if args.output:
            output.close()


def _backbones(args):
    from ._backbones import backbone_blocks, list_backbones

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
