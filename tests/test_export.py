"""export_onnx and `sktransfer export`: files that run in ONNX Runtime as the model does."""

import os
import stat

import numpy as np
import onnxruntime
import pytest
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import (
    CNNFeatureExtractor,
    FineTuneClassifier,
    FineTuneClassifierCV,
    FineTuneRegressor,
    export_onnx,
    save,
)
from sktransfer.cli import main

from ._helpers import tiny_cnn

SETTINGS = dict(image_size=16, device="cpu", progress=False)
TRAINING = dict(**SETTINGS, max_epochs=1, random_state=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    return X, np.array(["cat", "dog", "owl"] * 10)


def run(path, X):
    session = onnxruntime.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["images"]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": X})))


@pytest.mark.parametrize("n", [1, 13])
def test_extractor_file_gives_transform(data, tmp_path, n):
    X, _ = data
    extractor = CNNFeatureExtractor(tiny_cnn(), layer=[1, 2], pooling="avgmax",
                                    **SETTINGS).fit(X)
    outputs = run(export_onnx(extractor, tmp_path / "extractor.onnx"), X[:n])
    np.testing.assert_allclose(outputs["features"], extractor.transform(X[:n]), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("n", [1, 13])
@pytest.mark.parametrize("tta", [None, "flip"])
def test_classifier_file_gives_predict_and_predict_proba(data, tmp_path, n, tta):
    X, y = data
    clf = FineTuneClassifier(tiny_cnn(), tta=tta, **TRAINING).fit(X, y)
    outputs = run(export_onnx(clf, tmp_path / "classifier.onnx"), X[:n])
    np.testing.assert_array_equal(outputs["label"], clf.predict(X[:n]))
    np.testing.assert_allclose(outputs["probabilities"], clf.predict_proba(X[:n]), atol=1e-5)


def test_multilabel_and_regressor_files(data, tmp_path):
    X, _ = data
    tags = (X.reshape(len(X), -1)[:, :3] > 127).astype(int)
    clf = FineTuneClassifier(tiny_cnn(), **TRAINING).fit(X, tags)
    outputs = run(export_onnx(clf, tmp_path / "tags.onnx"), X[:13])
    np.testing.assert_array_equal(outputs["label"], clf.predict(X[:13]))
    np.testing.assert_allclose(outputs["probabilities"], clf.predict_proba(X[:13]), atol=1e-5)
    for y in (X.mean(axis=(1, 2, 3)), X.mean(axis=(1, 2))):  # one target, three
        reg = FineTuneRegressor(tiny_cnn(), **TRAINING).fit(X, y)
        outputs = run(export_onnx(reg, tmp_path / "regressor.onnx"), X[:13])
        np.testing.assert_allclose(outputs["prediction"], reg.predict(X[:13]), rtol=1e-4)


@pytest.mark.parametrize("n", [1, 13])
def test_pipeline_file_joins_the_scikit_learn_steps(data, tmp_path, n):
    X, y = data
    pipeline = make_pipeline(CNNFeatureExtractor(tiny_cnn(), **SETTINGS), StandardScaler(),
                             LogisticRegression(max_iter=1000)).fit(X, y)
    outputs = run(export_onnx(pipeline, tmp_path / "pipeline.onnx"), X[:n])
    assert sorted(outputs) == ["label", "probabilities"]
    np.testing.assert_array_equal(outputs["label"], pipeline.predict(X[:n]))
    np.testing.assert_allclose(outputs["probabilities"], pipeline.predict_proba(X[:n]),
                               atol=1e-5)
    fine_tuned = make_pipeline(FineTuneRegressor(tiny_cnn(), **TRAINING), Ridge())
    fine_tuned.fit(X, X.mean(axis=(1, 2, 3)))
    outputs = run(export_onnx(fine_tuned, tmp_path / "ridge.onnx"), X[:n])
    np.testing.assert_allclose(outputs["prediction"], fine_tuned.predict(X[:n]), rtol=1e-4)
    scaled = make_pipeline(CNNFeatureExtractor(tiny_cnn(), **SETTINGS), StandardScaler()).fit(X)
    outputs = run(export_onnx(scaled, tmp_path / "scaled.onnx"), X[:n])
    np.testing.assert_allclose(outputs["features"], scaled.transform(X[:n]), rtol=1e-4,
                               atol=1e-4)


class Doubler(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        return 2 * X


@pytest.mark.slow
def test_a_refitted_search_exports_its_best_network(data, tmp_path):
    X, y = data
    search = FineTuneClassifierCV(tiny_cnn(), freezes=["all", 1], cv=2, early_stopping=False,
                                  **TRAINING).fit(X, y)
    outputs = run(export_onnx(search, tmp_path / "search.onnx"), X[:5])
    np.testing.assert_array_equal(outputs["label"], search.predict(X[:5]))
    np.testing.assert_allclose(outputs["probabilities"], search.predict_proba(X[:5]), atol=1e-5)
    unrefitted = clone(search).set_params(refit=False).fit(X, y)
    with pytest.raises(TypeError, match=r"a search refitted on one \(refit=True\).*"
                                        "FineTuneClassifierCV"):
        export_onnx(unrefitted, tmp_path / "bad.onnx")


def test_what_cannot_be_exported_is_named(data, tmp_path):
    X, y = data
    pipeline = make_pipeline(CNNFeatureExtractor(tiny_cnn(), **SETTINGS), Doubler(),
                             LogisticRegression()).fit(X, y)
    with pytest.raises(TypeError, match="skl2onnx cannot convert the Pipeline step 'doubler' "
                                        r"\(Doubler\)"):
        export_onnx(pipeline, tmp_path / "bad.onnx")
    with pytest.raises(TypeError, match="starting with StandardScaler"):
        export_onnx(make_pipeline(StandardScaler(), LogisticRegression()).fit(
            X.reshape(len(X), -1), y), tmp_path / "bad.onnx")
    clf = FineTuneClassifier(tiny_cnn(), tta=4, **TRAINING).fit(X, y)
    with pytest.raises(ValueError, match="tta=4: the light views .* Set tta=None or 'flip'"):
        export_onnx(clf, tmp_path / "bad.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_file_respects_the_umask(data, tmp_path):
    X, _ = data
    extractor = CNNFeatureExtractor(tiny_cnn(), **SETTINGS).fit(X)
    umask = os.umask(0o027)
    try:
        path = export_onnx(extractor, tmp_path / "extractor.onnx")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_cli_exports_a_saved_model(data, tmp_path, capsys):
    X, y = data
    clf = FineTuneClassifier("resnet18", weights=None, **TRAINING).fit(X, y)
    save(clf, tmp_path / "model.safetensors")
    assert main(["export", str(tmp_path / "model.safetensors"), "-o",
                 str(tmp_path / "model.onnx")]) == 0
    assert "uint8 (batch, 16, 16, 3)" in capsys.readouterr().out
    outputs = run(tmp_path / "model.onnx", X[:13])
    np.testing.assert_array_equal(outputs["label"], clf.predict(X[:13]))
