"""The network that fine-tuning trains: backbone blocks, pooling, a new linear head.

Freezing lives here: frozen blocks have ``requires_grad=False`` and stay in eval mode
whatever ``train()`` is called with, so their weights *and* BatchNorm statistics are
unchanged by training (the trap of freezing by ``requires_grad`` alone). With
``batchnorm="frozen"`` the BatchNorm layers of the trainable blocks stay in eval mode too:
their running statistics are kept while their affine weights train (as Keras's transfer
guide advises: statistics of small batches of a new domain cost 8-17 points).
"""

from numbers import Integral

import torch
from torch import nn

from sktransfer._engine.inference import pool_features


class TransferNet(nn.Module):
    """Blocks, global average pooling and a linear head; the bottom blocks frozen.

    Parameters
    ----------
    blocks : torch.nn.Sequential
        Backbone blocks, bottom to top.
    n_features : int
        Channels of the last block's output.
    n_classes : int
        Outputs of the new head.
    n_frozen : int
        Number of bottom blocks kept frozen.
    batchnorm : {"frozen", "train"}, default="frozen"
        Whether the trainable blocks' BatchNorm layers keep their running statistics
        (inference mode) or update them from each training batch.

    Attributes
    ----------
    input_block : int
        Index of the block the input enters. 0 for images; ``n_frozen`` when training
        on cached outputs of the frozen blocks (``len(blocks)``: pooled features).
    """

    def __init__(self, blocks, n_features, n_classes, n_frozen, *, batchnorm="frozen"):
        super().__init__()
        self.blocks = blocks
        self.head = nn.Linear(n_features, n_classes)
        self.n_frozen = n_frozen
        self.batchnorm = batchnorm
        self.input_block = 0
        for block in blocks[:n_frozen]:
            block.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for block in self.blocks[: self.n_frozen]:
            block.eval()
        if self.batchnorm == "frozen":
            for module in self.blocks[self.n_frozen:].modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def features(self, x):
        """Pooled output of the last block (the penultimate features)."""
        for index in range(self.input_block, len(self.blocks)):
            if index < self.n_frozen:
                with torch.no_grad():
                    x = self.blocks[index](x)
            else:
                x = self.blocks[index](x)
        return pool_features(x, "avg")

    def forward(self, x):
        return self.head(self.features(x))


def resolve_freeze(freeze, n_blocks, block_names=None):
    """Number of frozen bottom blocks for ``freeze`` (int, negative int, or "all")."""
    if freeze == "all":
        return n_blocks
    if isinstance(freeze, Integral) and not isinstance(freeze, bool):
        if 0 <= freeze <= n_blocks:
            return int(freeze)
        if -n_blocks <= freeze < 0:
            return n_blocks + int(freeze)
    names = f": {', '.join(block_names)}" if block_names else ""
    raise ValueError(
        f"freeze={freeze!r} is out of range: this backbone has {n_blocks} blocks{names}. "
        f"Use 0 (fine-tune all) to {n_blocks} or 'all' (train only the head), or -k to "
        "leave the top k blocks trainable."
    )


def block_learning_rates(n_blocks, n_frozen, lr, layer_lr_decay):
    """Learning rate of each trainable block: the head's ``lr`` times decay per block down."""
    return {index: lr * layer_lr_decay ** (n_blocks - index) for index in range(n_frozen, n_blocks)}
