"""The skorch side of fine-tuning: the training net, its data, callbacks and options.

Every estimator that trains a network (the classifier, and any other built on the same
engine) builds its skorch net with :func:`training_net` and runs it with
:meth:`TrainingNet.train`; only the loss and the targets differ between them.
"""

import re
import sys
from pathlib import Path

import torch
from skorch import NeuralNet
from skorch.callbacks import Checkpoint, EarlyStopping, PrintLog, ProgressBar

from sktransfer._engine.device import autocast
from sktransfer._engine.io import write_tensors

CHECKPOINT_FILE = "best.safetensors"


class TrainingSet(torch.utils.data.Dataset):
    """(input, target) pairs: precomputed tensors, or images prepared when indexed.

    With ``sample_weight`` the target is ``{"target": y, "weight": w}``, which
    :class:`SampleWeightedLoss` reads.
    """

    def __init__(self, y, *, inputs=None, images=None, preprocessing=None, augment=None,
                 sample_weight=None):
        self.y = torch.as_tensor(y)
        self.sample_weight = (None if sample_weight is None
                              else torch.as_tensor(sample_weight, dtype=torch.float32))
        self.inputs = inputs
        self.images = images
        self.preprocessing = preprocessing
        self.augment = augment

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        if self.inputs is not None:
            x = self.inputs[index]
        else:
            x = self.images.prepare([index], self.preprocessing)[0]
        if self.augment is not None:
            x = self.augment(x)
        if self.sample_weight is not None:
            return x, {"target": self.y[index], "weight": self.sample_weight[index]}
        return x, self.y[index]


class SampleWeightedLoss(torch.nn.Module):
    """The weighted mean of per-sample losses: sum(w * loss) / sum(w * mass).

    ``loss`` returns one value per sample (or per sample and output, averaged per
    sample); ``class_weight`` gives each sample the mass of its class, as
    ``CrossEntropyLoss(weight=...)`` divides by it. With all weights equal to 1 this is
    exactly the loss's own mean, so weighting by ones trains the same model.
    """

    def __init__(self, loss, class_weight=None):
        super().__init__()
        self.loss = loss
        self.register_buffer("class_weight", class_weight)

    def forward(self, y_pred, y_true):
        weight = None
        if isinstance(y_true, dict):
            y_true, weight = y_true["target"], y_true["weight"]
        losses = self.loss(y_pred, y_true)
        if losses.ndim > 1:
            losses = losses.flatten(1).mean(1)
        mass = (self.class_weight[y_true] if self.class_weight is not None
                else torch.ones_like(losses))
        if weight is not None:
            losses, mass = losses * weight, mass * weight
        # A batch of zero weights contributes nothing (0, not 0/0).
        return losses.sum() / mass.sum().clamp_min(torch.finfo(mass.dtype).tiny)


class AtomicCheckpoint(Checkpoint):
    """skorch's Checkpoint, saving the module's weights as safetensors, atomically.

    skorch decides when (the best validation loss so far, or every epoch without
    validation); the file is written under a temporary name and renamed, so a crash or
    Ctrl-C mid-write leaves the previous checkpoint intact.
    """

    def __init__(self, dirname, *, monitor="valid_loss_best"):
        super().__init__(monitor=monitor, dirname=dirname, f_params=None, f_optimizer=None,
                         f_criterion=None, f_history=None)

    def save_model(self, net):
        last = net.history[-1]
        write_tensors(Path(self.dirname) / CHECKPOINT_FILE, net.module_.state_dict(),
                      {"epoch": last["epoch"], "valid_loss": last.get("valid_loss")})


class EpochTable(PrintLog):
    """skorch's table of epochs, with colour codes only when printed to a terminal."""

    def format_row(self, row, key, color):
        text = super().format_row(row, key, color)
        if isinstance(text, str) and not sys.stdout.isatty():
            return re.sub(r"\x1b\[[0-9;]*m", "", text)
        return text


