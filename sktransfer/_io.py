"""Writing files so that a crash never leaves half of one, and reading them back.

The lowest layer of the package: it imports nothing of sktransfer.
"""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

FORMAT = "sktransfer-model"
VERSION = 1


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash mid-write leaves the old file (or none), never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_tensors(path, tensors, description):
    """Atomically write ``tensors`` and a JSON ``description`` as one safetensors file."""
    from safetensors.torch import save_file

    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "sktransfer": json.dumps(description)}
    with atomic_path(path) as temporary:
        save_file(plain, temporary, metadata=metadata)


def read_tensors(path):
    """Tensors and JSON description of a file written by :func:`write_tensors`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: '{path}'.")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"'{path}' is not a safetensors file ({error}).") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"'{path}' is a safetensors file but not an sktransfer model "
                         "(no sktransfer metadata); was it written by sktransfer.save?")
    return tensors, json.loads(metadata["sktransfer"])
