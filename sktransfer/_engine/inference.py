"""The inference engine: images streamed through a network's blocks into features.

No estimator lives here. Every estimator that runs a network prepares a copy of it
once (:func:`prepare_inference`) and streams images through it
(:func:`stream_features`); pooling turns each block's output into one row per image.
On a CPU the copy runs in ONNX Runtime (:mod:`sktransfer._engine.onnx`): 2-3.4x faster than
eager PyTorch for the same features (benchmarks/README.md); on a GPU in torch.
"""

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sktransfer._engine.device import autocast, image_size_errors, out_of_memory_errors, resolve_precision
from sktransfer._engine.onnx import fingerprint, onnx_network

POOLINGS = ("avg", "max", "avgmax")
BACKENDS = ("auto", "torch", "onnxruntime")

#: Input values (images x channels x pixels) from which a job repays an export with
#: backend="auto": 12 million, 80 images of 224 px or 1,736 of 48 px. The measured
#: break-evens of efficientnet_lite0 (benchmarks/README.md) were 97 images at 224 px
#: and 1,265 at 48 px; a process's first export also imports the exporter (about 1 s).
EXPORT_FROM_VALUES = 12_000_000

#: Images per inference batch at 224 px; smaller images get proportionally larger
#: batches. Measured on 2-core AMD EPYC CPUs (benchmarks/bench_extract.py).
PIXELS_PER_BATCH = 8 * 224 * 224


def inference_batch_size(batch_size, input_size):
    """``batch_size``, or for "auto" the batch holding about ``PIXELS_PER_BATCH`` pixels."""
    if batch_size != "auto":
        return batch_size
    return max(1, min(256, round(PIXELS_PER_BATCH / (input_size[0] * input_size[1]))))


def resolve_backend(backend, device, precision):
    """What runs the network: "onnxruntime" or "torch".

    "auto" is ONNX Runtime on the CPU in fp32 and torch elsewhere (GPUs, and bf16 or
    fp16, which the exported graphs do not run); :meth:`Inference.for_job` then keeps
    jobs too small to repay an export on torch.
    """
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "onnxruntime" if device.type == "cpu" and precision == "fp32" else "torch"
    if backend != "onnxruntime":
        raise ValueError(f"backend={backend!r} is not one of {list(BACKENDS)}.")
    if device.type != "cpu" or precision != "fp32":
        raise ValueError(
            f"backend='onnxruntime' runs fp32 on the CPU; here the device is "
            f"{device.type!r} and the precision {precision!r}. Use backend='auto' (torch "
            "on GPUs and in bf16/fp16) or device='cpu' with precision='fp32'.")
    return "onnxruntime"


def pool_features(feature_map, pooling):
    """Pool a block's output into one row per image, or flatten it (``pooling=None``).

    A map ``(n, C, H, W)`` is pooled over its positions to ``(n, C)`` (``2C`` for
    "avgmax"). A token sequence ``(n, tokens, dim)`` (vision transformers) is summarized
    by its first token, the class token, as the network's own head reads it: ``(n, dim)``
    for "avg"; "max" and "avgmax" pool maps only.
    """
    if feature_map.ndim == 2:
        return feature_map
    if pooling is None:
        return feature_map.flatten(1)
    if feature_map.ndim == 3:
        if pooling != "avg":
            raise ValueError(
                f"pooling={pooling!r} pools feature maps, but this block outputs a token "
                f"sequence {tuple(feature_map.shape[1:])} (tokens, dim), summarized by its "
                "class token: use pooling='avg' (the class token) or None (every token)."
            )
        return feature_map[:, 0]
    flat = feature_map.flatten(2)
    if pooling == "avg":
        return flat.mean(2)
    if pooling == "max":
        return flat.amax(2)
    return torch.cat([flat.mean(2), flat.amax(2)], dim=1)


def inference_blocks(blocks, device):
    """A frozen copy of ``blocks`` for inference, prepared once for ``device``.

    Each block is traced alone by torch.fx and conv + BatchNorm pairs are fused (in eval
    mode the same function, to float rounding: 25-60% faster on a CPU, benchmarks/). A
    block that fx cannot trace is kept as it is. The copy is in eval mode, without
    gradients, on ``device`` in the channels-last layout that oneDNN and cuDNN run
    fastest: inference never has to change it, so several threads can share it. The
    original blocks are not touched.
    """
    from torch.fx.experimental.optimization import fuse

    copies = []
    for block in copy.deepcopy(blocks).eval():
        try:
            block = fuse(block, inplace=True)
        except Exception:  # noqa: BLE001 - fx fails in many ways on untraceable code
            pass
        copies.append(block)
    prepared = nn.Sequential(*copies).eval().requires_grad_(False)
    return prepared.to(device, memory_format=torch.channels_last)