class TrainingNet(NeuralNet):
    """skorch's NeuralNet with mixed precision, channels-last inputs, and Ctrl-C reported.

    skorch's ``partial_fit`` swallows KeyboardInterrupt (its EarlyStopping stops
    training that way). ``fit_loop`` here tells a user's Ctrl-C apart and records it in
    ``interrupted_``; skorch's train-end callbacks still run (early stopping restores
    the best epoch), and the estimator re-raises once the model is usable.
    """

    def __init__(self, *args, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train, dataset_valid, **kwargs)
        if self.history[0, "epoch"] == 0:  # counted from the scored start, epoch 0
            self.history.record("epoch", len(self.history) - 1)

    def infer(self, x, **fit_params):
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            x = x.to(self.device, memory_format=torch.channels_last)
        with autocast(torch.device(self.device), self.precision):
            return super().infer(x, **fit_params).float()

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        if getattr(self, "_score_start", False):
            self._score_start = False
            self._validation_epoch(X)
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt:
            stopping = dict(self.callbacks_).get("early_stopping")
            self.interrupted_ = not (stopping and stopping.misses_ >= stopping.patience)
            raise

    def _validation_epoch(self, X):
        """Epoch 0: the starting weights scored on the validation part, no training step.

        It runs through skorch's callbacks as any epoch does, so early stopping can keep
        (and restore) the starting weights when no trained epoch beats them.
        """
        dataset_train, dataset_valid = self.get_split_datasets(X, None)
        epoch = {"dataset_train": dataset_train, "dataset_valid": dataset_valid}
        self.notify("on_epoch_begin", **epoch)
        self.history.record("epoch", 0)
        self.history.record("train_loss", float("nan"))  # no step: keeps the table's columns
        self.run_single_epoch(self.get_iterator(dataset_valid, training=False), training=False,
                              prefix="valid", step_fn=self.validation_step)
        self.notify("on_epoch_end", **epoch)

    def train(self, train, valid, *, epochs, score_start=False):
        """Train ``epochs`` more epochs on ``train``, validating on ``valid`` (or None).

        With ``score_start`` and a ``valid`` set, the starting weights are scored first,
        as epoch 0 of the history, and early stopping may restore them.

        Returns
        -------
        interrupted : bool
            Whether a KeyboardInterrupt (not early stopping) ended training.
        """
        from skorch.helper import predefined_split

        if self.initialized_ and not hasattr(self, "optimizer_"):  # unpickled: no state
            self.initialize_optimizer()
        self.interrupted_ = False
        self._score_start = score_start and valid is not None
        self.set_params(train_split=None if valid is None else predefined_split(valid))
        try:
            self.partial_fit(train, None, epochs=epochs)
        finally:
            self.set_params(train_split=None)
        return self.interrupted_

    def best_epoch(self):
        """The epoch whose weights the module holds: early stopping's best, else the last."""
        stopping = dict(self.callbacks_).get("early_stopping")
        if stopping is not None and stopping.best_epoch_ is not None:
            return int(stopping.best_epoch_)
        return int(self.history[-1, "epoch"]) if len(self.history) else 0

    def forget_training_data(self):
        """Drop the copy of the best weights that early stopping kept during training."""
        for _, callback in self.callbacks_:
            if hasattr(callback, "best_model_weights_"):
                callback.best_model_weights_ = None


def resolve_optimizer(optimizer):
    """(optimizer class, extra skorch parameters) for "adamw", "sgd" or a class."""
    if optimizer == "adamw":
        return torch.optim.AdamW, {}
    if optimizer == "sgd":
        return torch.optim.SGD, {"optimizer__momentum": 0.9}
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(
            f"optimizer={optimizer!r} is not a torch.optim.Optimizer subclass; use "
            "'adamw', 'sgd' or a class such as torch.optim.RMSprop."
        )
    return optimizer, {}


def training_net(module, *, loss, class_weight, lr, block_rates, optimizer, weight_decay,
                 max_epochs, batch_size, n_train, early_stopping, patience, checkpoint,
                 validation, verbose, device):
    """A :class:`TrainingNet` for ``module`` with sktransfer's callbacks and options.

    ``loss`` computes per-sample losses (``reduction="none"``), averaged by
    :class:`SampleWeightedLoss` with ``class_weight`` (or None) and any sample weights;
    ``block_rates`` maps block indices to learning rates (parameter groups);
    ``validation`` says whether a validation set will be given (for the checkpoint's
    monitor).
    """
    callbacks = []
    if checkpoint:
        callbacks.append(("checkpoint", AtomicCheckpoint(
            checkpoint, monitor="valid_loss_best" if validation else None)))
    if early_stopping:
        callbacks.append(("early_stopping", EarlyStopping(
            monitor="valid_loss", patience=patience, load_best=True)))
    if verbose >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    optimizer_class, optimizer_params = resolve_optimizer(optimizer)
    return TrainingNet(
        module=module,
        criterion=SampleWeightedLoss,
        criterion__loss=loss,
        criterion__class_weight=class_weight,
        optimizer=optimizer_class,
        lr=lr,
        optimizer__weight_decay=weight_decay,
        optimizer__param_groups=[(f"blocks.{i}.*", {"lr": rate}) for i, rate in block_rates.items()],
        **optimizer_params,
        max_epochs=max_epochs,
        batch_size=batch_size,
        iterator_train__shuffle=True,
        # A last batch of one image breaks BatchNorm in training mode.
        iterator_train__drop_last=n_train % batch_size == 1 and n_train > 1,
        train_split=None,
        callbacks=callbacks,
        callbacks__print_log=EpochTable(),
        verbose=verbose,
        device=str(device),
    )


def light_augmentation(input_size):
    """Random resized crop (60-100% of the area) and horizontal flip."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(input_size, scale=(0.6, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ])
