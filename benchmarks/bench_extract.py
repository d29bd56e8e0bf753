"""CNNFeatureExtractor.transform against a minimal hand-written PyTorch loop.

Both run the same network on the same 224 px uint8 images with the same batch size and
threads; the plain loop is what one writes by hand: model.eval(), inference_mode, fp32,
NCHW. Prints throughput ratios (median of alternating rounds), the features' agreement,
bf16's effect on a linear probe's accuracy, the measured "auto" batch size against
fixed ones, and compile=True against eager: steady-state speed with glibc's allocator
as a process starts and tuned (sktransfer.tune_allocator), the compile's time with a cold
and a warm compile cache (each in a fresh process) and with the architecture already
compiled in the process, and the break-even number of images.

    python benchmarks/bench_extract.py [extract] [batch] [compile] [bf16]
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _common import machine, print_table, race
from sktransfer import CNNFeatureExtractor

N_IMAGES = 128
BATCH = 8  # CNNFeatureExtractor's "auto" batch at 224 px; both contenders use it


def plain_loop(blocks, images, mean, std):
    """The hand-written baseline: fp32, NCHW (as ToTensor and stack give), one batch at a time."""
    blocks.eval()
    out = []
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            x = torch.from_numpy(images[start:start + BATCH]).permute(0, 3, 1, 2).contiguous()
            x = x.float() / 255
            out.append(blocks((x - mean) / std).mean((2, 3)))
    return torch.cat(out).numpy()


def bench_backbone(backbone, images):
    weights = "imagenet" if backbone == "efficientnet_lite0" else None
    default = CNNFeatureExtractor(backbone, weights=weights, device="cpu", progress=False
                                  ).fit(images[:1])
    bf16 = CNNFeatureExtractor(backbone, weights=weights, device="cpu", progress=False,
                               precision="bf16").fit(images[:1])
    plain_blocks = copy.deepcopy(default.backbone_.blocks)
    pre = default.preprocessing_
    reference = plain_loop(plain_blocks, images, pre.mean, pre.std)
    ours = default.transform(images)
    ours_bf16 = bf16.transform(images)
    fp32_error = float(np.abs(ours - reference).max() / np.abs(reference).max())
    bf16_error = float(np.abs(ours_bf16 - reference).max() / np.abs(reference).max())
    times = race({
        "plain loop": lambda: plain_loop(plain_blocks, images, pre.mean, pre.std),
        "sktransfer": lambda: default.transform(images),
        "sktransfer bf16": lambda: bf16.transform(images),
    })
    speed = {name: N_IMAGES / seconds for name, seconds in times.items()}
    return {
        "backbone": backbone,
        "plain img/s": f"{speed['plain loop']:.1f}",
        "sktransfer img/s": f"{speed['sktransfer']:.1f}",
        "ratio (goal >= 1.5)": f"{speed['sktransfer'] / speed['plain loop']:.2f}x",
        "fp32 max rel. diff (goal <= 1e-5)": f"{fp32_error:.1e}",
        "bf16 img/s (fp32 without native bf16)": f"{speed['sktransfer bf16']:.1f}",
        "bf16 ratio (goal >= 3)": f"{speed['sktransfer bf16'] / speed['plain loop']:.2f}x",
        "bf16 max rel. diff": f"{bf16_error:.1e}",
    }


def batch_size_sweep(images):
    """Fixed sizes against "auto", measured: the race's warm-up call measures (the
    threshold is lowered so that these few images measure; a real job needs 400
    batches), the timed calls reuse the winner."""
    import sktransfer._inference as inference

    inference.MEASURE_MIN_BATCHES = len(images) // inference.inference_batch_size(
        "auto", (224, 224))
    extractors = {size: CNNFeatureExtractor(device="cpu", progress=False, batch_size=size).fit(images[:1])
                  for size in (4, 8, 16, 32, "auto")}  # 64 ran at half the best (README)
    times = race({size: (lambda e=e: e.transform(images)) for size, e in extractors.items()},
                 rounds=5)
    measured = next(iter(inference.MEASURED_BATCH_SIZES.values()), None)
    best = min(t for size, t in times.items() if size != "auto")
    return [{"batch_size": f"auto (measured: {measured})" if size == "auto" else size,
             "img/s": f"{len(images) / t:.1f}", "x best fixed": f"{best / t:.2f}x"}
            for size, t in times.items()]


#: Run in a fresh process: the seconds of a first compiled transform of one batch (the
#: compile) less an eager one, with the compile cache in TORCHINDUCTOR_CACHE_DIR.
FIRST_COMPILE = """
import json, time, numpy as np
from sktransfer import CNNFeatureExtractor
images = np.random.default_rng(1).integers(0, 256, ({batch}, 224, 224, 3), dtype=np.uint8)
eager = CNNFeatureExtractor(device="cpu", progress=False, batch_size={batch}).fit(images)
eager.transform(images)
began = time.perf_counter(); eager.transform(images); eager_seconds = time.perf_counter() - began
compiled = CNNFeatureExtractor(device="cpu", progress=False, batch_size={batch}, compile=True)
compiled.fit(images)
began = time.perf_counter(); compiled.transform(images); first = time.perf_counter() - began
print(json.dumps(first - eager_seconds))
"""

#: Run in a fresh process, with glibc's allocator as it starts or tuned: eager against
#: compiled, alternating (median of 5 rounds), and the compile of a second network of
#: the same architecture (less one compiled batch).
STEADY_STATE = """
import json, sys, time, numpy as np
sys.path.insert(0, {here!r})
from _common import race
from sktransfer import CNNFeatureExtractor, tune_allocator
if {tuned}:
    assert tune_allocator()
