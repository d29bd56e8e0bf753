"""What each ``sktransfer`` command does, given its parsed arguments."""

import os
import sys
import time
from pathlib import Path


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


def run_compare(args):
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
    """When the study stops fine-tuning early (see study.tasks.ClassificationTask)."""
    from sktransfer._finetuning.base import MIN_VALIDATION_IMAGES

    rule = (f"stopping early where the validation part holds at least {MIN_VALIDATION_IMAGES} "
            "images")
    return rule + (" and every class has at least 3 training images" if task.stratified else "")


def run_extract(args):
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


def run_finetune(args):
    from sktransfer._finetuning.classifier import FineTuneClassifier
    from sktransfer._finetuning.regressor import FineTuneRegressor
    from sktransfer._persistence import save
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


def run_predict(args):
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
        from sktransfer._persistence import load

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


def run_export(args):
    from sktransfer._export import export_onnx

    import onnx

    model = _load_model(Path(args.model), trust_pickle=args.trust_pickle)
    output = export_onnx(model, _writable_file(args.output))
    graph = onnx.load(output).graph
    shape = ", ".join(str(dim.dim_param or dim.dim_value)
                      for dim in graph.input[0].type.tensor_type.shape.dim)
    print(f"wrote {output}: input 'images', uint8 ({shape}); outputs "
          f"{', '.join(repr(o.name) for o in graph.output)}")


def run_probe(args):
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


def run_backbones(args):
    from sktransfer._engine.backbones import backbone_blocks, list_backbones

    if args.name is None:
        print("embedded (offline):", ", ".join(list_backbones("embedded")))
        print("torchvision:", ", ".join(list_backbones("torchvision")))
        print("timm: any timm model as timm/<name> (sktransfer backbones timm/<name>)")
        return
    print(f"{'index':>5s}  {'block':<16s} {'channels':>8s} {'stride':>6s}")
    for block in backbone_blocks(args.name, image_size=args.image_size):
        print(f"{block.index:>5d}  {block.name:<16s} {block.channels:>8d} {block.reduction:>6d}")
