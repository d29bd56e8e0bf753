"""compile=True/"auto": torch.compile of the inference copy, with an eager fallback.

Compiling takes seconds even for the tiny network, so these tests share shapes (the
same tiny network, image size and batch size) wherever they can: torch reuses a
compiled graph for another network of the same architecture.
"""

import pickle
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import sktransfer
import sktransfer._compile as compiling
from sktransfer import CNNFeatureExtractor, FineTuneClassifier

from ._helpers import tiny_cnn

SIZE = 32
BATCH = 8


def forms(estimator):
    """The compiled forms of a fitted estimator's prepared network, by key."""
    return dict(estimator._inference.compiled._forms)


def compiled_forms(estimator):
    """The forms that torch.compile made (a form that failed is the plain function)."""
    return [form for form in forms(estimator).values() if hasattr(form, "_torchdynamo_orig_callable")]


@pytest.fixture(scope="module")
def images():
    # 22 images: two full batches of 8 and a short one of 6, which is padded to 8
    return np.random.default_rng(0).integers(0, 256, (22, SIZE, SIZE, 3), dtype=np.uint8)


def extractor(**params):
    return CNNFeatureExtractor(tiny_cnn(), layer=[1, 2], pooling="avgmax", image_size=SIZE,
                               batch_size=BATCH, device="cpu", progress=False, **params)


def test_compiled_features_equal_eager_ones(images, monkeypatch):
    compiled = extractor(compile=True).fit(images)
    eager = extractor().fit(images)
    expected = eager.transform(images)
    np.testing.assert_allclose(compiled.transform(images), expected, rtol=1e-4, atol=1e-5)
    assert len(compiled_forms(compiled)) == 1  # one compile, the short batch padded to it
    calls = []
    real_call = compiling.CompiledForms.__call__
    monkeypatch.setattr(compiling.CompiledForms, "__call__",
                        lambda self, key, *args, **kwargs: calls.append(key[2][0])
                        or real_call(self, key, *args, **kwargs))
    for n in (6, 3):  # a short job: padded to 8, or so short that it runs eagerly
        np.testing.assert_allclose(compiled.transform(images[:n]), expected[:n], rtol=1e-4,
                                   atol=1e-5)
    assert calls == [8] and len(compiled_forms(compiled)) == 1
    assert not forms(eager)


def test_a_module_that_cannot_compile_runs_eagerly_with_one_warning(images):
    class DataDependent(nn.Module):  # a branch on tensor values: no full graph
        def forward(self, x):
            return x * 2 if x.mean() > 0 else x

    blocks = tiny_cnn()
    blocks[1].append(DataDependent())
    model = CNNFeatureExtractor(blocks, image_size=SIZE, batch_size=BATCH, device="cpu",
                                progress=False, compile=True).fit(images)
    with pytest.warns(sktransfer.CompileWarning, match="runs uncompiled") as record:
        first = model.transform(images)
    (warning,) = [w for w in record if w.category is sktransfer.CompileWarning]
    assert warning.filename == __file__  # points at the caller, not at sktransfer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        second = model.transform(images)
    expected = model.set_params(compile=False).transform(images)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    assert not compiled_forms(model)


def test_an_error_of_the_network_itself_is_raised_not_hidden_by_the_fallback():
    def broken(batch):
        raise ValueError("this network fails on every input")

    with warnings.catch_warnings():
        warnings.simplefilter("error", compiling.CompileWarning)
        with pytest.raises(ValueError, match="fails on every input"):
            compiling.CompiledForms()("key", broken, torch.zeros(2, 3))


def test_the_compiled_module_is_not_pickled_and_is_rebuilt(images):
    model = extractor(compile=True).fit(images)
    before = len(pickle.dumps(model))
    expected = model.transform(images)
    assert compiled_forms(model)
    data = pickle.dumps(model)
    assert len(data) <= before + 100
    restored = pickle.loads(data)
    assert not forms(restored)
    np.testing.assert_allclose(restored.transform(images), expected, rtol=1e-5, atol=1e-6)
    assert len(compiled_forms(restored)) == 1


def test_threads_share_one_compile_and_agree(images):
    model = extractor(compile=True).fit(images)
    expected = extractor().fit(images).transform(images)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = model.transform(images)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
    assert len(compiled_forms(model)) == 1


def test_auto_compiles_only_when_the_rest_of_the_job_repays_it(images, monkeypatch):
    many = np.concatenate([images] * 4)  # 88 images, 11 batches
    model = extractor(compile="auto").fit(images)
    expected = extractor().fit(images).transform(many)
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS", 1e6)
    monkeypatch.setattr(compiling, "COMPILE_SECONDS", {})
    np.testing.assert_allclose(model.transform(many), expected, rtol=1e-4, atol=1e-5)
    assert not forms(model)  # a compile of a million seconds never pays
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS", 0.0)
    np.testing.assert_allclose(model.transform(many), expected, rtol=1e-4, atol=1e-5)
    assert len(compiled_forms(model)) == 1
    assert list(compiling.COMPILE_SECONDS.values())[0] > 0  # the measured compile time
    # a job too short to judge (3 batches) stays eager, unless already compiled: free
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS", 1e6)
    small = extractor(compile="auto").fit(images)
    small.transform(images)
    assert not forms(small)
    np.testing.assert_allclose(model.transform(images), expected[:22], rtol=1e-4, atol=1e-5)


