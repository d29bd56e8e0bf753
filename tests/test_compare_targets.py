"""sktransfer compare on regression and multi-label targets, and CSV data files."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import PixelFeatures, compare, write_report
from sktransfer.study.methods import CHOSEN_DEPTH_METHOD
from sktransfer.study.settings import study_settings
from sktransfer.study.report import reading
from sktransfer.study.tasks import task_of
from sktransfer.cli import main
from sktransfer.datasets import load_data, load_digits_images

SMALL = dict(quick=True, image_size=32, max_epochs=1, n_splits=2, inner_splits=2,
             device="cpu", progress=False, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_images()
    return X[:120], y[:120]


def ink_fraction(X):
    """The fraction of each digit's pixels that are inked: a real quantity of the image."""
    return (X > 0.5).mean(axis=(1, 2)).astype(float)


def digit_tags(y):
    return pd.DataFrame({"even": y % 2 == 0, "big": y >= 5,
                         "loop": np.isin(y, [0, 6, 8, 9])}).astype(int)


@pytest.mark.slow
def test_regression_reports_r2_and_mae_with_a_ridge_baseline(digits, tmp_path):
    X, y = digits
    target = ink_fraction(X)
    results = compare(X, target, kinds=("classical", "features"), **SMALL)
    assert results.attrs["task"] == "regression" and results.attrs["metric"] == "r2"
    assert {"r2", "r2_std", "mae", "mae_std"} <= set(results.columns)
    assert "accuracy" not in results.columns
    pixels = results[results["kind"] == "classical"].set_index("method")
    assert list(pixels.index) == ["pixels + ridge regression", "pixels + RBF SVR",
                                  "hog + RBF SVR"]
    # The same folds (shuffled KFold seeded by random_state) and scores, computed by hand.
    size = study_settings(True).pixel_size
    r2, mae = [], []
    for train, test in KFold(2, shuffle=True, random_state=0).split(X):
        model = make_pipeline(PixelFeatures(size), StandardScaler(),
                              task_of(target).linear_model())
        predicted = model.fit(X[train], target[train]).predict(X[test])
        r2.append(r2_score(target[test], predicted))
        mae.append(mean_absolute_error(target[test], predicted))
    assert pixels.loc["pixels + ridge regression", "r2"] == pytest.approx(np.mean(r2))
    assert pixels.loc["pixels + ridge regression", "mae"] == pytest.approx(np.mean(mae))
    assert np.mean(r2) > 0.4  # the ink fraction is learnable from pixels
    features = results[results["kind"] == "features"]
    assert features["method"].str.endswith("+ ridge regression").all()
    guess = np.abs(target - target.mean()).mean()  # MAE of predicting the mean
    assert features["mae"].min() < 0.8 * guess
    files = write_report(results, tmp_path)
    assert files["plot"].name == "scores.png" and files["plot"].read_bytes()[:4] == b"\x89PNG"
    assert "r2_mean" in pd.read_csv(files["layers_csv"]).columns
    text = files["report"].read_text()
    assert "with R² " in text and "ridge regression" in text and "| r2 | r2_std" not in text


@pytest.mark.slow
def test_multilabel_reports_macro_f1_subset_accuracy_and_each_label(digits, tmp_path):
    X, y = digits
    tags = digit_tags(y)
    results = compare(X, tags, kinds=("classical", "finetune"), freeze=("all",), **SMALL)
    assert results.attrs["task"] == "multilabel" and results.attrs["metric"] == "f1_macro"
    per_label = ["f1 even", "f1 big", "f1 loop"]
    assert {"f1_macro", "subset_accuracy", *per_label} <= set(results.columns)
    # Macro F1 is the mean of the labels' F1 in each fold, so also over the folds.
    np.testing.assert_allclose(results["f1_macro"], results[per_label].mean(axis=1))
    assert results["subset_accuracy"].between(0, 1).all()
    svc = results.set_index("method").loc["pixels + RBF SVC"]
    assert svc["f1_macro"] > 0.8 and svc["subset_accuracy"] > 0.5
    assert results.loc[results["kind"] == "finetune", "f1_macro"].between(0, 1).all()
    files = write_report(results, tmp_path)
    assert "macro F1" in reading(results) and files["plot"].name == "scores.png"


@pytest.mark.slow
def test_regression_depth_is_chosen_by_an_inner_grid_search(digits):
    X, y = digits
    results = compare(X, ink_fraction(X), kinds=("finetune",), freeze=("all", -1),
                      choose_depth=True, **SMALL)
    chosen = results.set_index("method").loc[CHOSEN_DEPTH_METHOD]
    assert set(chosen["chosen"].split(", ")) <= {"all", "-1"}
    assert np.isfinite(chosen["r2"]) and chosen["mae"] > 0