@dataclass(frozen=True)
class Inference:
    """A network prepared for inference: its blocks, device, precision and backend.

    ``backend`` ("auto", "torch" or "onnxruntime") is resolved on creation
    (:func:`resolve_backend`). With ONNX Runtime, each part of the network that
    :meth:`run` is asked for gets its session on first use (exported once per process,
    :func:`sktransfer._engine.onnx.onnx_network`), kept in ``networks``; a part that cannot be
    exported runs on torch. The blocks are never changed: threads may share it.
    """

    blocks: nn.Sequential
    device: torch.device
    precision: str
    backend: str = "auto"
    networks: dict = field(default_factory=dict, compare=False, repr=False)
    chosen: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "chosen", self.backend != "auto")
        object.__setattr__(self, "backend",
                           resolve_backend(self.backend, self.device, self.precision))

    def for_job(self, n_values):
        """The inference to run a job of ``n_values`` input values on.

        With backend="auto" resolved to ONNX Runtime, a job too small to repay an
        export (:data:`EXPORT_FROM_VALUES`) runs on torch, unless this network has been
        exported already: a predict of a few images right after ``fit`` is not made
        to wait for an export. A chosen backend is kept.
        """
        if (self.chosen or self.backend != "onnxruntime" or self.networks
                or n_values >= EXPORT_FROM_VALUES):
            return self
        return replace(self, backend="torch", networks=self.networks)

    def with_backend(self, backend):
        """The same prepared network (and exported parts) run by ``backend``."""
        resolved = resolve_backend(backend, self.device, self.precision)
        if resolved == self.backend and (backend != "auto") == self.chosen:
            return self
        return replace(self, backend=backend, networks=self.networks)

    def run(self, batch, layers, pooling, start=0):
        """Pooled features of ``batch``: blocks ``start`` up to the highest of ``layers``.

        ``batch`` holds inputs of block ``start`` (images for 0). Returns a float tensor
        ``(n, n_features)``, on the device.
        """
        if self.backend == "onnxruntime" and start <= max(layers) < len(self.blocks):
            network = self._network(tuple(layers), pooling, start, tuple(batch.shape[1:]))
            if network is not None:
                # numpy's copy to (n, c, h, w), in one thread (see _preprocessing._normalize)
                return torch.from_numpy(network(np.ascontiguousarray(batch.float().numpy())))
        if batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return run_blocks(self.blocks, batch, layers, pooling, start)

    def _network(self, layers, pooling, start, input_shape):
        key = (layers, pooling, start, input_shape)
        if key not in self.networks:  # a race computes it twice, exports it once
            module = ReadLayers(self.blocks, layers, pooling, start)
            self.networks[key] = onnx_network(
                module, input_shape, (fingerprint(module.blocks), tuple(module.layers), pooling))
        return self.networks[key]


def prepare_inference(blocks, device, precision, *, backend="auto", warn=True):
    """An :class:`Inference` of a copy of ``blocks`` for ``device`` (see inference_blocks)."""
    return Inference(inference_blocks(blocks, device), device,
                     resolve_precision(device, precision, warn=warn), backend)


def run_blocks(blocks, batch, layers, pooling, start=0):
    """Run ``blocks`` from ``start`` up to the highest of ``layers``; pool and join their
    outputs in the order of ``layers``."""
    outputs = {}
    for index in range(start, max(layers) + 1):
        batch = blocks[index](batch)
        if index in layers:
            outputs[index] = pool_features(batch, pooling)
    return torch.cat([outputs[index] for index in layers], dim=1)


class ReadLayers(nn.Module):
    """:func:`run_blocks` as a module: what ONNX Runtime runs (layers counted from ``start``)."""

    def __init__(self, blocks, layers, pooling, start=0):
        super().__init__()
        self.blocks = nn.Sequential(*list(blocks)[start:max(layers) + 1])
        self.layers = [layer - start for layer in layers]
        self.pooling = pooling
        self.training = False  # as the blocks are: eval() would set them, shared, too

    def forward(self, batch):
        return run_blocks(self.blocks, batch, self.layers, self.pooling)


def pooled_width(shape):
    """Width of the pooled features of a block output of one image's ``shape``.

    ``(C, H, W)`` maps and ``(C,)`` vectors give C; ``(tokens, dim)`` sequences dim.
    """
    return shape[-1] if len(shape) == 2 else shape[0]


