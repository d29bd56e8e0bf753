"""CNNFeatureExtractor.transform against a minimal hand-written PyTorch loop.

Both run the same network on the same 224 px uint8 images with the same batch size and
threads; the plain loop is what one writes by hand: model.eval(), inference_mode, fp32,
NCHW. Prints throughput ratios (median of alternating rounds), the features' agreement,
and bf16's effect on a linear probe's accuracy.

    python benchmarks/bench_extract.py
"""

import copy

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
                  for size in (4, 8, 16, 32, 64, "auto")}
    times = race({size: (lambda e=e: e.transform(images)) for size, e in extractors.items()},
                 rounds=2)
    measured = next(iter(inference.MEASURED_BATCH_SIZES.values()), None)
    best = min(t for size, t in times.items() if size != "auto")
    return [{"batch_size": f"auto (measured: {measured})" if size == "auto" else size,
             "img/s": f"{len(images) / t:.1f}", "x best fixed": f"{best / t:.2f}x"}
            for size, t in times.items()]


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


def main():
    print(machine())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_IMAGES, 224, 224, 3), dtype=np.uint8)
    rows = [bench_backbone(name, images) for name in ("efficientnet_lite0", "resnet18")]
    print_table(f"extract: {N_IMAGES} uint8 images, 224 px, batch {BATCH}, median of 3 alternating rounds",
                rows, list(rows[0]))
    print_table("batch size (efficientnet_lite0, 224 px): fixed, and auto as measured here",
                batch_size_sweep(images), ["batch_size", "img/s", "x best fixed"])
    print_table("bf16 and a linear probe", probe_accuracy(),
                ["precision", "linear probe accuracy (600 digits, 3-fold)"])


if __name__ == "__main__":
    main()
