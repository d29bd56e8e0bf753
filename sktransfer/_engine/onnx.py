"""ONNX Runtime for inference: a network exported once per process, one session for all.

A module is exported with ``torch.onnx.export`` to bytes in memory (the batch axis
dynamic) and run by an ``onnxruntime.InferenceSession``, whose ``run`` is thread-safe:
one session serves every thread. Sessions are kept for the process by what determines
the computation (:func:`fingerprint`, the input shape, the thread count), so a second
estimator of the same network, or the next fold of a search, does not export again.
A module that does not export, or exports into a graph that computes something else,
runs on torch instead, with one :class:`OnnxFallbackWarning`.
"""

import hashlib
import io
import os
import sys
import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch

#: The ONNX operator set of every export (ONNX Runtime 1.17+ runs it).
OPSET = 17
#: Sessions kept for the process, the least recently used dropped first; an estimator
#: keeps its own alive as long as it lives.
MAX_SESSIONS = 8
#: An exported graph must give the module's output to this (max abs. difference over
#: max abs. value) on a test batch, or the module runs on torch.
TOLERANCE = 1e-3

_SESSIONS = OrderedDict()  # key -> OnnxNetwork, or None for a module that fell back
_LOCK = threading.Lock()


class OnnxFallbackWarning(UserWarning):
    """A network could not run in ONNX Runtime and runs on torch instead (same results)."""


class OnnxNetwork:
    """An ONNX Runtime session of one exported module: ``network(array) -> array``."""

    def __init__(self, model_bytes, threads):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: no notes on stderr
        # Its threads spin within a run, not after: torch prepares the next batch on
        # the same cores (spinning on took half the speed at 64 px, batch 8).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = onnxruntime.InferenceSession(model_bytes, options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, array):
        """The module's output for a float32 batch, as an array."""
        return self.session.run(None, {self.input_name: array})[0]


def export_bytes(module, example, *, input_names=("input",), output_names=("output",)):
    """``module`` as ONNX bytes for inputs shaped as ``example`` but for the batch size.

    The TorchScript exporter (``dynamo=False``): it takes the fx-folded blocks as they
    are, in about a second for a mobile network. Its deprecation notes are not shown.
    The modules' training modes are left as they are (they may be shared): the
    caller puts ``module`` in eval mode.
    """
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    stream = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), stream, dynamo=False, opset_version=OPSET,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic, training=torch.onnx.TrainingMode.PRESERVE)
    return stream.getvalue()


def fingerprint(module):
    """A digest of what determines ``module``'s computation: its structure and settings
    (repr, class of every submodule, an fx graph's code) and its parameters and buffers."""
    digest = hashlib.sha256(repr(module).encode())
    for sub in module.modules():
        kind = type(sub)
        digest.update(f"{kind.__module__}.{kind.__qualname__}".encode())
        digest.update(str(getattr(sub, "code", "")).encode())  # fx.GraphModule
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def onnx_network(module, input_shape, key):
    """The ONNX Runtime network of ``module`` for inputs ``(n, *input_shape)``, or None.

    ``key`` identifies the computation (with :func:`fingerprint`); the session is
    exported on first use and kept for the process. None (and one warning per key)
    when the module does not export or its graph does not give its output: the
    caller runs the module on torch.
    """
    key = (key, tuple(input_shape), torch.get_num_threads())
    with _LOCK:  # one export per key, also when threads ask at once
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
        network = _export_checked(module, input_shape)
        _SESSIONS[key] = network
        if len(_SESSIONS) > MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
        return network


def _export_checked(module, input_shape):
    generator = torch.Generator().manual_seed(0)
    traced = torch.randn(2, *input_shape, generator=generator)
    test = torch.randn(3, *input_shape, generator=generator)  # another batch size
    try:
        network = OnnxNetwork(export_bytes(module, traced), torch.get_num_threads())
        with torch.inference_mode():
            expected = module(test).float().numpy()
        got = network(test.numpy())
        error = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12)
        if not error <= TOLERANCE:
            raise ValueError(f"its ONNX graph differs from it by {error:.1e} (relative)")
    except Exception as error:  # noqa: BLE001 - exporters and runtimes fail in many ways
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        warnings.warn(
            f"This network cannot run in ONNX Runtime ({type(error).__name__}: {reason}); "
            "it runs on torch, with the same results. Set backend='torch' to silence this "
            "warning.", OnnxFallbackWarning, stacklevel=_caller_outside_package())
        return None
    return network


def _caller_outside_package():
    """The ``stacklevel`` that points a warning at the user's call: the first frame
    outside sktransfer and scikit-learn (whose wrappers run transform)."""
    import sklearn

    packages = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                     for module in (sys.modules[__package__.split(".")[0]], sklearn))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(packages):
        frame, level = frame.f_back, level + 1
    return level
