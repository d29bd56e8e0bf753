"""Writing files so that a crash never leaves half of one, and reading them back.

The lowest layer of the package: it imports nothing of sktransfer.
"""

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

FORMAT = "sktransfer-model"
VERSION = 1

#: How files other than sktransfer's safe format begin: pickles and joblib's compressors.
PICKLE_MAGIC = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18")


def file_kind(path):
    """``"safetensors"``, ``"pickle"`` (or joblib-compressed pickle), or ``None``: from
    the first bytes, without reading the rest."""
    with open(path, "rb") as file:
        head = file.read(9)
    header_length = int.from_bytes(head[:8], "little")  # safetensors: length, then JSON
    if len(head) == 9 and 0 < header_length <= os.path.getsize(path) - 8 and head[8:] == b"{":
        return "safetensors"
    return "pickle" if head.startswith(PICKLE_MAGIC) else None


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash mid-write leaves the old file (or none), never a partial one. The file gets
    the permissions ``open`` gives a new file (0666 less the umask), whatever mode the
    writer used (safetensors and mkstemp use 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = os.fstat(descriptor).st_mode  # as the umask made it
    os.close(descriptor)
    try:
        yield temporary
        os.chmod(temporary, mode)
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
    if file_kind(path) == "pickle":
        raise ValueError(
            f"'{path}' is a pickle (joblib) file, not sktransfer's safe format; nothing was "
            "loaded. Loading a pickle runs code stored in it: if you trust its source, use "
            "joblib.load. Save models with sktransfer.save to get files that load safely.")
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