def block_output_shapes(blocks, preprocessing):
    """Shape of each block's output for one image, from one forward pass of a blank one."""
    x = torch.zeros(1, preprocessing.channels, *preprocessing.input_size)
    shapes = []
    was_training = blocks.training
    blocks.eval()
    with torch.inference_mode(), image_size_errors(preprocessing.input_size):
        for block in blocks:
            x = block(x)
            shapes.append(tuple(x.shape[1:]))
    blocks.train(was_training)
    return shapes


def show_progress(progress, n_batches):
    """tqdm's ``disable`` for ``progress`` in {"auto", True, False}."""
    if progress == "auto":
        return None if n_batches >= 10 else True  # None: shown only on a terminal
    return not progress


class TTAViews:
    """Fixed views of every image, whose pooled features are averaged (test-time augmentation).

    ``"flip"``: the image and its horizontal mirror. An int n: the image, its mirror,
    and n - 2 light random views (a zoom of 85-100%, a shift within the margin the zoom
    leaves, a mirror half of the time), drawn once from a generator seeded by the view's
    number: the same views for every image and call, whatever the batch holds, and no
    global random state touched (threads may share them).
    """

    def __init__(self, tta):
        if not (tta == "flip" or (isinstance(tta, (int, np.integer)) and not isinstance(tta, bool)
                                  and tta >= 1)):
            raise ValueError(f"tta={tta!r}: use None, 'flip' or a number of views >= 1.")
        n_views = 2 if tta == "flip" else int(tta)
        self.views = [(1.0, 0.0, 0.0, False), (1.0, 0.0, 0.0, True)][:n_views]
        for index in range(2, n_views):
            generator = torch.Generator().manual_seed(index)
            scale, dx, dy, mirror = torch.rand(4, generator=generator).tolist()
            scale = 0.85 + 0.15 * scale
            margin = 1.0 - scale
            self.views.append((scale, margin * (2 * dx - 1), margin * (2 * dy - 1),
                               mirror < 0.5))

    def __len__(self):
        return len(self.views)

    def __call__(self, batch):
        """The views of ``batch`` (N, C, H, W), stacked view by view: (len(self) * N, ...)."""
        out = []
        for scale, dx, dy, mirror in self.views:
            view = batch.flip(-1) if mirror else batch
            if scale != 1.0 or dx or dy:
                theta = torch.tensor([[scale, 0.0, dx], [0.0, scale, dy]], dtype=view.dtype,
                                     device=view.device).expand(len(view), 2, 3)
                grid = nn.functional.affine_grid(theta, view.shape, align_corners=False)
                view = nn.functional.grid_sample(view, grid, mode="bilinear",
                                                 padding_mode="reflection", align_corners=False)
            out.append(view)
        return torch.cat(out)


def stream_features(inference, images, *, layers, pooling, preprocessing, batch_size,
                    progress="auto", views=None):
    """Stream ``images`` through ``inference`` into a preallocated float32 array.

    Memory beyond the output stays bounded by one batch: images are decoded (the next
    batch in a background thread while the network runs), preprocessed and run batch by
    batch under ``inference_mode``. ``inference`` comes from :func:`prepare_inference`:
    it is only read, so threads may share it. With ``views`` (:class:`TTAViews`), each
    image's row is the mean of its views' rows, computed in one pass of ``len(views)``
    times the batch. ``batch_size="auto"``: see :func:`inference_batch_size`.

    Returns
    -------
    ndarray of shape (n_images, n_features), float32
    """
    batch_size = inference_batch_size(batch_size, preprocessing.input_size)
    inference = inference.for_job(len(images) * preprocessing.channels
                                  * preprocessing.input_size[0] * preprocessing.input_size[1])
    features = None
    with torch.inference_mode(), out_of_memory_errors(
        input_size=preprocessing.input_size, batch_size=batch_size
    ), tqdm(total=len(images), unit="img", desc="extracting features",
            disable=show_progress(progress, -(-len(images) // batch_size))) as bar:
        for start, batch in images.batches(batch_size, preprocessing):
            batch = batch.to(inference.device)
            if views is not None:
                batch = views(batch)
            pooled = inference.run(batch, layers, pooling).float()
            if views is not None:
                pooled = pooled.unflatten(0, (len(views), -1)).mean(0)
            if features is None:
                features = np.empty((len(images), pooled.shape[1]), dtype=np.float32)
            features[start:start + len(pooled)] = pooled.cpu().numpy()
            bar.update(len(pooled))
    return features
