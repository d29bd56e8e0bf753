"""The main job end to end: datasets, sktransfer.compare, the report and the CLI."""

import csv

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sktransfer import compare
from sktransfer.cli import main
from sktransfer.datasets import load_digits_images, load_image_folder

FAST = ["--image-size", "32", "--max-epochs", "2", "--folds", "2", "--freeze", "all,-1,0",
        "--device", "cpu"]


@pytest.fixture
def image_folder(tmp_path, stripes):
    """A class folder per label: 20 horizontal-stripe and 20 vertical-stripe PNGs and JPEGs."""
    X, y = stripes
    root = tmp_path / "images"
    for i, (image, label) in enumerate(zip(X, y)):
        folder = root / ("horizontal" if label == "h" else "vertical")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}{'.png' if i % 3 else '.jpg'}")
    (root / "horizontal" / "notes.txt").write_text("not an image, skipped")
    return root


def test_load_image_folder(image_folder):
    X, y = load_image_folder(image_folder)
    assert len(X) == 40 and sorted(set(y)) == ["horizontal", "vertical"]
    assert all(path.endswith((".png", ".jpg")) for path in X)
    assert y[0] == "horizontal" and y[-1] == "vertical"


def test_load_digits_images():
    X, y = load_digits_images()
    assert X.shape == (1797, 8, 8) and X.min() == 0 and X.max() == 1 and len(set(y)) == 10


@pytest.mark.parametrize("layout, message", [
    ("missing", "not found"), ("empty", "No images found"), ("one class", "only 1 class"),
    ("broken file", "not readable images: .*broken.png"), ("a file", "is a file, not a folder"),
])
def test_bad_folders_are_named(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout in ("one class", "broken file"):
        (root / "cats").mkdir()
        Image.new("RGB", (8, 8)).save(root / "cats" / "a.png")
    if layout == "broken file":
        (root / "dogs").mkdir()
        (root / "dogs" / "broken.png").write_bytes(b"\x89PNG garbage")
    if layout == "a file":
        root = tmp_path / "file.png"
        Image.new("RGB", (8, 8)).save(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_image_folder(root)
    assert main(["compare", str(root), "--out", str(tmp_path / "out")]) == 2


def test_cli_compare_end_to_end(image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(image_folder), "--out", str(out), "--quick", *FAST]) == 0
    results = pd.read_csv(out / "results.csv")
    for column in ["kind", "method", "freeze", "labels_per_class", "accuracy", "accuracy_std",
                   "fit_seconds", "predict_seconds"]:
        assert column in results.columns
    assert set(results["kind"]) == {"pixels", "features", "finetune", "scratch"}
    assert sorted(results.loc[results["kind"] == "finetune", "freeze"].astype(str)) == ["-1", "0", "all"]
    assert results["accuracy"].between(0, 1).all() and (results["fit_seconds"] > 0).all()
    # Stripes are easy for raw pixels: the table must show real learning, not chance.
    assert results.loc[results["kind"] == "pixels", "accuracy"].max() >= 0.8
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "![accuracy by method and freeze depth](accuracy.png)" in report
    assert "## Reading" in report and "Best:" in report and "freeze=" in report
    assert "| pixels | pixels + RBF SVC |" in report
    printed = capsys.readouterr().out
    assert "pixels + RBF SVC" in printed and "results.csv" in printed


def test_compare_learning_curve(stripes, tmp_path):
    from sktransfer import write_report

    X, y = stripes
    results = compare(X, y, quick=True, image_size=32, max_epochs=1, n_splits=2,
                      labels_per_class=(3, "all"), kinds=("pixels", "finetune"),
                      freeze=("all",), device="cpu", progress=False)
    assert list(results["labels_per_class"].unique()) == [3, "all"]
    few = results[results["labels_per_class"] == 3]
    assert (few["n_train"] == 6).all() and (results.loc[results["labels_per_class"] == "all", "n_train"] == 20).all()
    files = write_report(results, tmp_path)
    assert files["learning_curve"].read_bytes().startswith(b"\x89PNG")
    assert "With only 3 labels per class" in files["report"].read_text()


def test_compare_rejects_bad_input(stripes):
    X, y = stripes
    with pytest.raises(ValueError, match="40 images but y has 39"):
        compare(X, y[:-1])
    with pytest.raises(ValueError, match="only 1 class"):
        compare(X, np.zeros(40))
    with pytest.raises(ValueError, match="kinds"):
        compare(X, y, kinds=("magic",))


def test_cli_extract_finetune_predict_backbones(image_folder, tmp_path, capsys):
    features = tmp_path / "features.npz"
    assert main(["extract", str(image_folder), "-o", str(features), "--image-size", "32",
                 "--layer", "blocks.2", "--device", "cpu"]) == 0
    with np.load(features) as saved:
        assert saved["features"].shape == (40, 40) and len(saved["paths"]) == 40
    model = tmp_path / "model.joblib"
    assert main(["finetune", str(image_folder), "--freeze", "all", "--image-size", "32",
                 "--max-epochs", "2", "-o", str(model), "--device", "cpu"]) == 0
    predictions = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(image_folder), "-o", str(predictions)]) == 0
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {r["label"] for r in rows} <= {"horizontal", "vertical"}
    assert all(0.5 <= float(r["probability"]) <= 1 for r in rows)
    capsys.readouterr()
    assert main(["backbones", "resnet18"]) == 0
    assert "layer4" in capsys.readouterr().out
    assert main(["backbones"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "nope.joblib"), str(image_folder)]) == 2
    assert "Model file not found" in capsys.readouterr().err
