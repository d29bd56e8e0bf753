"""The command line: safe model files, checks before work, unlabelled extraction, polish."""

import csv
import os
import pickle
import stat
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
from PIL import Image

import sktransfer
from sktransfer import FineTuneClassifier
from sktransfer.cli import main

from ._helpers import tiny_cnn

NETWORK = ["--backbone", "resnet18", "--weights", "none", "--image-size", "16", "--device", "cpu"]


def truncate_one_jpeg(folder):
    path = sorted(folder.rglob("*.jpg"))[0]
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:400])
    return path


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_finetune_writes_a_safe_file_that_load_and_predict_read(image_folder, tmp_path,
                                                                  monkeypatch):
    model_file = tmp_path / "out" / "m.safetensors"  # the folder is created
    assert main(["finetune", str(image_folder), *NETWORK, "--freeze", "all", "--max-epochs",
                 "2", "-o", str(model_file)]) == 0
    for name in ("loads", "load"):  # from here on nothing may be unpickled
        monkeypatch.setattr(pickle, name, lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled"))
    model = sktransfer.load(model_file)
    assert isinstance(model, FineTuneClassifier) and model.n_frozen_ == 5
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model_file), str(image_folder), "-o", str(predictions)]) == 0
    assert b"\r" not in predictions.read_bytes()
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and list(rows[0]) == ["path", "prediction"]
    paths = [row["path"] for row in rows]
    assert [row["prediction"] for row in rows] == model.predict(paths).tolist()
    # --proba adds one column per class; a CSV of paths alone is data too.
    listing = tmp_path / "to-predict.csv"
    listing.write_text("path\n" + "".join(f"{path}\n" for path in paths[:5]))
    assert main(["predict", str(model_file), str(listing), "--proba", "-o",
                 str(predictions)]) == 0
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "prediction", "probability_horizontal",
                             "probability_vertical"]
    assert [row["path"] for row in rows] == paths[:5]
    proba = np.array([[float(row["probability_horizontal"]), float(row["probability_vertical"])]
                      for row in rows])
    np.testing.assert_allclose(proba, model.predict_proba(paths[:5]), atol=1e-4)


