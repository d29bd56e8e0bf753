"""The learning-rate range test: find_lr, and lr="auto" inside fit and grid searches."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, KFold

import sktransfer._training.lr_finder as lr_finder
from sktransfer import FineTuneClassifier, FineTuneRegressor
from sktransfer._training.lr_finder import range_test, suggest_lr
from sktransfer.datasets import load_digits_images

from ._helpers import tiny_cnn

FAST = dict(image_size=16, max_epochs=6, batch_size=32, device="cpu", random_state=0,
            progress=False)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_images()
    return X[:300], y[:300]


@pytest.mark.slow
def test_the_suggestion_is_sane_and_the_model_untouched(digits):
    X, y = digits
    model = FineTuneClassifier(tiny_cnn(), **FAST).fit(X[:200], y[:200])
    before = {k: v.clone() for k, v in model.net_.module_.state_dict().items()}
    result = model.find_lr(X[:200], y[:200])
    assert 1e-4 <= result.suggestion <= 0.1
    finite = result.losses[np.isfinite(result.losses)]
    assert finite.min() < 0.8 * finite[0]  # the ramp reached rates that learn
    assert len(result.lrs) == len(result.losses) <= 100
    assert np.all(np.diff(result.lrs) > 0)
    for name, tensor in model.net_.module_.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)
    assert model.lr == 1e-3 and model.lr_ == 1e-3
    again = FineTuneClassifier(tiny_cnn(), **FAST).find_lr(X[:200], y[:200])
    np.testing.assert_array_equal(again.losses, result.losses)  # seeded: the same run
    assert not hasattr(FineTuneClassifier(tiny_cnn(), **FAST), "net_")


@pytest.mark.slow
def test_auto_trains_the_model_the_found_rate_would(digits):
    X, y = digits
    auto = FineTuneClassifier(tiny_cnn(), lr="auto", **FAST).fit(X[:200], y[:200])
    assert auto.lr_ == auto.lr_finder_.suggestion
    fixed = FineTuneClassifier(tiny_cnn(), lr=auto.lr_, **FAST).fit(X[:200], y[:200])
    np.testing.assert_allclose(auto.predict_proba(X[200:]), fixed.predict_proba(X[200:]),
                               atol=1e-6)
    assert auto.score(X[200:], y[200:]) > 0.5  # it learned at that rate
    ax = auto.lr_finder_.plot()
    assert ax.get_xscale() == "log" and "suggested lr" in ax.get_legend_handles_labels()[1][1]


@pytest.mark.slow
def test_auto_in_a_grid_search_sees_only_the_training_folds(monkeypatch):
    # Image i is uniformly gray at 4 * i: its preprocessed tensor says which image it is.
    n = 60
    X = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None] * 4, 8 * 8, axis=1).reshape(n, 8, 8)
    y = np.arange(n) % 2
    seen = []

    def recording(net, dataset, **options):
        first = torch.stack([dataset[i][0][0].mean() for i in range(len(dataset))])
        values = (first.double() * 0.229 + 0.485) * 255 / 4  # undo the ImageNet scaling
        assert torch.allclose(values, values.round(), atol=0.05)
        seen.append(set(values.round().long().tolist()))
        return range_test(net, dataset, **options)

    monkeypatch.setattr(lr_finder, "range_test", recording)  # what lr="auto" runs
    splits = list(KFold(3, shuffle=True, random_state=0).split(X))
    search = GridSearchCV(FineTuneClassifier(tiny_cnn(), lr="auto", early_stopping=True,
                                             **dict(FAST, max_epochs=1)),
                          {"layer_lr_decay": [0.5, 1.0]}, cv=splits, refit=False).fit(X, y)
    assert len(seen) == 6 and np.isfinite(search.cv_results_["mean_test_score"]).all()
    for images in seen:
        train, test = next((tr, te) for tr, te in splits if images <= set(tr))
        assert not images & set(test)
        # Early stopping's validation part is held out of the test too.
        assert len(images) == len(train) - int(np.ceil(0.15 * len(train)))


@pytest.mark.slow
def test_regressor_takes_auto_and_a_nan_loss_falls_back(digits):
    X, y = digits
    ink = (X > 0.5).mean(axis=(1, 2))
    model = FineTuneRegressor(tiny_cnn(), lr="auto", **FAST).fit(X[:200], ink[:200])
    assert 1e-5 <= model.lr_ <= 0.1 and model.score(X[200:], ink[200:]) > 0
    with pytest.warns(UserWarning, match="no finite loss"):
        assert suggest_lr(np.array([1e-5, 1e-4]), np.array([np.nan, np.nan])) == 1e-3
    assert suggest_lr(np.logspace(-5, 0, 6), np.array([3, 2, 1, 0.5, 4, np.nan])) == 1e-3


def test_range_test_puts_weights_and_batchnorm_statistics_back():
    from skorch import NeuralNet

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                 torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net = NeuralNet(module, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                    lr=1.0, batch_size=8, train_split=None).initialize()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    data = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.arange(40) % 2)
    result = range_test(net, data, n_steps=30)
    assert len(result.raw_losses) > 5  # it did train: the weights moved, then came back
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)
    assert all(group["lr"] == 1.0 for group in net.optimizer_.param_groups)


def test_bad_finder_settings_are_named_and_a_search_has_no_finder(digits):
    from sktransfer import FineTuneClassifierCV

    X, y = digits
    model = FineTuneClassifier(tiny_cnn(), **FAST)
    with pytest.raises(ValueError, match="n_steps=0"):
        model.find_lr(X[:40], y[:40], n_steps=0)
    with pytest.raises(ValueError, match="0 < start_lr < end_lr"):
        model.find_lr(X[:40], y[:40], start_lr=1.0, end_lr=0.1)
    assert not hasattr(FineTuneClassifierCV(tiny_cnn(), **FAST), "find_lr")  # lr="auto" there
    auto = FineTuneClassifier(tiny_cnn(), lr="auto", early_stopping=False,
                              **dict(FAST, max_epochs=1)).fit(X[:60], y[:60])
    assert hasattr(auto, "lr_finder_")
    auto.set_params(lr=0.01).fit(X[:60], y[:60])
    assert auto.lr_ == 0.01 and not hasattr(auto, "lr_finder_")
