"""Where the network runs: device resolution and errors a user can act on."""

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


def autocast(device, precision):
    """Mixed precision for ``precision`` in {"fp32", "bf16", "fp16"} on ``device``.

    "fp32" runs in full precision. "bf16" is fast on CPUs with AVX-512 bf16 / AMX and on
    recent GPUs; "fp16" is for CUDA only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {sorted(PRECISIONS)}.")
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            "precision='fp16' needs a CUDA device; on the CPU use precision='bf16'."
        )
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@contextmanager
def network_errors(*, input_size, batch_size):
    """Turn torch's failures on an image batch into errors that name the fix."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise MemoryError(
            f"Out of memory on a batch of {batch_size} images of {input_size}. "
            "Use a smaller batch_size or image_size."
        ) from None
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise ValueError(
            f"The backbone cannot process images of size {input_size[0]}x{input_size[1]}: "
            f"{message}. Use a larger image_size, or a backbone suited to these images."
        ) from None