images = np.random.default_rng(0).integers(0, 256, ({n}, 224, 224, 3), dtype=np.uint8)
def extractor(**params):
    return CNNFeatureExtractor(device="cpu", progress=False, batch_size={batch}, **params
                               ).fit(images[:1])
eager, compiled = extractor(), extractor(compile=True)
compiled.transform(images[:{batch}])  # compiles
times = race({{"eager": lambda: eager.transform(images),
               "compiled": lambda: compiled.transform(images)}}, rounds=5)
reference = eager.transform(images)
agreement = float(np.abs(compiled.transform(images) - reference).max() / np.abs(reference).max())
again = extractor(compile=True)
began = time.perf_counter(); again.transform(images[:{batch}]); again = time.perf_counter() - began
per_image = {{name: seconds / {n} for name, seconds in times.items()}}
print(json.dumps({{**per_image, "agreement": agreement,
                  "same architecture": again - per_image["compiled"] * {batch}}}))
"""


def in_fresh_process(script, **env):
    out = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, **env),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compile_rows(n_images):
    """compile=True against eager (efficientnet_lite0, 224 px, batch 8), each allocator
    state in a fresh process; compile times cold and warm in fresh processes too."""
    with tempfile.TemporaryDirectory() as cache_dir:
        first = FIRST_COMPILE.format(batch=BATCH)
        cold = in_fresh_process(first, TORCHINDUCTOR_CACHE_DIR=cache_dir)
        warm = in_fresh_process(first, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    here = os.path.dirname(os.path.abspath(__file__))
    states = {state: in_fresh_process(STEADY_STATE.format(here=here, tuned=tuned, n=n_images,
                                                          batch=BATCH))
              for state, tuned in (("glibc default", False), ("tune_allocator()", True))}
    rows = []
    for state, result in states.items():
        eager, compiled = result["eager"], result["compiled"]
        saved = eager - compiled

        def break_even(seconds):
            return f"{seconds / saved:,.0f}" if saved > 0 else "never"

        rows.append({
            "allocator": state, "eager img/s": f"{1 / eager:.1f}",
            "compiled img/s": f"{1 / compiled:.1f}",
            "compiled / eager (goal >= 1.4)": f"{eager / compiled:.2f}x",
            "max rel. diff": f"{result['agreement']:.1e}",
            "compile s: cold, warm, same arch. (break-even images)":
                f"{cold:.1f}, {warm:.1f}, {result['same architecture']:.1f} "
                f"({break_even(cold)}, {break_even(warm)}, "
                f"{break_even(result['same architecture'])})"})
    tuned, default = (states[s]["eager"] for s in ("tune_allocator()", "glibc default"))
    rows.append({"allocator": "eager: tuned / default", "eager img/s": f"{default / tuned:.2f}x"})
    return rows


def probe_accuracy():
    from sktransfer._device import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return [{"precision": "bf16", "linear probe accuracy (600 digits, 3-fold)":
                 "skipped: no native bf16 on this CPU (bf16 runs as fp32 here)"}]
    digits = load_digits()
    X, y = digits.data[:600] / 16.0, digits.target[:600]
    rows = []
    for precision in ("fp32", "bf16"):
        features = CNNFeatureExtractor(image_size=64, image_shape=(8, 8), precision=precision,
                                       device="cpu", progress=False).fit_transform(X)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        score = cross_val_score(probe, features, y, cv=3).mean()
        rows.append({"precision": precision, "linear probe accuracy (600 digits, 3-fold)": f"{score:.4f}"})
    return rows


def main(sections):
    from sktransfer import tune_allocator

    # as sktransfer's commands run; without it, glibc raises its thresholds itself after
    # the first large free, so a contender's speed would depend on what ran before it
    print(machine(), "; allocator tuned:", tune_allocator())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 224, 224, 3), dtype=np.uint8)
    if "extract" in sections:
        rows = [bench_backbone(name, images) for name in ("efficientnet_lite0", "resnet18")]
        print_table(f"extract: {N_IMAGES} uint8 images, 224 px, batch {BATCH}, median of 3 "
                    "alternating rounds", rows, list(rows[0]))
    if "batch" in sections:
        print_table("batch size (efficientnet_lite0, 224 px): fixed, and auto as measured here "
                    "(median of 5 alternating rounds)",
                    batch_size_sweep(images), ["batch_size", "img/s", "x best fixed"])
    if "compile" in sections:
        rows = compile_rows(N_IMAGES)
        print_table("compile=True against eager (efficientnet_lite0, 224 px, batch 8, "
                    f"{N_IMAGES} images, median of 5 alternating rounds; each allocator "
                    "state in a fresh process)", rows, list(rows[0]))
    if "bf16" in sections:
        print_table("bf16 and a linear probe", probe_accuracy(),
                    ["precision", "linear probe accuracy (600 digits, 3-fold)"])


if __name__ == "__main__":
    SECTIONS = ("extract", "batch", "compile", "bf16")
    main(sys.argv[1:] or SECTIONS)  # e.g. python benchmarks/bench_extract.py compile
