"""Safe model files, interruption and resume, and a cache that never serves a partial entry."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skorch import NeuralNet

import sktransfer
from sktransfer import CNNFeatureExtractor, FineTuneClassifier
from sktransfer._engine import io as _io

from ._helpers import tiny_cnn


def refuse_unpickling(monkeypatch):
    """From here on, any unpickling (pickle, joblib or torch.load) fails the test."""
    import joblib

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "loads"), (pickle, "load"), (joblib, "load"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)


def test_classifier_round_trips_through_a_safe_file(stripes, tmp_path, monkeypatch):
    X, y = stripes
    model = FineTuneClassifier("resnet18", weights=None, image_size=16, freeze=3, max_epochs=2,
                               device="cpu", random_state=0, class_weight={"h": 2.0}).fit(X, y)
    path = tmp_path / "model.safetensors"
    sktransfer.save(model, path)
    refuse_unpickling(monkeypatch)
    loaded = sktransfer.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.predict(X).tolist() == model.predict(X).tolist()
    assert loaded.classes_.dtype == model.classes_.dtype and loaded.n_frozen_ == 3
    assert loaded.get_params()["class_weight"] == {"h": 2.0}
    assert [e["epoch"] for e in loaded.history_] == [e["epoch"] for e in model.history_] == [1, 2]
    assert loaded.best_epoch_ == model.best_epoch_


def test_extractor_round_trips_through_a_safe_file(rgb_images, tmp_path, monkeypatch):
    model = CNNFeatureExtractor(image_size=32, layer=[3, -1], device="cpu").fit(rgb_images)
    sktransfer.save(model, tmp_path / "extractor.safetensors")
    refuse_unpickling(monkeypatch)
    loaded = sktransfer.load(tmp_path / "extractor.safetensors")
    np.testing.assert_array_equal(loaded.transform(rgb_images), model.transform(rgb_images))
    assert list(loaded.get_feature_names_out()) == list(model.get_feature_names_out())


@pytest.mark.parametrize("head", [
    lambda: LogisticRegression(max_iter=500),
    lambda: make_pipeline(PCA(5, random_state=0), SVC()),
], ids=["logistic regression", "PCA + SVC"])
def test_a_fitted_pipeline_round_trips_through_a_safe_file(stripes, tmp_path, monkeypatch, head):
    X, y = stripes
    features = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu")
    model = make_pipeline(features, StandardScaler(), head()).fit(X, y)
    path = tmp_path / "pipeline.safetensors"
    sktransfer.save(model, path)
    refuse_unpickling(monkeypatch)
    loaded = sktransfer.load(path)
    assert [name for name, _ in loaded.steps] == [name for name, _ in model.steps]
    assert loaded.predict(X).tolist() == model.predict(X).tolist()
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-6)
    np.testing.assert_array_equal(loaded[:-1].transform(X), model[:-1].transform(X))


def test_save_refuses_what_it_cannot_store_safely(stripes, tmp_path):
    X, y = stripes
    with pytest.raises(NotFittedError):
        sktransfer.save(FineTuneClassifier(), tmp_path / "m.safetensors")
    module_backbone = FineTuneClassifier(tiny_cnn(), image_size=8, max_epochs=1, device="cpu").fit(X, y)
    with pytest.raises(TypeError, match=r"backbone \(a Sequential\).*joblib"):
        sktransfer.save(module_backbone, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="cannot store a KNeighborsClassifier safely.*joblib"):
        sktransfer.save(KNeighborsClassifier().fit([[0], [1]], [0, 1]), tmp_path / "m.safetensors")
    unfitted = make_pipeline(StandardScaler(), LogisticRegression())
    with pytest.raises(NotFittedError):
        sktransfer.save(unfitted, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_load_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not an sktransfer model"):
        sktransfer.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a safetensors file"):
        sktransfer.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        sktransfer.load(tmp_path / "absent.safetensors")


def interrupt_at_epoch(monkeypatch, epoch):
    """Make the training step raise KeyboardInterrupt, as Ctrl-C would, during ``epoch``."""
    original = NeuralNet.train_step

    def train_step(net, batch, **kwargs):
        if net.history[-1, "epoch"] == epoch and len(net.history[-1]["batches"]) == 1:
            raise KeyboardInterrupt
        return original(net, batch, **kwargs)

    monkeypatch.setattr(NeuralNet, "train_step", train_step)


def test_ctrl_c_keeps_the_best_weights_marks_and_propagates(stripes, monkeypatch):
    X, y = stripes
    interrupt_at_epoch(monkeypatch, 4)
    model = FineTuneClassifier(tiny_cnn(), image_size=16, max_epochs=20, lr=0.01, patience=10,
                               device="cpu", random_state=0, validation_fraction=0.25,
                               early_stopping=True)
    with pytest.raises(KeyboardInterrupt, match="interrupted in epoch 4"):
        model.fit(X, y)
    assert model.interrupted_ and [e["epoch"] for e in model.history_] == [1, 2, 3, 4]
    losses = [epoch.get("valid_loss") for epoch in model.history_[:-1]]  # the complete epochs
    assert model.best_epoch_ == int(np.argmin(losses)) + 1
    assert model.predict(X).shape == (40,)


def test_ctrl_c_stops_a_grid_search(stripes, monkeypatch):
    X, y = stripes
    interrupt_at_epoch(monkeypatch, 2)
    search = GridSearchCV(FineTuneClassifier(tiny_cnn(), image_size=8, max_epochs=3, device="cpu"),
                          {"freeze": [0, 1, 2]}, cv=2)
    with pytest.raises(KeyboardInterrupt):
        search.fit(X, y)
    assert not hasattr(search, "cv_results_")


def test_an_uninterrupted_fit_is_not_marked(stripes):
    model = FineTuneClassifier(tiny_cnn(), image_size=8, max_epochs=6, patience=1, lr=0.5,
                               optimizer="sgd", device="cpu", random_state=0,
                               early_stopping=True).fit(*stripes)
    assert model.history_[-1, "epoch"] < 6 and not model.interrupted_  # early stopping is no Ctrl-C


def test_checkpoint_then_resume_with_warm_start(stripes, tmp_path, monkeypatch):
    X, y = stripes
    settings = dict(image_size=16, lr=0.01, device="cpu", random_state=0, early_stopping=False,
                    checkpoint=str(tmp_path / "ckpt"))
    interrupt_at_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        FineTuneClassifier(tiny_cnn(), max_epochs=10, **settings).fit(X, y)
    saved, meta = _io.read_tensors(tmp_path / "ckpt" / "best.safetensors")
    assert meta["epoch"] == 2  # the last complete epoch
    monkeypatch.undo()
    resumed = FineTuneClassifier(tiny_cnn(), max_epochs=1, warm_start=True, **{**settings, "lr": 1e-12})
    resumed.fit(X, y)
    weights = resumed.net_.module_.state_dict()
    for name in ("blocks.0.0.weight", "head.weight"):
        torch.testing.assert_close(weights[name], saved[name])
    fresh = FineTuneClassifier(tiny_cnn(), max_epochs=1, **{**settings, "lr": 1e-12, "checkpoint": None}).fit(X, y)
    assert not torch.allclose(fresh.net_.module_.state_dict()["head.weight"], saved["head.weight"])


def test_a_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "best.safetensors"
    _io.write_tensors(path, {"w": torch.ones(3)}, {"epoch": 1})

    def crash(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        _io.write_tensors(path, {"w": torch.zeros(3)}, {"epoch": 2})
    tensors, meta = _io.read_tensors(path)
    assert meta["epoch"] == 1 and torch.equal(tensors["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


def test_feature_cache_never_serves_a_corrupt_or_partial_entry(rgb_images, tmp_path, monkeypatch):
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=16, device="cpu",
                                    memory=str(tmp_path)).fit(rgb_images)
    expected = extractor.transform(rgb_images)
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 6
    entries[0].write_bytes(b"\x93NUMPY garbage")  # corrupt one entry: it is recomputed
    # (alone, in a batch of one: equal up to batch-size rounding)
    np.testing.assert_allclose(extractor.transform(rgb_images), expected, rtol=1e-5, atol=1e-6)

    for entry in entries:
        entry.unlink()

    def crash(file, array, allow_pickle=False):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        extractor.transform(rgb_images)
    assert not list(tmp_path.rglob("*.npy")) and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    np.testing.assert_array_equal(extractor.transform(rgb_images), expected)
    assert len(list(tmp_path.rglob("*.npy"))) == 6


def test_fit_leaves_the_callers_torch_threads_as_they_were(stripes):
    """Inside a joblib worker torch runs on the worker's share of the cores; fit must not
    change that setting (or the caller's) behind the user's back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        FineTuneClassifier(tiny_cnn(), image_size=8, max_epochs=1, device="cpu").fit(*stripes)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _transform_in_threads(model, X, n_threads=4, method="transform"):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(lambda _: getattr(model, method)(X), range(n_threads)))


