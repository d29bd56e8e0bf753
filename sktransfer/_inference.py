"""The inference engine: images streamed through a network's blocks into features.

No estimator lives here. Every estimator that runs a network prepares a copy of it
once (:func:`prepare_inference`) and streams images through it
(:func:`stream_features`); pooling turns each block's output into one row per image.
"""

import copy
import functools
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._compile import (
    EXPECTED_SPEEDUP,
    CompiledForms,
    expected_compile_seconds,
    repaid_already,
    worth_compiling,
)
from ._device import autocast, image_size_errors, out_of_memory_errors, resolve_precision

POOLINGS = ("avg", "max", "avgmax")

#: Images per inference batch at 224 px. Measured on a 2-core AVX-512 CPU (benchmarks/):
#: 8 ran 1.3-3x faster than 64 (the activations stay in cache); smaller images get
#: proportionally larger batches.
PIXELS_PER_BATCH = 8 * 224 * 224


#: A transform measures the batch size when it has at least this many batches of the
#: rule's size: the measured batches (14 rule-sized ones) are then 3.5% of the job,
#: and only the slower sizes among them cost anything (well under 2% of the job).
MEASURE_MIN_BATCHES = 400
#: Each candidate size runs this many times, interleaved; the first run builds its
#: kernels and is not timed, the fastest of the others counts (the least disturbed).
MEASURE_ROUNDS = 4
#: The batch size measured fastest per (architecture, input size, layers, device,
#: precision), for this process.
MEASURED_BATCH_SIZES = {}


def inference_batch_size(batch_size, input_size):
    """``batch_size``, or for "auto" the batch holding about 8 images of 224 x 224 pixels."""
    if batch_size != "auto":
        return batch_size
    return max(1, min(256, round(PIXELS_PER_BATCH / (input_size[0] * input_size[1]))))


