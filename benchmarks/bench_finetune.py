"""Fine-tuning speed: FineTuneClassifier against a hand-written loop and skorch's Freezer.

1. freeze=0: one epoch of FineTuneClassifier.fit against a hand-written PyTorch training
   loop on the same model, optimizer (AdamW) and batches. Goal: <= 1.1x its time.
2. freeze="all" and a middle depth: FineTuneClassifier against skorch's
   NeuralNetClassifier with its Freezer callback on the same model, per epoch over a
   3-epoch fit. Goal at "all": >= 3x faster (frozen-trunk caching).

    python benchmarks/bench_finetune.py
"""

import copy

import numpy as np
import torch
from torch import nn

from _common import machine, print_table, race
from sktransfer import FineTuneClassifier
from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.images import read_images
from sktransfer._training.transfer_net import TransferNet

N_IMAGES, BATCH, EPOCHS, CLASSES = 64, 32, 3, 4


def hand_loop(model, inputs, labels, epochs=1):
    """What one writes by hand: train mode, AdamW, cross-entropy, fp32 NCHW batches."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(inputs), BATCH):
            loss = nn.functional.cross_entropy(model(inputs[start:start + BATCH]),
                                               labels[start:start + BATCH])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def ours(freeze, images, y, epochs):
    return lambda: FineTuneClassifier(freeze=freeze, max_epochs=epochs, early_stopping=False,
                                      batch_size=BATCH, device="cpu", random_state=0,
                                      lr=1e-3, layer_lr_decay=1.0).fit(images, y)


def skorch_freezer(n_frozen, inputs, y, epochs):
    from skorch import NeuralNetClassifier
    from skorch.callbacks import Freezer

    blocks = resolve_backbone("efficientnet_lite0").blocks
    frozen = tuple(f"blocks.{i}." for i in range(n_frozen))

    def run():
        model = TransferNet(copy.deepcopy(blocks), 1280, CLASSES, n_frozen=0)
        NeuralNetClassifier(model, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.AdamW,
                            lr=1e-3, max_epochs=epochs, batch_size=BATCH, train_split=None,
                            callbacks=[Freezer(lambda name: name.startswith(frozen))],
                            verbose=0, iterator_train__shuffle=True).fit(inputs, y)
    return run


def main():
    print(machine())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 224, 224, 3), dtype=np.uint8)
    y = np.arange(N_IMAGES) % CLASSES
    backbone = resolve_backbone("efficientnet_lite0")
    inputs = read_images(images).prepare(slice(0, N_IMAGES), backbone.preprocessing)
    labels = torch.as_tensor(y)
    model = TransferNet(copy.deepcopy(backbone.blocks), 1280, CLASSES, n_frozen=0)

    one_epoch = race({"hand-written loop": lambda: hand_loop(model, inputs, labels),
                      "FineTuneClassifier": ours(0, images, y, epochs=1)}, rounds=3)
    ratio = one_epoch["FineTuneClassifier"] / one_epoch["hand-written loop"]
    print_table(
        f"finetune freeze=0: one epoch on {N_IMAGES} images of 224 px, batch {BATCH}, "
        "efficientnet_lite0, median of 3 (FineTuneClassifier's time is its whole fit)",
        [{"contender": name, "seconds": f"{t:.2f}"} for name, t in one_epoch.items()]
        + [{"contender": "time ratio (goal <= 1.1)", "seconds": f"{ratio:.2f}x"}],
        ["contender", "seconds"])

    rows = []
    n_blocks = len(backbone.block_names)
    for freeze in ("all", n_blocks // 2):
        n_frozen = n_blocks if freeze == "all" else freeze
        times = race({"skorch Freezer": skorch_freezer(n_frozen, inputs, labels, EPOCHS),
                      "sktransfer": ours(freeze, images, y, EPOCHS)}, rounds=2)
        rows.append({
            "freeze": freeze,
            "skorch Freezer s/epoch": f"{times['skorch Freezer'] / EPOCHS:.2f}",
            "sktransfer s/epoch": f"{times['sktransfer'] / EPOCHS:.2f}",
            "speed-up (goal >= 3 at all)": f"{times['skorch Freezer'] / times['sktransfer']:.1f}x",
        })
    print_table(f"finetune, frozen blocks: {EPOCHS}-epoch fits on {N_IMAGES} images, per epoch "
                "(sktransfer's one-time caching included)", rows, list(rows[0]))


if __name__ == "__main__":
    main()
