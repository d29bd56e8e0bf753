"""The learning-rate range test (Smith, 2017): a short run with an exponentially rising rate.

The loss of each mini-batch is recorded while the learning rate grows from tiny to
large; it falls once the rate is large enough to learn and blows up once it is too
large. A rate a tenth of the one at the lowest (smoothed) loss trains fast and stays
stable. The test runs on a network that is then put back as it was.
"""

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

#: Defaults of the ramp: from START_LR to END_LR over at most N_STEPS mini-batches.
START_LR, END_LR, N_STEPS = 1e-6, 1.0, 100
#: Exponential smoothing of the recorded losses (bias-corrected, as Adam's moments).
SMOOTHING = 0.9
#: The test stops when the smoothed loss exceeds this many times its minimum.
DIVERGENCE = 4.0
#: Used (with a warning) when the test has no finite loss to read a rate from.
FALLBACK_LR = 1e-3


@dataclass(frozen=True)
class LRFinderResult:
    """What a range test found.

    Attributes
    ----------
    lrs : ndarray
        The head's learning rate of each step (lower blocks got it times their decay).
    losses : ndarray
        The smoothed training loss after each step (NaN where it was not finite).
    raw_losses : ndarray
        The loss of each step's mini-batch, unsmoothed.
    suggestion : float
        A tenth of the rate at the lowest smoothed loss: the rate ``lr="auto"`` uses.
    diverged : bool
        Whether the test stopped early because the loss blew up.
    """

    lrs: np.ndarray = field(repr=False)
    losses: np.ndarray = field(repr=False)
    raw_losses: np.ndarray = field(repr=False)
    suggestion: float
    diverged: bool

    def plot(self, ax=None, path=None):
        """Smoothed loss against learning rate (log scale), the suggestion marked.

        Returns the matplotlib Axes (the figure is saved to ``path`` when given).
        """
        from matplotlib.figure import Figure

        figure = None
        if ax is None:
            figure = Figure(figsize=(7, 4), layout="constrained")
            ax = figure.subplots()
        ax.plot(self.lrs, self.losses, color="#1f77b4", label="training loss (smoothed)")
        ax.axvline(self.suggestion, color="#d62728", linestyle="--",
                   label=f"suggested lr = {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate of the head")
        ax.set_ylabel("loss")
        finite = self.losses[np.isfinite(self.losses)]
        if len(finite):  # the blow-up at the end would flatten the useful part
            low, high = finite.min(), min(finite.max(), finite[0] * 1.5)
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        ax.set_title("learning-rate range test")
        ax.legend(fontsize=8)
        if figure is not None and path is not None:
            figure.savefig(path, dpi=110)
        return ax


def range_test(net, dataset, *, start_lr=START_LR, end_lr=END_LR, n_steps=N_STEPS):
    """Run the range test on skorch ``net`` (initialized here) over ``dataset``.

    The ramp multiplies every parameter group's rate, so lower blocks keep their
    decayed share of the head's rate. The module's weights and buffers are put back
    afterwards; the optimizer is re-initialized. ``dataset`` is cycled when it holds
    fewer than ``n_steps`` mini-batches.

    Returns
    -------
    LRFinderResult
    """
    if not net.initialized_:
        net.initialize()
    saved = copy.deepcopy(net.module_.state_dict())
    shares = [group["lr"] / net.lr for group in net.optimizer_.param_groups]
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(n_steps) / max(1, n_steps - 1))
    raw, smoothed, average, best = [], [], 0.0, math.inf
    try:
        while len(raw) < n_steps:
            for batch in net.get_iterator(dataset, training=True):
                rate = lrs[len(raw)]
                for group, share in zip(net.optimizer_.param_groups, shares):
                    group["lr"] = rate * share
                loss = float(net.train_step(batch)["loss"].detach())
                raw.append(loss)
                if not math.isfinite(loss):
                    smoothed.append(math.nan)
                    break
                average = SMOOTHING * average + (1 - SMOOTHING) * loss
                smoothed.append(average / (1 - SMOOTHING ** len(raw)))
                best = min(best, smoothed[-1])
                if smoothed[-1] > DIVERGENCE * best or len(raw) == n_steps:
                    break
            if not raw or not math.isfinite(smoothed[-1]) or smoothed[-1] > DIVERGENCE * best:
                break
    finally:
        net.module_.load_state_dict(saved)
        net.initialize_optimizer()
    losses = np.asarray(smoothed)
    return LRFinderResult(lrs[:len(raw)], losses, np.asarray(raw),
                          suggest_lr(lrs[:len(raw)], losses, start_lr),
                          diverged=len(raw) < n_steps)


def suggest_lr(lrs, losses, start_lr=START_LR):
    """A tenth of the rate at the lowest finite loss; FALLBACK_LR (warned) if none."""
    finite = np.isfinite(losses)
    if not finite.any():
        warnings.warn(f"The learning-rate range test found no finite loss; using lr="
                      f"{FALLBACK_LR:g}. Check the inputs and targets.", UserWarning,
                      stacklevel=3)
        return FALLBACK_LR
    lowest = int(np.argmin(np.where(finite, losses, np.inf)))
    return float(max(lrs[lowest] / 10, start_lr))


def range_test_keeping_rng(net, dataset, device):
    """:func:`range_test` with default settings, leaving torch's random state as it was.

    The test's draws must not shift training's: ``lr="auto"`` then trains exactly as
    ``lr=lr_`` would.
    """
    state = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        return range_test(net, dataset)
    finally:
        torch.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
