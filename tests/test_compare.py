"""The main job end to end: datasets, sktransfer.compare, the report and the CLI."""

import csv
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.model_selection import StratifiedKFold

from sktransfer import FineTuneClassifier, backbone_blocks, compare, write_report
from sktransfer.study.backbones import available_backbones
from sktransfer.study.methods import (MIN_STEPS_PER_EPOCH, _training, chosen_layer_method,
                                      feature_method_name, from_scratch)
from sktransfer.study.plots import plot_accuracy, plot_learning_curve
from sktransfer.study.report import reading
from sktransfer.study.results import result_columns
from sktransfer.study.settings import study_settings
from sktransfer.cli import main
from sktransfer.datasets import load_digits_images, load_image_folder

FAST = ["--image-size", "32", "--max-epochs", "2", "--folds", "2", "--freeze", "all,-1,0",
        "--device", "cpu"]


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


@pytest.mark.slow
def test_cli_compare_end_to_end(image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["compare", str(image_folder), "--out", str(out), "--quick", "--choose-depth",
                 *FAST]) == 0
    results = pd.read_csv(out / "results.csv")
    for column in ["kind", "method", "freeze", "labels_per_class", "accuracy", "accuracy_std",
                   "fit_seconds", "predict_seconds"]:
        assert column in results.columns
    assert set(results["kind"]) == {"classical", "features", "finetune", "scratch"}
    assert sorted(results.loc[results["kind"] == "finetune", "freeze"].astype(str)) == ["-1", "0", "all", "inner CV"]
    assert results["accuracy"].between(0, 1).all() and (results["fit_seconds"] > 0).all()
    # Stripes are easy for raw pixels: the table must show real learning, not chance.
    assert results.loc[results["kind"] == "classical", "accuracy"].max() >= 0.8
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "![accuracy by method and freeze depth](accuracy.png)" in report
    assert "## Reading" in report and "Best:" in report and "freeze=" in report
    assert "| classical | pixels + RBF SVC |" in report and "| classical | hog + RBF SVC |" in report
    printed = capsys.readouterr().out
    assert "pixels + RBF SVC" in printed and "results.csv" in printed