def test_predict_never_unpickles_without_the_flag(image_folder, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.joblib"
    joblib.dump({"model": Payload(marker)}, evil)
    assert main(["predict", str(evil), str(image_folder)]) == 2
    error = capsys.readouterr().err
    assert "pickle" in error and "--trust-pickle" in error and "runs code" in error
    assert not marker.exists()


def test_predict_reads_a_trusted_pickle_with_the_flag(stripes, image_folder, tmp_path, capsys):
    X, y = stripes
    model = FineTuneClassifier(tiny_cnn(), image_size=16, max_epochs=1, device="cpu",
                               random_state=0).fit(X, np.where(y == "h", "horizontal", "vertical"))
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    assert main(["predict", str(path), str(image_folder), "--trust-pickle"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,prediction" and len(lines) == 41


@pytest.mark.parametrize("content", [b"path,label\na.png,cat\n", bytes(range(256)) * 8, b""],
                         ids=["a CSV", "random bytes", "an empty file"])
def test_predict_on_a_file_that_is_no_model_says_so_in_one_line(image_folder, tmp_path,
                                                                capsys, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    assert main(["predict", str(path), str(image_folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "is not a model file" in error and "\n" not in error


def test_output_paths_are_checked_before_any_work(image_folder, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(FineTuneClassifier, "fit", no_work)
    monkeypatch.setattr("sktransfer.study.compare.compare", no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["finetune", str(image_folder), *NETWORK, "-o", str(a_file / "m.safetensors")]) == 2
    assert "'{}' is a file".format(a_file) in capsys.readouterr().err
    blocked = a_file / "sub" / "m.safetensors"
    assert main(["finetune", str(image_folder), *NETWORK, "-o", str(blocked)]) == 2
    assert "Cannot create the output folder" in capsys.readouterr().err
    assert main(["compare", str(image_folder), "-o", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["extract", str(image_folder), *NETWORK, "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["flat folder", "one class", "npz without y", "one image"])
def test_extract_needs_no_labels(image_folder, tmp_path, layout):
    if layout == "flat folder":
        data, n = image_folder / "horizontal", 20
    elif layout == "one class":
        data, n = tmp_path / "one-class", 20
        data.mkdir()
        (image_folder / "horizontal").rename(data / "horizontal")
    elif layout == "npz without y":
        data, n = tmp_path / "images.npz", 5
        np.savez(data, X=np.zeros((5, 8, 8), np.uint8))
    else:
        data, n = sorted(image_folder.rglob("*.png"))[0], 1
    out = tmp_path / "features.npz"
    assert main(["extract", str(data), *NETWORK, "-o", str(out)]) == 0
    with np.load(out) as saved:
        assert saved["features"].shape == (n, 512)
        assert ("y" in saved.files) == (layout == "one class")


def test_bad_files_are_listed_up_front_or_skipped(image_folder, tmp_path, capsys):
    bad = truncate_one_jpeg(image_folder)
    out = tmp_path / "features.npz"
    assert main(["extract", str(image_folder), *NETWORK, "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and "--on-error skip" in error and "X[" not in error
    with pytest.warns(UserWarning, match=f"Skipping 1 of 40 .*{bad.name}"):
        assert main(["extract", str(image_folder), *NETWORK, "-o", str(out),
                     "--on-error", "skip"]) == 0
    with np.load(out) as saved:
        assert len(saved["features"]) == 39 and str(bad) not in saved["paths"]


def test_option_errors_say_what_is_valid(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--freeze", "none"])
    assert "invalid freeze 'none'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--n-splits", "0"])
    assert "positive whole number" in capsys.readouterr().err


@pytest.mark.slow
def test_epoch_tables_carry_no_colour_codes_when_piped(image_folder, tmp_path, capsys):
    assert main(["finetune", str(image_folder), *NETWORK, "--freeze", "all", "--max-epochs",
                 "2", "-o", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "train_loss" in out and "\x1b[" not in out


def test_help_answers_without_importing_torch():
    code = ("import sys; from sktransfer.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().endswith("False")


@pytest.mark.slow
def test_probe_writes_the_table_and_the_plot(image_folder, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(image_folder), *NETWORK, "--n-splits", "2", "-o", str(out)]) == 0
    table = np.genfromtxt(out / "probe.csv", delimiter=",", names=True, dtype=None,
                          encoding=None)
    assert table["name"].tolist() == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert ((table["accuracy_mean"] >= 0) & (table["accuracy_mean"] <= 1)).all()
    assert (out / "layers.png").stat().st_size > 10_000
    assert "raw pixels" in capsys.readouterr().out


def write_csv(folder, images, targets, header):
    """PNG files and a CSV of ``path,target(s)`` rows beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i, (image, target) in enumerate(zip(images, targets)):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
        lines.append(",".join([f"{i:02d}.png", *map(str, np.atleast_1d(target))]))
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def read_predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("targets, task", [("brightness", []),
                                           ("counts", ["--task", "regression"])])
def test_finetune_trains_a_regressor_for_quantities(stripes, tmp_path, capsys, targets, task):
    X, _ = stripes
    y = X.mean(axis=(1, 2, 3)) if targets == "brightness" else np.arange(len(X)) % 7
    data = write_csv(tmp_path / "data", X, y, "path,target")
    model_file = tmp_path / "m.safetensors"
    assert main(["finetune", str(data), *NETWORK, *task, "--freeze", "all", "--max-epochs",
                 "2", "-o", str(model_file)]) == 0
    assert "a numeric target (regression)" in capsys.readouterr().err
    model = sktransfer.load(model_file)
    assert isinstance(model, sktransfer.FineTuneRegressor)
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model_file), str(data), "-o", str(predictions)]) == 0
    rows = read_predictions(predictions)
    assert list(rows[0]) == ["path", "prediction"] and len(rows) == 40
    np.testing.assert_allclose([float(row["prediction"]) for row in rows],
                               model.predict([row["path"] for row in rows]), rtol=1e-5)
    assert main(["predict", str(model_file), str(data), "--proba"]) == 2
    assert "--proba needs a classifier" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_writes_one_column_per_tag_for_a_multilabel_model(stripes, tmp_path):
    X, y = stripes
    tags = np.stack([y == "h", np.arange(len(y)) % 3 == 0], axis=1).astype(int)
    data = write_csv(tmp_path / "data", X, tags, "path,horizontal,third")
    model_file = tmp_path / "m.safetensors"
    assert main(["finetune", str(data), *NETWORK, "--freeze", "all", "--max-epochs", "2",
                 "-o", str(model_file)]) == 0
    model = sktransfer.load(model_file)
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model_file), str(data), "--proba", "-o",
                 str(predictions)]) == 0
    rows = read_predictions(predictions)
    assert list(rows[0]) == ["path", "0", "1", "probability_0", "probability_1"]
    paths = [row["path"] for row in rows]
    assert np.array_equal([[int(row["0"]), int(row["1"])] for row in rows], model.predict(paths))
    np.testing.assert_allclose([[float(row["probability_0"]), float(row["probability_1"])]
                                for row in rows], model.predict_proba(paths), atol=1e-4)


def test_predict_help_lists_csv_input(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert ".csv" in capsys.readouterr().out


@pytest.mark.parametrize("argv, meant", [
    (["finetune", "--freze", "2"], "--freeze"),
    (["extract", "--polling", "max"], "--pooling"),
    (["compare", "--folsd=3"], "--folds"),
])
def test_a_misspelt_option_gets_a_suggestion(capsys, argv, meant):
    with pytest.raises(SystemExit):
        main(argv)
    assert f"(did you mean {meant}?)" in capsys.readouterr().err


@pytest.mark.parametrize("error", [ValueError("bad input"), TypeError("bad type")])
@pytest.mark.parametrize("debug", [[], ["--debug"], "after the command"])
def test_usage_errors_are_one_line_unless_debug(image_folder, tmp_path, monkeypatch, capsys,
                                                error, debug):
    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr("sktransfer.datasets.load_data", failing_load)
    command = ["extract", str(image_folder), "-o", str(tmp_path / "f.npz")]
    argv = [*command, "--debug"] if debug == "after the command" else [*debug, *command]
    if not debug:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"sktransfer extract: error: {error}\n"
    else:
        with pytest.raises(type(error)) as raised:
            main(argv)
        assert raised.value is error and raised.traceback[-1].name == "failing_load"


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("bug"), AttributeError("bug")])
def test_errors_from_bugs_keep_their_traceback(image_folder, tmp_path, monkeypatch, error):
    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr("sktransfer.datasets.load_data", failing_load)
    with pytest.raises(type(error)) as raised:
        main(["extract", str(image_folder), "-o", str(tmp_path / "f.npz")])
    assert raised.value is error


def show_warning_as_python_does(message, category, filename, lineno, file=None, line=None):
    """Python's own showwarning (pytest records warnings instead of showing them)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.mark.slow
def test_skip_warning_is_one_clean_line(image_folder, tmp_path, capsys):
    bad = truncate_one_jpeg(image_folder)
    formatwarning = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show_warning_as_python_does
        assert main(["extract", str(image_folder), *NETWORK, "--on-error", "skip", "-o",
                     str(tmp_path / "f.npz")]) == 0
    assert warnings.formatwarning is formatwarning
    error = capsys.readouterr().err
    warning_lines = [line for line in error.splitlines() if "Skipping" in line]
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("sktransfer extract: warning: Skipping 1 of 40")
    assert bad.name in warning_lines[0]
    assert "warnings.warn" not in error and "UserWarning" not in error


@pytest.mark.parametrize("targets", ["classes", "quantities"])
def test_compare_header_says_when_early_stopping_applies(stripes, tmp_path, monkeypatch,
                                                         capsys, targets):
    import re

    from sktransfer.study.tasks import task_of
    from sktransfer._finetuning.base import MIN_VALIDATION_IMAGES

    X, y = stripes
    y = y if targets == "classes" else X.mean(axis=(1, 2, 3))
    data = write_csv(tmp_path / "data", X, y, "path,target")

    def stop(*args, **kwargs):
        raise ValueError("stopped after the header")

    monkeypatch.setattr("sktransfer.study.compare.compare", stop)
    assert main(["compare", str(data), "--out", str(tmp_path / "out"), "--quick"]) == 2
    header = capsys.readouterr().err
    assert "with early stopping" not in header
    # The threshold the header names is the one the study applies.
    validation = int(re.search(r"validation part holds at least (\d+)", header).group(1))
    assert validation == MIN_VALIDATION_IMAGES
    if targets == "classes":
        threshold = int(re.search(r"every class has at least (\d+)", header).group(1))
        task = task_of(y)

        def part(n):
            return np.repeat(["h", "v"], n)
        assert task.early_stopping(part(threshold - 1)) == {"early_stopping": False}
        assert task.early_stopping(part(threshold)).get("early_stopping", True)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["finetune", "extract", "compare"])
def test_written_files_respect_the_umask(image_folder, tmp_path, monkeypatch, command):
    from .test_compare import _study

    # The study itself writes nothing under --out (its cache is a temporary folder): a
    # ready table lets the report's files be written without minutes of training.
    monkeypatch.setattr("sktransfer.study.compare.compare", lambda *args, **kwargs: _study())
    out = tmp_path / "out"
    argv = {
        "finetune": ["finetune", str(image_folder), *NETWORK, "--freeze", "all",
                     "--max-epochs", "1", "-o", str(out / "m.safetensors")],
        "extract": ["extract", str(image_folder), *NETWORK, "-o", str(out / "f.npz")],
        "compare": ["compare", str(image_folder), "--out", str(out), "--quick"],
    }[command]
    umask = os.umask(0o022)
    try:
        assert main(argv) == 0
    finally:
        os.umask(umask)
    files = [path for path in out.rglob("*") if path.is_file()]
    assert files and {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == \
        {path.name: 0o644 for path in files}
