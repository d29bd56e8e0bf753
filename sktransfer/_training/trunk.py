"""The frozen trunk: what a network's trainable part takes as input, computed once.

When the bottom blocks of a network are frozen, their output for an image never
changes while the top trains: compute it once per fit (and once across fits, folds and
predict with ``memory=``), then run only the top, epoch after epoch.
"""

import numpy as np
import torch

from sktransfer._engine.backbones import weights_digest
from sktransfer._engine.cache import cached_rows
from sktransfer._engine.inference import pool_features, pooled_width, stream_features

#: Largest set of trunk outputs (or preprocessed images) kept in memory as one tensor.
MAX_CACHED_BYTES = 2 * 2**30


class FrozenTrunk:
    """Inputs of block ``start`` of a fitted network for any set of images.

    ``start == 0``: the preprocessed images; ``0 < start < n_blocks``: the output maps
    of the frozen blocks below it; ``start == n_blocks``: their pooled features.

    Parameters
    ----------
    inference : Inference
        Blocks whose bottom ones are the frozen ones: during training the model's own
        (so that cached and uncached training are the same computation), at predict
        the BatchNorm-folded inference copy (equal to float rounding).
    fitted_blocks : torch.nn.Sequential
        The network's own blocks: the digest of the frozen ones keys the disk cache, so
        that fitting and predicting share entries.
    block_shapes : list of tuple
        Output shape of each block for one image.
    preprocessing : Preprocessing
    memory : None, str, path or joblib.Memory, default=None
        Cache per image on disk.
    batch_size : int
        Images per forward pass through the frozen blocks.
    """

    def __init__(self, inference, fitted_blocks, *, block_shapes, preprocessing, memory=None,
                 batch_size):
        self.inference = inference
        self.fitted_blocks = fitted_blocks
        self.block_shapes = block_shapes
        self.preprocessing = preprocessing
        self.memory = memory
        self.batch_size = batch_size

    def input_shape(self, start):
        """Shape of one image's input to block ``start``."""
        if start == 0:
            return (self.preprocessing.channels, *self.preprocessing.input_size)
        if start < len(self.block_shapes):
            return self.block_shapes[start - 1]
        return (pooled_width(self.block_shapes[-1]),)

    def inputs(self, images, start):
        """All images' inputs to block ``start`` as one tensor, or None past the budget."""
        return self.inputs_at(images, [start])[start]

    def inputs_at(self, images, starts):
        """Inputs to each of the blocks ``starts``, from one pass through the blocks.

        Returns
        -------
        dict of int to (torch.Tensor or None)
            None for every start when they would not all fit in the memory budget.
        """
        starts = sorted(set(starts))
        n_blocks = len(self.block_shapes)
        # what one pass stores per image: the maps below each start (pooled alone for
        # a single start at the top, as the disk cache keeps them)
        stored = {s: (self.input_shape(s) if s < n_blocks or len(starts) == 1
                      else self.block_shapes[-1]) for s in starts}
        if len(images) * sum(int(np.prod(shape)) for shape in stored.values()) * 4 > MAX_CACHED_BYTES:
            return {s: None for s in starts}
        result = {}
        if 0 in starts:
            result[0] = torch.cat([batch for _, batch in images.batches(self.batch_size,
                                                                         self.preprocessing)])
        deeper = [s for s in starts if s > 0]
        if not deeper:
            return result
        single_pooled = len(starts) == 1 and deeper[0] == n_blocks

        def extract(subset):
            return stream_features(
                self.inference, subset, layers=[s - 1 for s in deeper],
                pooling="avg" if single_pooled else None,
                preprocessing=self.preprocessing, batch_size=self.batch_size, progress=False)

        if self.memory is None:
            rows = extract(images)
        else:
            key = deeper[0] if len(deeper) == 1 else tuple(deeper)
            computation = ("frozen", weights_digest(self.fitted_blocks[:max(deeper)]), key,
                           self.preprocessing, self.inference.precision)
            rows = cached_rows(images, extract, memory=self.memory, computation=computation)
        offset = 0
        for start in deeper:
            width = int(np.prod(stored[start]))
            block = torch.from_numpy(rows[:, offset:offset + width])
            offset += width
            block = block.reshape(len(images), *stored[start])
            if start == n_blocks and not single_pooled:
                block = pool_features(block, "avg")
            result[start] = block
        return result

    def top_features(self, inputs, start):
        """Pooled output of the last block, running blocks ``start`` and up on ``inputs``."""
        top = len(self.block_shapes) - 1
        if start > top:  # the inputs are the pooled features already
            return inputs.float().numpy()
        features = np.empty((len(inputs), pooled_width(self.block_shapes[-1])), dtype=np.float32)
        inference = self.inference.for_job(inputs.numel())
        with torch.inference_mode():
            for begin in range(0, len(inputs), self.batch_size):
                x = inputs[begin:begin + self.batch_size].to(inference.device)
                pooled = inference.run(x, [top], "avg", start=start)
                features[begin:begin + len(pooled)] = pooled.float().cpu().numpy()
        return features
