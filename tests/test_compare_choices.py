"""The comparison's choices (layer, depth, backbone) are made inside each outer training part."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from sklearn.model_selection import StratifiedKFold

import sktransfer.study.layer_choice as layer_choice
from sktransfer import FineTuneClassifierCV, compare, write_report
from sktransfer.study.backbones import available_backbones, freeze_depth
from sktransfer.study.methods import CHOSEN_DEPTH_METHOD, chosen_layer_method
from sktransfer.study.report import format_table, reading, recommendation
from sktransfer.study.results import CHOSEN_BY_CV, probe_table, result_columns
from sktransfer.study.settings import study_settings
from sktransfer.cli import main

CHOSEN_LAYER_METHOD = chosen_layer_method()
SMALL = dict(quick=True, image_size=32, max_epochs=1, n_splits=2, inner_splits=2, choose_depth=True,
             device="cpu", progress=False, random_state=0)


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.mark.slow
def test_layer_and_depth_are_chosen_on_the_training_part_only(stripes, monkeypatch):
    X, y = stripes
    outer = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    digests = np.array([_digest(image) for image in X])
    probed, searched = [], []
    score_blocks = layer_choice.score_blocks

    def recording_score_blocks(features, labels, cv, **options):
        rows = options.get("rows", slice(None))
        probed.append(set(digests[rows]))
        return score_blocks(features, labels, cv, **options)

    search_fit = FineTuneClassifierCV.fit

    def recording_search_fit(self, images, labels):
        searched.append({_digest(image) for image in images})
        return search_fit(self, images, labels)

    monkeypatch.setattr(layer_choice, "score_blocks", recording_score_blocks)
    monkeypatch.setattr(FineTuneClassifierCV, "fit", recording_search_fit)
    results = compare(X, y, kinds=("features", "finetune"), freeze=("all", -1), **SMALL)

    # The layer probe of the report: one call over all images and the outer folds.
    diagnostic = [seen for seen in probed if len(seen) == len(X)]
    inner_choices = [seen for seen in probed if len(seen) < len(X)]
    assert len(diagnostic) == 1 and len(inner_choices) == len(searched) == len(outer)
    for (train, test), layer_seen, depth_seen in zip(outer, inner_choices, searched):
        assert layer_seen == depth_seen == set(digests[train])
        assert not layer_seen & set(digests[test])

    chosen = results.set_index("method")
    layer = chosen.loc[CHOSEN_LAYER_METHOD]
    blocks = probe_table(results)["name"].tolist()
    assert all(name in blocks for name in layer["chosen"].split(", "))
    depth = chosen.loc[CHOSEN_DEPTH_METHOD]
    assert depth["freeze"] == CHOSEN_BY_CV and pd.isna(depth["frozen_blocks"])
    assert set(depth["chosen"].split(", ")) <= {"all", "-1"}
    # The search and the refit of the chosen depth both count: more than one fit at a depth.
    fixed = results[(results["kind"] == "finetune") & (results["freeze"] != CHOSEN_BY_CV)]
    assert depth["fit_seconds"] > fixed["fit_seconds"].max()


@pytest.mark.slow
def test_the_probe_is_a_labelled_diagnostic_and_the_report_recommends(stripes, tmp_path):
    X, y = stripes
    results = compare(X, y, kinds=("classical", "features"), **SMALL)
    probe = probe_table(results)
    assert list(probe["block"]) == list(range(9))
    assert probe["accuracy_mean"].between(0, 1).all()
    # Stripes: some block's features separate the classes far above chance.
    assert probe["accuracy_mean"].max() >= 0.8
    files = write_report(results, tmp_path)
    assert files["layers"].read_bytes().startswith(b"\x89PNG")
    assert pd.read_csv(files["layers_csv"])["name"].tolist() == probe["name"].tolist()
    report = files["report"].read_text()
    assert "![linear probe on every block: a diagnostic over the test folds](layers.png)" in report
    assert "Which layer transfers best" in report and "diagnostic" in report
    assert report.count("**Recommendation for this data:**") == 1


def test_recommendation_takes_the_cheapest_method_within_noise_of_the_best():
    rows = pd.DataFrame([
        {"kind": "classical", "method": "pixels + RBF SVC", "labels_per_class": "all",
         "accuracy": 0.950, "accuracy_std": 0.010, "fit_seconds": 0.5, "predict_seconds": 0.1,
         "n_train": 100, "n_test": 50},
        {"kind": "finetune", "method": "fine-tune", "freeze": 6, "labels_per_class": "all",
         "accuracy": 0.955, "accuracy_std": 0.010, "fit_seconds": 60.0, "predict_seconds": 1.0,
         "n_train": 100, "n_test": 50},
        {"kind": "features", "method": "x", "labels_per_class": "all",
         "accuracy": 0.900, "accuracy_std": 0.010, "fit_seconds": 0.1, "predict_seconds": 0.1,
         "n_train": 100, "n_test": 50},
    ], columns=result_columns())
    text = recommendation(rows)
    assert "pixels + RBF SVC" in text and "120x faster" in text
    assert "fine-tune, freeze=6, 0.955" in text
    # Farther than the spread from the best: the best is recommended.
    rows.loc[0, "accuracy"] = 0.90
    assert "fine-tune, freeze=6: accuracy 0.955" in recommendation(rows)
    assert reading(rows).endswith(recommendation(rows))


@pytest.mark.slow
def test_each_backbone_with_weights_gets_its_rows(stripes, tmp_path):
    X, y = stripes
    weights = tmp_path / "mobilenet.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights)
    with pytest.warns(UserWarning, match="Skipping backbone 'resnet18'.*could not be downloaded"):
        results = compare(X, y, kinds=("classical", "features", "finetune"), freeze=("all",),
                          backbones=["efficientnet_lite0", f"mobilenet_v3_small={weights}",
                                     "resnet18"], **SMALL)
    transfer = results[results["kind"].isin(["features", "finetune"])]
    mobile = "mobilenet_v3_small (mobilenet.pth)"  # a weights file: named in the label
    assert list(dict.fromkeys(transfer["backbone"])) == ["efficientnet_lite0", mobile]
    assert transfer.groupby("backbone").size().tolist() == [3, 3]  # top layer, chosen, freeze
    assert results.loc[results["kind"] == "classical", "backbone"].isna().all()
    assert set(probe_table(results)["backbone"]) == {"efficientnet_lite0", mobile}
    assert "mobilenet_v3_small" in format_table(results)  # the console tells them apart
    files = write_report(results, tmp_path / "report")
    text = files["report"].read_text()
    assert f"| features | frozen features of block features.12 + logistic regression | {mobile} |" in text
    assert f"({mobile}, layers.png)" in text and "(efficientnet_lite0, layers.png)" in text


def test_no_backbone_with_weights_is_an_error(stripes):
    X, y = stripes
    with pytest.warns(UserWarning, match="Skipping"), \
            pytest.raises(ValueError, match="None of the backbones.*embedded 'efficientnet_lite0'"):
        compare(X, y, backbones=["resnet18"], **SMALL)


def test_backbone_and_backbones_settings():
    assert study_settings(backbone="resnet18").backbones == ("resnet18",)
    assert study_settings(backbones="resnet18").backbones == ("resnet18",)
    with pytest.raises(TypeError, match="not both"):
        study_settings(backbone="a", backbones=("b",))
    with pytest.raises(TypeError, match=r"'model' \(did you mean 'backbones'\?\)"):
        study_settings(model="resnet18")


@pytest.mark.slow
def test_cli_compare_takes_several_backbones(image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="Skipping backbone 'resnet18'"):
        code = main(["compare", str(image_folder), "--out", str(out), "--quick", "--image-size",
                     "32", "--max-epochs", "1", "--folds", "2", "--freeze", "all", "--device",
                     "cpu", "--backbones", "efficientnet_lite0,resnet18"])
    assert code == 0
    assert set(pd.read_csv(out / "results.csv")["backbone"].dropna()) == {"efficientnet_lite0"}
    with pytest.raises(SystemExit):
        main(["compare", "--backbones", ","])
    assert "invalid backbones" in capsys.readouterr().err


@pytest.mark.slow
def test_a_search_without_refit_scores_only(stripes):
    from ._helpers import tiny_cnn

    X, y = stripes
    search = FineTuneClassifierCV(tiny_cnn(), freezes=["all", 1], cv=2, refit=False,
                                  image_size=16, max_epochs=1, device="cpu", random_state=0,
                                  progress=False).fit(X, y)
    assert search.freeze_ in ("all", 1) and len(search.cv_results_["params"]) == 2
    assert not hasattr(search, "net_")
    for method in ("predict", "predict_proba", "score"):
        assert not hasattr(search, method)
    with pytest.raises(AttributeError) as error:
        search.predict(X)
    assert "refit=False" in str(error.value.__cause__)
    with pytest.raises(AttributeError, match="refit=False"):
        search.transform(X)


@pytest.mark.slow
def test_too_few_labels_to_choose_fall_back_to_the_fixed_settings(stripes):
    """One label per class leaves no inner folds: the rows keep the top layer and the
    first depth, and say so in ``chosen`` instead of failing."""
    X, y = stripes
    results = compare(X, y, kinds=("features", "finetune"), freeze=("all", -1),
                      labels_per_class=(1, 2), **SMALL)
    one = results[results["labels_per_class"] == 1].set_index("method")
    assert set(one.loc[CHOSEN_LAYER_METHOD, "chosen"].split(", ")) == {"conv_head"}
    assert set(one.loc[CHOSEN_DEPTH_METHOD, "chosen"].split(", ")) == {"all"}
    two = results[results["labels_per_class"] == 2].set_index("method")
    assert two.loc[CHOSEN_DEPTH_METHOD, "n_train"] == 4
    assert results["accuracy"].between(0, 1).all()


@pytest.mark.slow
def test_inner_splits_zero_leaves_the_chosen_rows_out(stripes):
    X, y = stripes
    results = compare(X, y, kinds=("features", "finetune"), freeze=("all", -1),
                      **{**SMALL, "inner_splits": 0})
    assert CHOSEN_LAYER_METHOD not in set(results["method"])
    assert CHOSEN_DEPTH_METHOD not in set(results["method"])
    assert results["chosen"].isna().all() and probe_table(results) is not None
    with pytest.raises(ValueError, match="inner_splits=1: use 0"):
        compare(X, y, **{**SMALL, "inner_splits": 1})
    with pytest.raises(SystemExit):
        main(["compare", "--inner-splits", "1"])


@pytest.mark.slow
def test_two_weight_files_of_one_architecture_stay_apart(stripes, tmp_path):
    X, y = stripes
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"mobilenet-{seed}.pth")
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), paths[-1])
    results = compare(X, y, kinds=("features",), backbones=[
        f"mobilenet_v3_small={paths[0]}", f"mobilenet_v3_small={paths[1]}",
        f"mobilenet_v3_small={paths[1]}"], **SMALL)
    labels = list(dict.fromkeys(results["backbone"]))
    assert labels == ["mobilenet_v3_small (mobilenet-0.pth)", "mobilenet_v3_small (mobilenet-1.pth)",
                      "mobilenet_v3_small (mobilenet-1.pth) #2"]
    probe = probe_table(results)
    first, second, third = (probe[probe["backbone"] == label]["accuracy_mean"].to_numpy()
                            for label in labels)
    assert not np.array_equal(first, second)  # its own features, not the first one's
    np.testing.assert_array_equal(second, third)


@pytest.mark.slow
def test_feature_layers_take_fractions_names_and_negative_indices(stripes):
    """A fraction f is the top block of the part freeze=f keeps frozen: 1.0 the top block
    (an IndexError before), 0.5 of 9 blocks the 4th, as freeze=0.5 freezes 4."""
    X, y = stripes
    results = compare(X, y, kinds=("features",), feature_layers=(1.0, -1, 0.5, "blocks.2"),
                      **{**SMALL, "inner_splits": 0})
    assert results["method"].tolist() == [
        f"frozen features of block {name} + logistic regression"
        for name in ("conv_head", "conv_head", "blocks.2", "blocks.2")]
    top, last, half, named = results["accuracy"]
    assert top == last and half == named
    assert probe_table(results)["name"].tolist()[3] == "blocks.2"
    [backbone] = available_backbones(["efficientnet_lite0"], image_size=32)
    assert freeze_depth(0.5, backbone) == 4


@pytest.mark.slow
@pytest.mark.parametrize("setting, message", [
    ({"feature_layers": (1.5,)}, r"feature_layers: 1.5 is not a block of efficientnet_lite0, "
                                 r"which has 9 blocks: stem, blocks.0, .*, conv_head\. .*"
                                 r"an index from -9 to 8 .* a fraction of the depth in \[0, 1\]"),
    ({"feature_layers": (-1, 9)}, r"feature_layers: 9 is not a block.*from -9 to 8"),
    ({"feature_layers": (-10,)}, r"feature_layers: -10 is not a block"),
    ({"feature_layers": (-0.25,)}, r"feature_layers: -0.25 is not a block"),
    ({"feature_layers": ("conv_haed",)}, r"feature_layers: 'conv_haed' \(did you mean "
                                         r"'conv_head'\?\) is not a block.*backbone_blocks"),
    ({"feature_layers": (True,)}, r"feature_layers: True is not a block"),
    ({"freeze": ("all", 1.5)}, r"freeze=1.5 is not a depth of efficientnet_lite0, which has 9 "
                               r"blocks\. Use 'all' .* 0 \(fine-tune all\) to 9 .* \[0, 1\]"),
    ({"freeze": (10,)}, r"freeze=10 is not a depth"),
    ({"freeze": (-10,)}, r"freeze=-10 is not a depth"),
    ({"freeze": ("al",)}, r"freeze='al' is not a depth"),
])
def test_bad_layers_and_depths_are_named_before_anything_is_trained(stripes, monkeypatch,
                                                                     setting, message):
    def trained(*args, **kwargs):
        raise AssertionError("a method was trained before the settings were checked")

    monkeypatch.setattr("sktransfer.study.compare.cross_validate", trained)
    monkeypatch.setattr(layer_choice, "block_features", trained)
    X, y = stripes
    with pytest.raises(ValueError, match=message):
        compare(X, y, kinds=("classical", "features", "finetune"), **{**SMALL, **setting})


@pytest.mark.slow
def test_the_chosen_depth_row_does_not_depend_on_the_fixed_rows(stripes, monkeypatch):
    """The depth chosen by inner CV is searched and refitted by its own estimator: run
    alone, without the fixed-depth rows, it gives the same row as beside them."""
    from sktransfer.study import methods

    from ._helpers import tiny_cnn

    X, y = stripes
    settings = {**SMALL, "image_size": 16, "backbones": (tiny_cnn(),), "kinds": ("finetune",),
                "freeze": ("all", 1)}
    together = compare(X, y, **settings)
    assert together["method"].tolist() == ["fine-tune", "fine-tune", CHOSEN_DEPTH_METHOD]

    def chosen_depth_only(*args):
        return [m for m in methods.study_methods(*args) if m.freeze == CHOSEN_BY_CV]

    monkeypatch.setattr("sktransfer.study.compare.study_methods", chosen_depth_only)
    alone = compare(X, y, **settings)
    assert alone["method"].tolist() == [CHOSEN_DEPTH_METHOD]
    columns = ["chosen", "accuracy", "accuracy_std", "early_stopping", "n_train", "n_test"]
    assert alone[columns].iloc[0].tolist() == together[columns].iloc[2].tolist()
    assert set(alone.loc[0, "chosen"].split(", ")) <= {"all", "1"}
