"""torch.compile for inference: each network compiled once per setting, eager when it fails.

A compiled network runs the same computation as the eager one, to float rounding,
faster at steady state (1.4-1.6x for efficientnet_lite0 at 224 px on a 2-core CPU,
benchmarks/), after a compile of 20-30 s on 2 cores. Whether that pays is judged per
job (:func:`worth_compiling`) and across jobs (:func:`repaid_already`); the compiled
forms live beside the prepared network (:class:`CompiledForms`), never in the
estimator, and are never pickled.
"""

import os
import sys
import threading
import time
import types
import warnings

import torch

#: Steady-state speed of a compiled network over the eager one that compile="auto"
#: assumes. Measured for efficientnet_lite0, 224 px, batch 8 (benchmarks/bench_extract.py):
#: transform 1.40-1.58x on a 2-core AVX-512 EPYC; the network alone 1.59x on a 2-core
#: AVX2 EPYC.
EXPECTED_SPEEDUP = 1.5
#: Seconds a first compile is assumed to take until one is measured in this process:
#: efficientnet_lite0 compiled cold in 22-30 s (AVX-512 EPYC) and 32 s (AVX2 EPYC), 2 cores.
EXPECTED_COMPILE_SECONDS = 30.0
#: The last measured compile time per network setting in this process. torch reuses a
#: compiled graph for another network of the same architecture, so later compiles of a
#: setting take a few seconds: the last one measured is the best guess of the next.
COMPILE_SECONDS = {}
#: On a GPU, compile="auto" compiles when at least this many batches remain.
CUDA_MIN_BATCHES = 400


class CompileWarning(UserWarning):
    """torch.compile failed on a network, which runs eagerly instead (same results)."""


def expected_compile_seconds(setting):
    """How long compiling ``setting`` should take: the last measured time, or the default."""
    return COMPILE_SECONDS.get(setting, EXPECTED_COMPILE_SECONDS)


def worth_compiling(device, *, per_image_seconds, remaining_images, remaining_batches,
                    compile_seconds):
    """Whether compiling now repays itself on the rest of a job (compile="auto").

    On a CPU: when the time the rest of the job saves at :data:`EXPECTED_SPEEDUP` exceeds
    the expected compile time. On a GPU, where compiled kernels gain more and compile
    sooner pays: when at least :data:`CUDA_MIN_BATCHES` batches remain.
    """
    if device.type == "cuda":
        return remaining_batches >= CUDA_MIN_BATCHES
    saved = remaining_images * per_image_seconds * (1 - 1 / EXPECTED_SPEEDUP)
    return saved > compile_seconds


def repaid_already(eager_seconds, compile_seconds):
    """Whether the eager time spent so far would have paid for the compile (ski rental).

    A job split into many short calls (dask partitions, a server's predicts) never
    shows one call that repays a compile; compiling once the time lost to running
    eagerly equals the compile's cost spends at most twice what the best choice, made
    knowing the future, would have.
    """
    return eager_seconds * (1 - 1 / EXPECTED_SPEEDUP) > compile_seconds


def own_code(function):
    """A copy of ``function`` with a code object of its own.

    torch's compiler keeps compiled graphs per code object and stops compiling one
    after ``torch._dynamo.config.recompile_limit`` (8) different graphs. A shared
    function would reach that after 8 fitted networks in a process (each prepared copy
    is a new graph); a code object per compiled form keeps every network's graphs apart.
    """
    return types.FunctionType(function.__code__.replace(), function.__globals__,
                              function.__name__, function.__defaults__, function.__closure__)


class CompiledForms:
    """The compiled forms of one prepared network, made on first use and shared by threads.

    Each form is keyed by what it computes and the input it was compiled for (fixed
    shapes: callers pad short batches). The first call of a key compiles under a lock
    (the compile runs once, other threads wait for it). A compile or a compiled call
    that fails warns once, and the key runs eagerly from then on. Kept beside the
    prepared network, so the estimator is never modified and nothing compiled is pickled.
    """

    def __init__(self):
        self._lock = threading.RLock()  # a failed first call records the fallback under it
        self._forms = {}
        self._failed = set()
        self._eager_lock = threading.Lock()  # not the compile's: eager streams go on meanwhile
        self._eager_seconds = {}

    def has(self, key):
        """Whether ``key`` is compiled (or known not to compile) already."""
        return key in self._forms

    def failed(self, key):
        """Whether ``key`` failed to compile (and runs eagerly)."""
        return key in self._failed

    def add_eager_seconds(self, key, seconds):
        """Add time that ``key`` ran eagerly where it could have run compiled."""
        with self._eager_lock:
            self._eager_seconds[key] = self._eager_seconds.get(key, 0.0) + seconds

    def eager_seconds(self, key):
        """Time that ``key`` has run eagerly where it could have run compiled."""
        return self._eager_seconds.get(key, 0.0)

    def __call__(self, key, function, batch, *, timing_key=None):
        """``function(batch)``, compiled for ``key`` (compiling it on first use).

        ``timing_key``: where :data:`COMPILE_SECONDS` records how long the compile took.
        """
        form = self._forms.get(key)
        if form is None:
            with self._lock:
                if key not in self._forms:
                    began = time.perf_counter()
                    output = self._run(key, function, batch,
                                       torch.compile(own_code(function), fullgraph=True,
                                                     dynamic=False))
                    if timing_key is not None and key not in self._failed:
                        COMPILE_SECONDS[timing_key] = time.perf_counter() - began
                    return output
                form = self._forms[key]
        return self._run(key, function, batch, form)

    def _run(self, key, function, batch, form):
        if form is function:
            return function(batch)
        try:
            output = form(batch)
        except Exception as error:  # noqa: BLE001 - compilers fail in many ways
            output = function(batch)  # a bad input raises here, as it would uncompiled
            with self._lock:
                if key not in self._failed:
                    self._forms[key] = function
                    self._failed.add(key)
                    warnings.warn(_fallback_message(error), CompileWarning,
                                  stacklevel=_caller_outside_package())
            return output
        self._forms.setdefault(key, form)
        return output


def _caller_outside_package():
    """The ``stacklevel`` that points a warning at the user's call: the first frame
    outside sktransfer and scikit-learn (whose wrappers run transform)."""
    import sklearn

    packages = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                     for module in (sys.modules[__package__], sklearn))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(packages):
        frame, level = frame.f_back, level + 1
    return level


def _fallback_message(error):
    reason = (str(error).strip().splitlines() or [""])[0][:300]
    return (f"torch.compile could not compile this network ({type(error).__name__}: "
            f"{reason}); it runs uncompiled, with the same results. Set compile=False to "
            "silence this warning.")