@pytest.mark.slow
@pytest.mark.parametrize("memory", [False, True])
def test_concurrent_transforms_right_after_unpickling_equal_the_serial_one(
        rgb_images, tmp_path, memory):
    """A dask worker with 2 threads does exactly this; it used to race inside module.to()."""
    X = np.concatenate([rgb_images] * 4)
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=32, device="cpu",
                                    memory=str(tmp_path) if memory else None).fit(X)
    serial = extractor.transform(X)
    payload = pickle.dumps(extractor)
    for _ in range(3):
        shared = pickle.loads(payload)
        for features in _transform_in_threads(shared, X):
            np.testing.assert_allclose(features, serial, rtol=1e-5, atol=1e-6)


def test_concurrent_predictions_of_a_fine_tuned_model(stripes, tmp_path):
    X, y = stripes
    model = FineTuneClassifier(tiny_cnn(), image_size=16, freeze=1, max_epochs=2,
                               device="cpu", random_state=0, memory=str(tmp_path)).fit(X, y)
    serial = model.predict_proba(X)
    shared = pickle.loads(pickle.dumps(model))
    for proba in _transform_in_threads(shared, X, method="predict_proba"):
        np.testing.assert_allclose(proba, serial, rtol=1e-5, atol=1e-6)


def test_transform_leaves_the_fitted_network_untouched(rgb_images):
    extractor = CNNFeatureExtractor("resnet18", weights=None, image_size=16,
                                    device="cpu").fit(rgb_images)
    prepared = extractor._inference
    network = extractor.backbone_.blocks
    modes = [module.training for module in network.modules()]
    before = {name: (t.data_ptr(), t.stride()) for name, t in network.state_dict().items()}
    extractor.transform(rgb_images)
    assert extractor._inference is prepared
    assert [module.training for module in network.modules()] == modes
    assert {name: (t.data_ptr(), t.stride())
            for name, t in network.state_dict().items()} == before


def test_pickles_hold_what_prediction_needs_and_warm_start_still_works(stripes):
    X, y = stripes
    model = FineTuneClassifier("resnet18", weights=None, image_size=16, max_epochs=1,
                               device="cpu", random_state=0).fit(X, y)
    weights = sum(t.numel() * t.element_size() for t in model.net_.module_.state_dict().values())
    payload = pickle.dumps(model)
    assert len(payload) < 1.1 * weights  # AdamW's two moments would make it 3x
    assert hasattr(model.net_, "optimizer_")  # pickling did not strip the live model
    loaded = pickle.loads(payload)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    loaded.set_params(warm_start=True).fit(X, y)
    assert [e["epoch"] for e in loaded.history_] == [1, 2]