@pytest.mark.parametrize("y, task", [
    (np.array([0, 1, 2, 1]), "classification"),
    (np.array(["cat", "dog", "cat", "dog"]), "classification"),
    (np.array([0.5, 1.5, 2.0, 0.1]), "regression"),
    (np.array([[0.5, 1.0], [1.5, 2.0], [2.0, 0.0], [0.1, 0.3]]), "regression"),
    (np.array([[0, 1], [1, 1], [1, 0], [0, 0]]), "multilabel"),
    (np.array([[0], [1], [2], [1]]), "classification"),  # a column vector is 1-D
])
def test_the_task_is_read_off_the_target(y, task):
    assert task_of(y).name == task


@pytest.mark.parametrize("y, task, message", [
    (np.array([0, 1, 2, 1]), "multilabel", "2-D 0/1 indicator"),
    (np.array([0.5, np.nan, 2.0, 0.1]), "auto", "NaN"),
    (np.array(["a", "b", "a", "b"]), "regression", "must be numbers"),
    (np.array([[0, 1], [1, 1]]), "classification", "1-D"),
    (np.array([0, 1]), "ordinal", "not one of"),
])
def test_a_target_the_task_cannot_take_is_named(y, task, message):
    with pytest.raises(ValueError, match=message):
        task_of(y, task)


@pytest.mark.slow
def test_integer_counts_are_regression_on_request(digits):
    X, y = digits
    results = compare(X, y, task="regression", kinds=("classical",), **SMALL)
    assert results.attrs["task"] == "regression" and results["r2"].max() > 0.3
    with pytest.raises(ValueError, match="no classes to subsample"):
        compare(X, ink_fraction(X), labels_per_class=(5, "all"), kinds=("classical",), **SMALL)


def _write_csv(folder, X, rows, header="path,ink"):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] if header else []
    for i, (image, values) in enumerate(zip(X, rows)):
        Image.fromarray((image * 255).astype(np.uint8)).resize((16, 16)).save(
            folder / f"digit{i}.png")
        lines.append(",".join([f"digit{i}.png", *map(str, np.atleast_1d(values))]))
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def test_csv_targets_are_read_as_their_kind(digits, tmp_path):
    X, y = digits
    path = _write_csv(tmp_path / "floats", X[:6], ink_fraction(X[:6]))
    images, target = load_data(path)
    assert target.dtype.kind == "f" and np.allclose(target, ink_fraction(X[:6]))
    assert Image.open(images[0]).size == (16, 16)
    _, counts = load_data(_write_csv(tmp_path / "ints", X[:6], y[:6], header=None))
    assert counts.dtype.kind == "i" and list(counts) == list(y[:6])
    _, names = load_data(_write_csv(tmp_path / "text", X[:4], ["a", "b", "a", "b"]))
    assert list(names) == ["a", "b", "a", "b"]
    _, tags = load_data(_write_csv(tmp_path / "tags", X[:6], digit_tags(y[:6]).to_numpy(),
                                   header="path,even,big,loop"))
    assert tags.shape == (6, 3) and task_of(tags).name == "multilabel"


def test_a_missing_first_image_is_reported_not_taken_for_a_header(digits, tmp_path):
    X, _ = digits
    path = _write_csv(tmp_path, X[:3], [0.1, 0.2, 0.3], header=None)
    path.write_text("nothere.png,0.5\n" + path.read_text())
    with pytest.raises(ValueError, match="nothere.png"):
        load_data(path)
    path.write_text("digit0.png,12345678901234567890123\ndigit1.png,2\n")
    _, y = load_data(path)  # beyond int64: read as floats, not a traceback
    assert y.dtype.kind == "f"


@pytest.mark.parametrize("body, message", [
    ("digit0.png,0.5\ndigit1.png\n", "same number of targets"),
    ("digit0.png,0.5\ndigit1.png,\n", "lack a target"),
    ("path,ink\n", "lists no images"),
])
def test_a_bad_csv_is_named(digits, tmp_path, body, message):
    X, _ = digits
    path = _write_csv(tmp_path, X[:2], [0.1, 0.2])
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_data(path)


@pytest.mark.slow
def test_cli_compares_a_csv_regression_target(digits, tmp_path, capsys):
    X, _ = digits
    path = _write_csv(tmp_path / "data", X[:40], ink_fraction(X[:40]))
    out = tmp_path / "report"
    assert main(["compare", str(path), "--out", str(out), "--quick", "--image-size", "32",
                 "--max-epochs", "1", "--folds", "2", "--freeze", "all,0", "--device",
                 "cpu"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert {"r2", "mae"} <= set(results.columns)
    # --quick leaves the depth search out; the layer is still chosen by inner CV.
    assert "inner CV" not in set(results["freeze"].astype(str))
    assert results["chosen"].notna().sum() == 1
    assert (out / "scores.png").is_file()
    captured = capsys.readouterr()
    assert "a numeric target (regression)" in captured.err and "2-fold cross" in captured.err
