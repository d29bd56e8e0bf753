"""The command line: safe model files, checks before work, unlabelled extraction, polish."""

import csv
import pickle
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
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    expected = model.predict([row["path"] for row in rows])
    assert [row["label"] for row in rows] == expected.tolist()


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
    assert lines[0] == "path,label,probability" and len(lines) == 41


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
    monkeypatch.setattr("sktransfer._compare.compare", no_work)
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


def test_extract_compiled_equals_uncompiled(tmp_path, monkeypatch):
    import sktransfer._compile as compiling

    compiles = []
    real_compile = compiling.torch.compile
    monkeypatch.setattr(compiling.torch, "compile",
                        lambda *args, **kwargs: compiles.append(1) or real_compile(*args, **kwargs))
    data = tmp_path / "images.npz"
    np.savez(data, X=np.random.default_rng(0).integers(0, 256, (8, 8, 8), dtype=np.uint8))
    features = {}
    for setting in ("off", "on"):
        out = tmp_path / f"{setting}.npz"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # resnet18 compiles: no fallback warning
            assert main(["extract", str(data), *NETWORK, "-o", str(out), "--batch-size", "4",
                         "--compile", setting]) == 0
        with np.load(out) as saved:
            features[setting] = saved["features"]
        assert len(compiles) == (setting == "on")
    np.testing.assert_allclose(features["on"], features["off"], rtol=1e-4, atol=1e-5)


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


def test_probe_writes_the_table_and_the_plot(image_folder, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(image_folder), *NETWORK, "--n-splits", "2", "-o", str(out)]) == 0
    table = np.genfromtxt(out / "probe.csv", delimiter=",", names=True, dtype=None,
                          encoding=None)
    assert table["name"].tolist() == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert ((table["accuracy_mean"] >= 0) & (table["accuracy_mean"] <= 1)).all()
    assert (out / "layers.png").stat().st_size > 10_000
    assert "raw pixels" in capsys.readouterr().out
