"""The layer probe: every block from one forward pass, scored as a pipeline per block would be."""

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import CNNFeatureExtractor, plot_layer_probe, probe_layers

from ._helpers import CountImages, counting_cnn


def test_one_forward_pass_scores_every_block_as_its_own_pipeline_would(stripes):
    X, y = stripes
    CountImages.seen = []
    table = probe_layers(X, y, backbone=counting_cnn(), image_size=16, cv=3, device="cpu",
                         backend="torch", progress=False)  # counted in torch
    assert sum(CountImages.seen) == len(X)  # each image through the network once
    assert table["name"].tolist() == ["0", "1", "2"]
    assert table["channels"].tolist() == [8, 16, 32] and table["stride"].tolist() == [2, 4, 8]
    splitter = StratifiedKFold(3, shuffle=True, random_state=0)
    for block in range(3):
        separately = make_pipeline(
            CNNFeatureExtractor(counting_cnn(), layer=block, image_size=16, device="cpu"),
            StandardScaler(), LogisticRegression(max_iter=1000))
        scores = cross_val_score(separately, X, y, cv=splitter)
        assert table.loc[block, "accuracy_mean"] == pytest.approx(scores.mean(), abs=1e-12)
        assert table.loc[block, "accuracy_std"] == pytest.approx(scores.std(), abs=1e-12)
    pixels = table.attrs["pixels"]
    assert 0 <= pixels[0] <= 1 and table.attrs["extract_seconds"] > 0


def test_the_probe_estimator_is_a_parameter_and_the_plot_is_drawn(stripes, tmp_path):
    from sklearn.dummy import DummyClassifier

    X, y = stripes
    table = probe_layers(X, y, backbone=counting_cnn(), image_size=16, cv=2, device="cpu",
                         estimator=DummyClassifier(), pixel_size=None, progress=False)
    assert (table["accuracy_mean"] == 0.5).all()  # the dummy predicts the majority class
    assert "pixels" not in table.attrs
    plot_layer_probe(table, tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 10_000
