"""CNNFeatureExtractor.transform against a hand-written ONNX Runtime loop and torch eager.

The same network (efficientnet_lite0 cut at its top block, avg-pooled, fp32), the same
uint8 images (n, H, W, 3) in, the same features out, preprocessing included in every
contender; alternating in one process, median of 5 rounds after a warm-up. Then what
the default pays once (the export and its session) and its break-even in images, the
batch size around the default, and glibc's allocator thresholds raised (what the
retired ``tune_allocator`` did) in fresh processes.

    python benchmarks/bench_extract.py
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime
import torch

from _common import machine, print_table, race
from sktransfer import CNNFeatureExtractor
from sktransfer._engine.inference import EXPORT_FROM_VALUES, inference_batch_size

#: (image size, images per run, batch size: None for the default rule's); every run
#: large enough for backend="auto" to export (EXPORT_FROM_VALUES)
CASES = [(224, 128, None), (64, 1024, 8), (48, 2048, None)]


def hand_written_loop(blocks, size, mean, std, batch_size):
    """What one writes by hand: export, one session, numpy normalisation, run per batch."""
    import io

    model = torch.nn.Sequential(blocks, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    stream = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 3, size, size), stream, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    session = onnxruntime.InferenceSession(stream.getvalue(), providers=["CPUExecutionProvider"])
    mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

    def run(images):
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255
            out.append(session.run(None, {"x": (x - mean) / std})[0])
        return np.concatenate(out)

    return run


def contenders_at(size, n_images, batch):
    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size, 3), np.uint8)
    batch = batch or inference_batch_size("auto", (size, size))
    common = dict(image_size=size, device="cpu", progress=False, batch_size=batch)
    default = CNNFeatureExtractor(**common).fit(images[:1])
    assert images.size >= EXPORT_FROM_VALUES, "a job too small for the default to export"
    began = time.perf_counter()
    default.transform(images)  # exports (and makes the session) once
    first = time.perf_counter() - began
    eager = CNNFeatureExtractor(backend="torch", **common).fit(images[:1])
    pre = default.preprocessing_
    loop = hand_written_loop(default.backbone_.blocks, size, pre.mean, pre.std, batch)
    expected = eager.transform(images)
    for name, got in (("default", default.transform(images)), ("loop", loop(images))):
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error < 1e-4, f"{name} features differ from eager by {error:.1e}"
    return images, default, eager, loop, first, batch


def speed_rows():
    rows, sweeps = [], []
    for size, n, fixed in CASES:
        images, default, eager, loop, first, batch = contenders_at(size, n, fixed)
        sizes = [] if fixed else sorted({max(1, batch // 2), 2 * batch, 4 * batch})
        others = {b: CNNFeatureExtractor(image_size=size, device="cpu", progress=False,
                                         batch_size=b).fit(images[:1]) for b in sizes}
        times = race({"default": lambda: default.transform(images), "loop": lambda: loop(images),
                      "eager": lambda: eager.transform(images),
                      **{b: (lambda e=e: e.transform(images)) for b, e in others.items()}},
                     rounds=5)
        assert default._inference.networks, "the default ran in torch, not ONNX Runtime"
        per_image = {name: seconds / n for name, seconds in times.items()}
        export = first - n * per_image["default"]
        saved = per_image["eager"] - per_image["default"]
        rows.append({
            "image size (batch)": f"{size} px ({batch}{'' if fixed else ', default'})", "images": n,
            "default img/s": f"{1 / per_image['default']:.1f}",
            "default / ORT loop (goal >= 0.9)": f"{times['loop'] / times['default']:.2f}x",
            "default / eager": f"{times['eager'] / times['default']:.2f}x",
            "export + session s (break-even images)": f"{export:.1f} ({export / saved:.0f})"})
        if sizes:
            sweeps.append({"image size": f"{size} px", "default batch": batch,
                           **{f"batch {b}": f"{times['default'] / times[b]:.2f}x"
                              for b in sizes}})
    return rows, sweeps


#: In a fresh process: the default transform's seconds per image at 224 px (best of 5).
FRESH = """
import json, time, numpy as np
from sktransfer import CNNFeatureExtractor
images = np.random.default_rng(0).integers(0, 256, (96, 224, 224, 3), np.uint8)
extractor = CNNFeatureExtractor(device="cpu", progress=False).fit(images[:1])
extractor.transform(images)  # large enough to export
assert extractor._inference.networks
times = []
for _ in range(5):
    began = time.perf_counter(); extractor.transform(images)
    times.append(time.perf_counter() - began)
print(json.dumps(min(times) / len(images)))
"""
RAISED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}


def allocator_row(pairs=2):
    def fresh(env):
        out = subprocess.run([sys.executable, "-c", FRESH], env=dict(os.environ, **env),
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    glibc, raised = [], []
    for _ in range(pairs):  # alternating fresh processes
        glibc.append(fresh({}))
        raised.append(fresh(RAISED))
    return {"workload": "default transform, 224 px, fresh process",
            "thresholds raised / glibc's (goal to keep it: >= 1.1)":
                f"{np.median(glibc) / np.median(raised):.2f}x"}


if __name__ == "__main__":
    print(machine(), f"; onnxruntime {onnxruntime.__version__}")
    rows, sweeps = speed_rows()
    print_table("transform, efficientnet_lite0, uint8 images in, features out (median of 5 "
                "alternating rounds)", rows, list(rows[0]))
    print_table("batch size against the default (speed of the default transform with it)",
                sweeps, list(dict.fromkeys(k for row in sweeps for k in row)))
    row = allocator_row()
    print_table("glibc allocator thresholds raised (MALLOC_MMAP_THRESHOLD_, "
                "MALLOC_TRIM_THRESHOLD_)", [row], list(row))