class BatchSizer:
    """The batch sizes of one stream of images: the measured winner, or measured now.

    The rule's size ``r`` (:func:`inference_batch_size`) is a good guess, but the
    fastest size differs by CPU (batch 8 on one, 4 on another, at 224 px). A stream of
    at least ``MEASURE_MIN_BATCHES`` batches (smaller ones keep the rule) times ``r/2``,
    ``r`` and ``2r`` on its own first images (``MEASURE_ROUNDS`` times each, interleaved:
    the first run of a shape builds its kernels and is not timed; the fastest other run
    counts), keeps the fastest per image for the rest of the stream and remembers it in
    ``MEASURED_BATCH_SIZES`` for later streams of the same setting.
    The measured batches are real work: only their slower sizes cost anything.
    """

    def __init__(self, key, rule, n_images):
        self.key = key
        self.default = rule
        self.plan = []
        candidates = sorted({max(1, rule // 2), rule, min(256, 2 * rule)})
        plan = candidates * max(2, MEASURE_ROUNDS)
        # setdefault claims the measurement (atomically): streams running at the same
        # time in other threads find the claim and use the rule instead of measuring.
        if n_images >= sum(plan) + rule and MEASURED_BATCH_SIZES.setdefault(key, self) is self:
            self.plan, self._n_candidates = plan, len(candidates)
        self._times = {}
        self._pending = self._recorded = 0

    def next_size(self):
        """The size of the next batch to prepare."""
        if self._pending < len(self.plan):
            self._pending += 1
            return self.plan[self._pending - 1]
        return self.winner() or self.default  # or still being measured

    def release(self):
        """Give up an unfinished measurement (the stream failed): the next stream measures."""
        if MEASURED_BATCH_SIZES.get(self.key) is self:
            MEASURED_BATCH_SIZES.pop(self.key, None)

    def winner(self):
        """The measured size, or None while it is being measured (here or elsewhere)."""
        size = MEASURED_BATCH_SIZES.get(self.key)
        return size if isinstance(size, int) else None

    def record(self, index, size, seconds):
        """Batch number ``index`` of ``size`` images took ``seconds``."""
        if index >= len(self.plan) or size != self.plan[index]:
            return
        self._recorded += 1
        if index >= self._n_candidates:  # not the first run of its size
            self._times[size] = min(self._times.get(size, float("inf")), seconds / size)
        if self._recorded == len(self.plan) and self._times:
            MEASURED_BATCH_SIZES[self.key] = min(self._times, key=self._times.get)


def batch_setting(blocks, input_size, layers, pooling, device, precision, in_memory):
    """What the fastest batch size depends on: the architecture (not its weights), the
    input size, the layers and pooling read, the device, precision and threads, and
    whether images are decoded alongside (files) or already in memory (arrays)."""
    shapes = tuple((type(module).__name__, tuple(p.shape))
                   for block in list(blocks)[:max(layers) + 1] for module in block.modules()
                   for p in module.parameters(recurse=False))
    return (hash(shapes), tuple(input_size), tuple(layers), pooling, str(device), precision,
            torch.get_num_threads(), in_memory)


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
    """A fitted network prepared for inference: its blocks, device and precision.

    ``compile`` (False, True or "auto") says whether streams run it through
    torch.compile; ``compiled`` holds its compiled forms, made on first use.
    """

    blocks: nn.Sequential
    device: torch.device
    precision: str
    compile: object = False
    compiled: CompiledForms = field(default_factory=CompiledForms, compare=False, repr=False)

    def __post_init__(self):  # np.bool_ and 0/1 count as bools
        if not (isinstance(self.compile, str) and self.compile == "auto"):
            object.__setattr__(self, "compile", bool(self.compile))

    def with_compile(self, compile):
        """The same prepared network (and compiled forms) under another ``compile``."""
        return self if compile == self.compile else replace(self, compile=compile,
                                                            compiled=self.compiled)


def prepare_inference(blocks, device, precision, *, compile=False, warn=True):
    """An :class:`Inference` of a copy of ``blocks`` for ``device`` (see inference_blocks)."""
    return Inference(inference_blocks(blocks, device), device,
                     resolve_precision(device, precision, warn=warn), compile)


def run_blocks(blocks, batch, layers, pooling):
    """Run ``blocks`` up to the highest of ``layers``; pool and join their outputs in order."""
    outputs = {}
    top = max(layers)
    for index in range(top + 1):
        batch = blocks[index](batch)
        if index in layers:
            outputs[index] = pool_features(batch, pooling)
    return torch.cat([outputs[index] for index in layers], dim=1)


class BlockRunner:
    """Runs one stream's batches through the network: eagerly or compiled.

    ``compile=True`` compiles from the first batch. ``"auto"`` runs eagerly and compiles
    when the rest of the stream repays the compile (judged from its first timed eager
    batches, :func:`sktransfer._compile.worth_compiling`), or when the time this network
    has run eagerly, over all streams and threads, would have paid for it
    (:func:`sktransfer._compile.repaid_already`: a job split into many calls).

    A compiled network has a fixed batch size: ``size`` rows (the stream's batch size;
    for a measured one a function giving the winner, None until it is known, when
    batches run eagerly). Shorter batches are padded to it (the padding's rows are
    dropped; in eval mode images do not affect each other), so the last batch and short
    jobs reuse the compile, unless they are so short that running them eagerly is faster.
    """

    #: compile="auto" judges the stream after this many eager batches (the first one
    #: builds kernels and is not counted).
    AUTO_TIMED_BATCHES = 3

    def __init__(self, inference, layers, pooling, *, n_images, size, setting, on_compile=None):
        self.inference = inference
        self.layers = tuple(layers)
        self.pooling = pooling
        self.n_images = n_images
        self._size = size
        self._setting = setting  # a function: hashing the architecture is for large jobs
        self.on_compile = on_compile
        self.compiling = inference.compile is True
        self._auto = inference.compile == "auto"
        self._judged = False
        self._key = None  # of the last batch that could run compiled
        self._per_image = []
        self._done = 0

    def __call__(self, batch):
        """Pooled features of ``batch``."""
        n = len(batch)
        size = self._size() if callable(self._size) else self._size
        compiled = self.inference.compiled
        # a batch much shorter than the compiled one runs faster eagerly than padded
        if self.inference.compile and size is not None and size / EXPECTED_SPEEDUP <= n <= size:
            self._key = (self.layers, self.pooling, (size, *batch.shape[1:]), batch.dtype,
                         torch.is_autocast_enabled(batch.device.type))
            if self._auto and not self.compiling and (
                compiled.has(self._key)  # compiled by an earlier stream: free
                or repaid_already(compiled.eager_seconds(self._key), self._compile_cost())
            ):
                self.compiling = True
            if self.compiling and not compiled.failed(self._key):
                return self._compiled(batch, size)[:n]
        return run_blocks(self.inference.blocks, batch, self.layers, self.pooling)

    def _compiled(self, batch, size):
        if len(batch) < size:
            batch = torch.cat([batch, batch[-1:].expand(size - len(batch), *batch.shape[1:])])
            batch = batch.contiguous(memory_format=torch.channels_last)  # as compiled for
        blocks, layers, pooling = self.inference.blocks, self.layers, self.pooling

        def read_layers(batch):
            return run_blocks(blocks, batch, layers, pooling)

        compiled, key = self.inference.compiled, self._key
        announce = self.on_compile is not None and not compiled.has(key)
        if announce:
            self.on_compile(True)
        pooled = compiled(key, read_layers, batch, timing_key=(self._setting(), key))
        if announce:
            self.on_compile(False)
        return pooled

    def _compile_cost(self):
        return expected_compile_seconds((self._setting(), self._key))

    def record(self, n, seconds):
        """``n`` images ran in ``seconds``; compile="auto" decides from these times.

        Only batches that could have run compiled count (``_key`` is set): not those of
        a batch-size measurement, whose size is not known yet.
        """
        self._done += n
        if not self._auto or self.compiling or self._key is None:
            return
        self.inference.compiled.add_eager_seconds(self._key, seconds)  # read in __call__
        self._per_image.append(seconds / n)
        if self._judged or len(self._per_image) <= self.AUTO_TIMED_BATCHES:
            return
        self._judged = True
        remaining = self.n_images - self._done
        self.compiling = worth_compiling(
            self.inference.device, per_image_seconds=min(self._per_image[1:]),
            remaining_images=remaining, remaining_batches=remaining // n,
            compile_seconds=self._compile_cost())


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
    """Stream ``images`` through ``blocks`` into a preallocated float32 array.

    Memory beyond the output stays bounded by one batch: images are decoded (the next
    batch in a background thread while the network runs), preprocessed and run batch by
    batch under ``inference_mode``, in the channels-last layout that oneDNN and cuDNN
    convolutions run fastest in (same results as NCHW to float rounding).
    ``inference`` comes from :func:`prepare_inference`: it is only read, so threads
    may share it. With ``views`` (:class:`TTAViews`), each image's row is the mean
    of its views' rows, computed in one pass of ``len(views)`` times the batch.
    ``batch_size="auto"`` measures the fastest size on large streams (:class:`BatchSizer`);
    ``inference.compile`` runs the batches compiled where it pays (:class:`BlockRunner`).

    Returns
    -------
    ndarray of shape (n_images, n_features), float32
    """
    device, precision = inference.device, inference.precision
    # hashing the architecture is for large jobs and compiled networks only
    setting = functools.cache(lambda: batch_setting(
        inference.blocks, preprocessing.input_size, layers, pooling, device, precision,
        images.in_memory))
    if batch_size == "auto":
        batch_size = inference_batch_size("auto", preprocessing.input_size)
        if len(images) >= MEASURE_MIN_BATCHES * batch_size:  # small jobs keep the rule
            batch_size = BatchSizer(setting(), batch_size, len(images))
    measured = isinstance(batch_size, BatchSizer)
    typical = batch_size.default if measured else batch_size
    n_batches = -(-len(images) // typical)
    features = None
    with torch.inference_mode(), autocast(device, precision), out_of_memory_errors(
        input_size=preprocessing.input_size, batch_size=typical
    ), tqdm(total=len(images), unit="img", desc="extracting features",
            disable=show_progress(progress, n_batches)) as bar:
        rows = len(views) if views is not None else 1  # rows per image in a batch

        def measured_size():  # None while measuring: the batches then run eagerly
            winner = batch_size.winner()
            return None if winner is None else winner * rows

        size = measured_size if measured else typical * rows
        runner = BlockRunner(inference, layers, pooling, n_images=len(images), setting=setting,
                             size=size,
                             on_compile=lambda now: bar.set_postfix_str("compiling" if now else ""))
        try:
            for index, (start, batch) in enumerate(images.batches(batch_size, preprocessing)):
                began = time.perf_counter()
                batch = batch.to(device)
                if views is not None:
                    batch = views(batch)
                batch = batch.contiguous(memory_format=torch.channels_last)
                pooled = runner(batch)
                if views is not None:
                    pooled = pooled.float().unflatten(0, (len(views), -1)).mean(0)
                if features is None:
                    features = np.empty((len(images), pooled.shape[1]), dtype=np.float32)
                features[start:start + len(pooled)] = pooled.float().cpu().numpy()
                seconds = time.perf_counter() - began  # the copy to numpy waited for the device
                if measured:
                    batch_size.record(index, len(pooled), seconds)
                runner.record(len(pooled), seconds)
                bar.update(len(pooled))
        finally:
            if measured:  # a stream that failed mid-measurement leaves it to the next
                batch_size.release()
    return features