@pytest.mark.slow
def test_compare_learning_curve(stripes, tmp_path):
    X, y = stripes
    results = compare(X, y, quick=True, image_size=32, max_epochs=1, n_splits=2,
                      labels_per_class=(3, "all"), kinds=("classical", "finetune"),
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
        compare(X, np.zeros(40, dtype=int))
    with pytest.raises(ValueError, match="only 1 value"):
        compare(X, np.zeros(40))  # float: a regression target
    with pytest.raises(ValueError, match="kinds"):
        compare(X, y, kinds=("magic",))


@pytest.mark.parametrize("bad, meant", [
    ("folds", "n_splits"), ("seed", "random_state"), ("max_epoch", "max_epochs"),
    ("backbon", "backbones"),
])
def test_unknown_setting_names_it_and_the_close_one(stripes, bad, meant):
    X, y = stripes
    with pytest.raises(TypeError, match=rf"'{bad}' \(did you mean '{meant}'\?\)") as error:
        compare(X, y, quick=True, kinds=("classical",), progress=False, **{bad: 2})
    valid = str(error.value).split("Valid settings: ")[1]
    assert {"n_splits", "random_state", "max_epochs", "kinds"} <= set(valid.rstrip(".").split(", "))
    assert study_settings(random_state=7).random_state == 7


@pytest.mark.slow
def test_compare_names_blocks_and_keeps_depths_integer(stripes, tmp_path):
    X, y = stripes
    results = compare(X, y, quick=True, image_size=32, max_epochs=1, n_splits=2,
                      kinds=("classical", "features", "finetune"), freeze=("all",),
                      random_state=1, device="cpu", progress=False)
    blocks = backbone_blocks("efficientnet_lite0", image_size=32)
    features = results.loc[results["kind"] == "features", "method"].tolist()
    assert features == [f"frozen features of block {blocks[-1].name} + logistic regression",
                        chosen_layer_method()]
    assert results["frozen_blocks"].dtype == "Int64"
    assert results.loc[results["kind"] == "finetune", "frozen_blocks"].tolist() == [len(blocks)]
    assert results.loc[results["kind"] != "finetune", "frozen_blocks"].isna().all()
    files = write_report(results, tmp_path)
    with open(files["csv"]) as f:
        depths = {row["kind"]: row["frozen_blocks"] for row in csv.DictReader(f)}
    assert depths == {"classical": "", "features": "", "finetune": str(len(blocks))}
    report = files["report"].read_text()
    assert f"frozen features of block {blocks[-1].name}" in report
    assert "nan" not in report and f"{len(blocks)}.0" not in report


@pytest.mark.slow
def test_scratch_row_takes_enough_steps_and_keeps_the_last_epoch(tmp_path):
    """A random network's BatchNorm statistics need many steps before eval mode works.

    With the quick preset's batches of 64, 200 images made 3-4 steps per epoch: the
    eval-mode validation loss rose from epoch 1 on while the training loss fell, and
    early stopping kept epoch 1, a network scoring at chance.
    """
    plan = study_settings(True, image_size=32, max_epochs=2, kinds=("scratch",), device="cpu")
    [backbone] = available_backbones(plan.backbones, plan.image_size)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8)
    y = np.arange(200) % 2
    clf = FineTuneClassifier(**from_scratch(_training(plan, backbone, str(tmp_path)), y))
    clf.fit(X, y)
    batch_norm = next(m for m in clf.net_.module_.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert batch_norm.num_batches_tracked >= MIN_STEPS_PER_EPOCH * plan.max_epochs
    assert clf.best_epoch_ == plan.max_epochs == len(clf.history_)
    # A random network has no pretrained bottom blocks to protect with smaller rates.
    assert len({group["lr"] for group in clf.net_.optimizer_.param_groups}) == 1


def _results(*rows):
    """A results table as compare returns it, from (kind, method, freeze, labels, accuracy, std)."""
    depth = {"all": 9, 6: 6, 0: 0}
    return pd.DataFrame([
        {"kind": kind, "method": method, "freeze": freeze, "labels_per_class": labels,
         "accuracy": accuracy, "accuracy_std": std, "fit_seconds": 1.0, "predict_seconds": 0.1,
         "n_train": 100, "n_test": 50, "frozen_blocks": depth.get(freeze)}
        for kind, method, freeze, labels, accuracy, std in rows
    ], columns=result_columns())


def _study(labels=(5, 20, "all"), depths=("all", 6, 0)):
    rows = []
    for i, count in enumerate(labels):
        rows += [("classical", "pixels + logistic regression", None, count, 0.41 + i / 10, 0.05),
                 ("classical", "pixels + RBF SVC", None, count, 0.43 + i / 10, 0.06),
                 ("features", feature_method_name("conv_head"), None, count, 0.61 + i / 10, 0.04),
                 ("scratch", "train from random weights", 0, count, 0.35 + i / 10, 0.03)]
        rows += [("finetune", "fine-tune", d, count, 0.55 + i / 10 + j / 50, 0.08)
                 for j, d in enumerate(depths)]
    return _results(*rows)


def test_learning_curve_labels_only_the_chosen_counts(tmp_path):
    figure = plot_learning_curve(_study(labels=(3, 10, 20, "all")), tmp_path / "curve.png")
    figure.draw_without_rendering()
    axis = figure.axes[0].xaxis
    assert _shown(axis.get_majorticklabels()) == ["3", "10", "20", "all"]
    assert _shown(axis.get_minorticklabels()) == []


def _shown(tick_labels):
    return [t.get_text() for t in tick_labels if t.get_visible() and t.get_text()]


def test_every_method_has_its_own_colour(tmp_path):
    results = _study()
    curve = plot_learning_curve(results, tmp_path / "curve.png")
    handles, labels = curve.axes[0].get_legend_handles_labels()
    colours = {label: handle.lines[0].get_color() for handle, label in zip(handles, labels)}
    assert len(labels) == 7 and len({str(c) for c in colours.values()}) == 7
    bars = plot_accuracy(results, tmp_path / "accuracy.png").axes[0]
    names = [t.get_text() for t in bars.get_yticklabels()]
    fills = {name: patch.get_facecolor() for name, patch in zip(names, bars.patches)}
    assert fills["pixels + logistic regression"] != fills["pixels + RBF SVC"]
    assert len(set(fills.values())) == len(fills)


def test_value_labels_clear_the_error_bars(tmp_path):
    results = _study(labels=("all",))
    figure = plot_accuracy(results, tmp_path / "accuracy.png")
    figure.draw_without_rendering()
    bars = figure.axes[0]
    to_data = bars.transData.inverted()
    accuracy = dict(zip(results["accuracy"].map("{:.3f}".format), results["accuracy"]))
    spread = dict(zip(results["accuracy"].map("{:.3f}".format), results["accuracy_std"]))
    assert len(bars.texts) == len(results)
    for text in bars.texts:
        box = text.get_window_extent().transformed(to_data)
        value = text.get_text()
        assert box.x0 > accuracy[value] + spread[value] or box.x1 < accuracy[value] - spread[value]
        assert box.x1 <= bars.get_xlim()[1]


@pytest.mark.parametrize("depths, ranked", [(("all",), False), (("all", 0), True)])
def test_reading_ranks_depths_only_when_there_are_several(depths, ranked):
    text = reading(_study(labels=("all",), depths=depths))
    assert ("was worst" in text) == ranked
    assert ("freeze=0 was best" in text and "freeze=all was worst" in text) == ranked
    assert "block conv_head" in text


def test_report_prints_depths_as_integers(tmp_path):
    # As a table read back from CSV: pandas holds depths beside blanks as floats.
    results = _study(labels=("all",)).astype({"frozen_blocks": float})
    files = write_report(results, tmp_path)
    lines = files["csv"].read_text().splitlines()
    assert lines[0].endswith(",frozen_blocks")
    assert sorted(line.rsplit(",", 1)[1] for line in lines[1:]) == ["", "", "", "0", "0", "6", "9"]
    report = files["report"].read_text()
    assert "| 9 |" in report and "9.0" not in report and "nan" not in report


@pytest.mark.slow
def test_cli_backbones_lists_names_and_blocks(capsys):
    assert main(["backbones", "resnet18"]) == 0
    assert "layer4" in capsys.readouterr().out
    assert main(["backbones"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out


def _test_images_warnings(caught):
    return [str(w.message) for w in caught if "test images" in str(w.message)]


@pytest.mark.slow
def test_n_test_is_the_mean_over_folds_and_small_folds_warn(stripes):
    """Three stratified folds of 20 + 20 stripes test 14, 13 and 13 images: the mean, 13,
    is each row's n_test (not the first fold's 14), and folds that small are noise."""
    X, y = stripes
    with pytest.warns(UserWarning, match=r"only 13-14 test images.*n_splits=2 tests 20"):
        results = compare(X, y, quick=True, n_splits=3, kinds=("classical",), progress=False)
    sizes = [len(test) for _, test in StratifiedKFold(3, shuffle=True, random_state=0).split(X, y)]
    assert sizes == [14, 13, 13]
    assert results["n_test"].tolist() == [13, 13, 13]
    assert results["n_train"].tolist() == [27, 27, 27]  # 26.7 rounded, as n_test
    recommended = reading(results).split("**Recommendation for this data:**")[1]
    assert "**Caution:** the test folds held only 13 images each" in recommended


@pytest.mark.slow
def test_twelve_images_warn_and_enough_do_not(stripes):
    """3 images of each of 4 digits give folds of 4 test images: a recommendation from
    them is noise, and compare and the report say so; 20 test images per fold do not."""
    X, y = load_digits_images()
    few = np.concatenate([np.flatnonzero(y == digit)[:3] for digit in range(4)])
    with pytest.warns(UserWarning, match=r"3 folds tests the methods on only 4 test images "
                                         r"\(one image is 25%.*at least 20 per test fold"):
        results = compare(X[few], y[few], quick=True, kinds=("classical",), progress=False)
    assert results["n_test"].tolist() == [4, 4, 4]
    recommended = reading(results).split("**Recommendation for this data:**")[1]
    assert "held only 4 images each (one image is 25% of a fold's score)" in recommended

    X, y = stripes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = compare(X, y, quick=True, n_splits=2, kinds=("classical",), progress=False)
    assert _test_images_warnings(caught) == [] and results["n_test"].tolist() == [20, 20, 20]
    assert "Caution" not in reading(results)


@pytest.mark.slow
def test_the_report_says_where_early_stopping_was_off(stripes, tmp_path, monkeypatch):
    """Two labels per class leave no image of a class to hold out: that row trains
    every epoch, the full training part stops early, and the report says which did which."""
    monkeypatch.setattr("sktransfer._finetuning.base.MIN_VALIDATION_IMAGES", 2)  # 20 images do
    X, y = stripes
    results = compare(X, y, quick=True, image_size=32, max_epochs=1, n_splits=2,
                      labels_per_class=(2, "all"), kinds=("finetune",), freeze=("all",),
                      device="cpu", progress=False)
    assert results["early_stopping"].tolist() == [False, True]
    text = write_report(results, tmp_path)["report"].read_text()
    assert ("except in 1 of the 2 fine-tuning rows (labels_per_class=2) whose training parts "
            "were too small to hold images out") in text
    assert "| finetune | fine-tune | efficientnet_lite0 | all |" in text
    assert "| False |" in text and "| True |" in text
    # Read back from the CSV, as `sktransfer compare` users have it: the same sentence.
    again = pd.read_csv(tmp_path / "results.csv").astype({"labels_per_class": str})
    assert "except in 1 of the 2 fine-tuning rows (labels_per_class=2)" in reading(again)