def test_auto_compiles_many_short_calls_once_their_time_would_have_paid(images, monkeypatch):
    monkeypatch.setattr(compiling, "COMPILE_SECONDS", {})
    model = extractor(compile="auto").fit(images)
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS", 1e6)
    for _ in range(3):
        model.transform(images[:16])  # two batches: too short to judge alone
    assert not forms(model)
    (spent,) = model._inference.compiled._eager_seconds.values()  # one batch shape
    assert spent > 0  # six eager batches counted
    # a compile that the time spent eagerly would have paid for three times over
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS",
                        spent * (1 - 1 / compiling.EXPECTED_SPEEDUP) / 3)
    expected = extractor().fit(images).transform(images[:16])
    np.testing.assert_allclose(model.transform(images[:16]), expected, rtol=1e-4, atol=1e-5)
    assert len(compiled_forms(model)) == 1  # the second batch ran compiled
    # the time spent belongs to that batch shape: another one starts from nothing, so
    # its first batch runs eagerly (a shared count would compile it at once)
    model.set_params(batch_size=4).transform(images[:4])
    assert len(compiled_forms(model)) == 1


def test_auto_compiles_one_batch_calls_too(images, monkeypatch):
    monkeypatch.setattr(compiling, "COMPILE_SECONDS", {})
    monkeypatch.setattr(compiling, "EXPECTED_COMPILE_SECONDS", 0.0)
    model = extractor(compile="auto").fit(images)
    model.transform(images[:8])  # one batch, eager: its time is what pays
    assert not forms(model)
    model.transform(images[:8])
    assert len(compiled_forms(model)) == 1


@pytest.mark.parametrize("device, per_image, remaining, batches, expected", [
    ("cpu", 0.01, 10_000, 1250, True),    # saves 33 s of a 30 s compile
    ("cpu", 0.01, 8_000, 1000, False),    # saves 27 s
    ("cpu", 0.001, 100_000, 12500, True),
    ("cuda", 1e-4, 3200, 400, True),      # a GPU compiles every large job
    ("cuda", 1e-4, 3192, 399, False),
])
def test_worth_compiling(device, per_image, remaining, batches, expected):
    assert compiling.worth_compiling(
        torch.device(device), per_image_seconds=per_image, remaining_images=remaining,
        remaining_batches=batches, compile_seconds=30.0) is expected


def test_fine_tuned_predictions_equal_with_compile(images):
    y = np.arange(len(images)) % 2
    model = FineTuneClassifier(tiny_cnn(), weights=None, freeze=1, max_epochs=2,
                               image_size=SIZE, device="cpu", random_state=0, progress=False,
                               compile=True).fit(images, y)
    eager = FineTuneClassifier(tiny_cnn(), weights=None, freeze=1, max_epochs=2,
                               image_size=SIZE, device="cpu", random_state=0,
                               progress=False).fit(images, y)
    many = np.concatenate([images] * 8)  # 176: predict's batch at 32 px is 256 images
    np.testing.assert_allclose(model.predict_proba(many), eager.predict_proba(many),
                               rtol=1e-4, atol=1e-5)
    assert compiled_forms(model)


def test_compile_is_validated(images):
    with pytest.raises(ValueError, match="compile"):
        extractor(compile="always").fit(images)
    model = extractor(compile=np.True_).fit(images)  # numpy's bools are bools
    model.transform(images[:8])
    assert len(compiled_forms(model)) == 1


def test_bf16_autocast_compiles_as_its_own_form(images):
    from sktransfer._images import check_images
    from sktransfer._inference import Inference, stream_features

    model = extractor().fit(images)
    prepared = model._inference
    stream = check_images(model, images, reset=False)
    options = dict(layers=[1, 2], pooling="avgmax", preprocessing=model.preprocessing_,
                   batch_size=BATCH, progress=False)
    eager = stream_features(Inference(prepared.blocks, prepared.device, "bf16"), stream,
                            **options)
    bf16 = Inference(prepared.blocks, prepared.device, "bf16", compile=True)
    compiled = stream_features(bf16, stream, **options)
    np.testing.assert_allclose(compiled, eager, rtol=0.05, atol=0.05)
    (key,) = bf16.compiled._forms
    assert key[-1] is True  # autocast on: not the fp32 form
    fp32 = stream_features(prepared.with_compile(True), stream, **options)
    assert np.abs(fp32 - compiled).max() > 0  # bf16 really ran in bf16


def test_a_measured_batch_size_is_compiled_once_at_the_winner(monkeypatch):
    import sktransfer._inference as inference

    monkeypatch.setattr(inference, "MEASURED_BATCH_SIZES", {})
    monkeypatch.setattr(inference, "MEASURE_MIN_BATCHES", 4)
    X = np.random.default_rng(0).integers(0, 256, (800, 16, 16, 3), dtype=np.uint8)
    model = CNNFeatureExtractor(tiny_cnn(), image_size=112, device="cpu", progress=False,
                                compile=True).fit(X)
    features = model.transform(X)  # measures 16, 32 and 64 eagerly, then compiles
    (winner,) = inference.MEASURED_BATCH_SIZES.values()
    assert [key[2][0] for key in forms(model)] == [winner]
    expected = model.set_params(compile=False).transform(X)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
