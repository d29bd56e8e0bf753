"""batch_size="auto": measured on the first batches of a large transform, then reused."""

import numpy as np
import pytest

import sktransfer._inference as inference
from sktransfer import CNNFeatureExtractor

from ._helpers import CountImages, counting_cnn


@pytest.fixture
def measured(monkeypatch):
    """A fresh process-wide memory of batch sizes, and a low threshold to measure at."""
    monkeypatch.setattr(inference, "MEASURED_BATCH_SIZES", {})
    monkeypatch.setattr(inference, "MEASURE_MIN_BATCHES", 4)
    return inference.MEASURED_BATCH_SIZES


def test_auto_measures_candidates_once_then_reuses_the_winner(measured):
    X = np.random.default_rng(0).integers(0, 256, (800, 16, 16, 3), dtype=np.uint8)
    extractor = CNNFeatureExtractor(counting_cnn(), image_size=112, device="cpu",
                                    progress=False).fit(X)
    rule = inference.inference_batch_size("auto", (112, 112))  # 32: 16, 32, 64 are tried
    candidates = sorted({rule // 2, rule, min(256, 2 * rule)})
    CountImages.seen.clear()
    first = extractor.transform(X)
    rounds = inference.MEASURE_ROUNDS
    assert CountImages.seen[:3 * rounds] == candidates * rounds  # interleaved, in order
    (winner,) = measured.values()
    assert winner in candidates
    # The stream continues at the winner (after one batch prepared before it was known).
    assert set(CountImages.seen[3 * rounds + 1:-1]) == {winner}
    CountImages.seen.clear()
    second = extractor.transform(X)
    assert set(CountImages.seen[:-1]) == {winner}  # no measuring the second time
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    assert sum(CountImages.seen) == len(X)


def test_small_jobs_and_fixed_sizes_are_not_measured(measured):
    X = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    extractor = CNNFeatureExtractor(counting_cnn(), image_size=32, device="cpu",
                                    progress=False).fit(X)
    CountImages.seen.clear()
    extractor.transform(X)
    rule = inference.inference_batch_size("auto", (32, 32))
    assert not measured and CountImages.seen[0] == min(rule, 40)
    CountImages.seen.clear()
    extractor.set_params(batch_size=7).transform(X)
    assert not measured and CountImages.seen[:5] == [7] * 5


def test_one_stream_measures_while_others_use_the_rule(measured):
    first = inference.BatchSizer("setting", 32, n_images=10_000)
    second = inference.BatchSizer("setting", 32, n_images=10_000)  # another thread
    assert first.plan and not second.plan
    assert second.next_size() == 32
    for index, size in enumerate(first.next_size() for _ in first.plan):
        first.record(index, size, seconds=size * (0.5 if size == 64 else 1.0))
    assert measured["setting"] == 64 and second.next_size() == 64


def test_a_stream_that_fails_while_measuring_leaves_the_measurement_to_the_next(measured):
    X = np.random.default_rng(0).integers(0, 256, (800, 16, 16, 3), dtype=np.uint8)
    extractor = CNNFeatureExtractor(counting_cnn(), image_size=112, device="cpu",
                                    progress=False).fit(X)
    bad = X.astype(object)
    bad[5] = "not an image"  # decoding fails on the first batches, while measuring
    with pytest.raises((ValueError, TypeError)):
        extractor.transform(list(bad))
    assert not measured  # no stale claim: the next large stream measures
    extractor.transform(X)
    assert isinstance(next(iter(measured.values())), int)
