"""What a network expects of its input, and the batched transform that gives it that.

The metadata (input size, mean, std, interpolation) always comes from the weights'
own description (timm's ``pretrained_cfg``, torchvision's ``weights.transforms()``);
this module only applies it, on whole batches.
"""

from dataclasses import asdict, dataclass, replace
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    """Input contract of a network.

    Parameters
    ----------
    input_size : tuple of (int, int)
        Height and width the images are resized to.
    mean, std : tuple of float or None
        Per-channel normalization; ``None`` leaves pixel values in [0, 1].
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling used by the resize.
    channels : {1, 3}
        Number of channels the network takes (grayscale is replicated to 3).
    """

    input_size: tuple
    mean: tuple | None = None
    std: tuple | None = None
    interpolation: str = "bilinear"
    channels: int = 3

    def to_json(self):
        """The fields as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_json(cls, fields):
        """The inverse of :meth:`to_json`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def with_size(self, image_size):
        """Return a copy whose ``input_size`` is ``image_size`` (None keeps it)."""
        if image_size is None:
            return self
        return replace(self, input_size=as_size_pair(image_size, "image_size"))


def as_size_pair(size, name):
    """Turn an int or a (height, width) pair into a validated (int, int) tuple."""
    if isinstance(size, Integral) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(
            f"{name} must be an int or a (height, width) pair of ints, got {size!r}."
        )
    if min(size) < 1:
        raise ValueError(f"{name} must be positive, got {tuple(size)!r}.")
    return (int(size[0]), int(size[1]))


def prepare_batch(batch, preprocessing):
    """Resize, fix channels and normalize a float batch in [0, 1].

    Parameters
    ----------
    batch : torch.Tensor of shape (n, c, h, w), float32
        Images with c in {1, 3, 4}; alpha is dropped, grayscale replicated.
    preprocessing : Preprocessing

    Returns
    -------
    torch.Tensor of shape (n, preprocessing.channels, *input_size)
    """
    batch = to_channels(batch, preprocessing.channels)
    if tuple(batch.shape[-2:]) != preprocessing.input_size:
        antialias = preprocessing.interpolation != "nearest"
        batch = F.interpolate(
            batch,
            size=preprocessing.input_size,
            mode=preprocessing.interpolation,
            antialias=antialias,
            **({} if not antialias else {"align_corners": False}),
        )
    if preprocessing.mean is not None:
        batch = _normalize(batch, preprocessing.mean, preprocessing.std)
    return batch


def _normalize(batch, mean, std):
    """``(batch - mean) / std`` per channel, (n, c, h, w) in the channels-last layout
    that the networks train and run in.

    Computed by numpy, in one thread: torch's OpenMP threads keep spinning after an
    operation, on the cores where ONNX Runtime then runs the network (at 64 px, batch
    8, the network ran at half its speed behind torch's preprocessing).
    """
    n, channels, height, width = batch.shape
    out = np.empty((n, height, width, channels), dtype=np.float32)
    nchw = out.transpose(0, 3, 1, 2)  # a view: writes land channels-last
    shape = (1, -1, 1, 1)
    np.subtract(batch.numpy(), np.asarray(mean, np.float32).reshape(shape), out=nchw)
    np.divide(nchw, np.asarray(std, np.float32).reshape(shape), out=nchw)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def to_channels(batch, channels):
    """``batch`` (n, c, h, w) with ``channels`` channels: alpha dropped, gray replicated,
    RGB to luminance (the weights of PIL's convert("L"))."""
    n_in = batch.shape[1]
    if n_in == 4:
        batch = batch[:, :3]
        n_in = 3
    if n_in == channels:
        return batch
    if channels == 3:
        return batch.expand(-1, 3, -1, -1)
    # RGB to luminance with the ITU-R 601 weights that PIL's convert("L") uses.
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch * weights).sum(dim=1, keepdim=True)
