"""Where the network runs: device resolution and errors a user can act on."""

import warnings
from contextlib import contextmanager, nullcontext

import torch


def resolve_device(device):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda[:N]"``, ``"mps"`` or a torch.device into a device.

    ``"auto"`` picks CUDA when present, then MPS, else the CPU.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False). Use device='cpu' or device='auto'."
        )
    if resolved.type == "cuda" and resolved.index is not None:
        if resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s). Use device='cuda' or a smaller index."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device!r} was requested but MPS is not available. Use device='cpu' "
            "or device='auto'."
        )
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return resolved


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16():
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), as oneDNN sees it.

    Without it, bf16 convolutions are emulated and run about 20x slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN
        return False


def resolve_precision(device, precision, *, warn=True):
    """The precision that runs on ``device``: ``precision``, or "fp32" where it would crawl.

    ``"bf16"`` on a CPU without native bf16 falls back to ``"fp32"`` with a warning: the
    same code then runs at full speed on every CPU, instead of 20x slower on some.
    ``"fp16"`` needs CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {sorted(PRECISIONS)}.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device, and the device here is {device.type!r}. "
            f"Use precision='fp32'{_bf16_advice()}."
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        if not warn:
            return "fp32"
        warnings.warn(
            "precision='bf16' runs about 20x slower than fp32 on this CPU, which has no "
            "native bfloat16 (AVX-512 BF16 or AMX); running in fp32 instead. Set "
            "precision='fp32' to silence this warning.",
            SlowPrecisionWarning, stacklevel=3,
        )
        return "fp32"
    return precision


def _bf16_advice():
    if cpu_has_native_bf16():
        return " (or 'bf16', which this CPU runs natively)"
    return " (this CPU has no native bf16, so 'bf16' would run in fp32 too)"


class SlowPrecisionWarning(UserWarning):
    """A requested precision would run slowly here, so another one is used."""


def autocast(device, precision):
    """Mixed precision for an already resolved ``precision`` (see :func:`resolve_precision`).

    "fp32" runs in full precision; "bf16" and "fp16" in torch's autocast.
    """
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@contextmanager
def out_of_memory_errors(*, input_size, batch_size):
    """Turn running out of memory on a batch of images into an error that names the fix.

    Only this one failure is translated: any other error keeps its type and traceback.
    """
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise MemoryError(
            f"Out of memory on a batch of {batch_size} images of {input_size}. "
            "Use a smaller batch_size or image_size."
        ) from error


@contextmanager
def image_size_errors(input_size):
    """Around a forward pass of a blank image at fit: torch's failure there means the
    network cannot take images of ``input_size``, so it is named as such."""
    try:
        yield
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise ValueError(
            f"The backbone cannot process images of size {input_size[0]}x{input_size[1]}: "
            f"{message}. Use a larger image_size, or a backbone suited to these images."
        ) from error


@contextmanager
def seeded(seed, device):
    """Torch's random generators of the CPU and of ``device`` seeded with ``seed``, and
    restored afterwards; the generators of other devices are not touched."""
    accelerated = device.type in ("cuda", "mps")
    index = (device.index or 0) if accelerated else None
    with torch.random.fork_rng(devices=[index] if accelerated else [],
                               device_type=device.type if accelerated else "cuda"):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        elif device.type == "mps":
            torch.mps.manual_seed(seed)
        yield
