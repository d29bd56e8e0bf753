"""Feature extraction from JPEG files on disk against the same images as an array.

Files are decoded one batch ahead in a background thread while the network runs.
Goal: paths at >= 0.8x the array speed.

    python benchmarks/bench_paths.py
"""

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine, print_table, race
from sktransfer import CNNFeatureExtractor

N_IMAGES = 128


def photo_crops(folder):
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    paths = []
    for i in range(N_IMAGES):
        photo = photos[i % len(photos)]
        side = rng.integers(200, 400)
        top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((256, 256))
        paths.append(str(Path(folder) / f"{i:03d}.jpg"))
        crop.save(paths[-1], quality=90)
    return paths


def main():
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        paths = photo_crops(folder)
        arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        extractor = CNNFeatureExtractor(device="cpu", progress=False).fit(arrays[:1])
        np.testing.assert_allclose(extractor.transform(paths[:8]), extractor.transform(arrays[:8]),
                                   rtol=1e-4, atol=1e-5)
        times = race({"array": lambda: extractor.transform(arrays),
                      "paths": lambda: extractor.transform(paths)})
    print_table(
        f"paths: {N_IMAGES} JPEGs of 256 px resized to 224, efficientnet_lite0, median of 3",
        [{"input": name, "img/s": f"{N_IMAGES / t:.1f}",
          "ratio to array (goal >= 0.8)": f"{times['array'] / t:.2f}x"} for name, t in times.items()],
        ["input", "img/s", "ratio to array (goal >= 0.8)"])


if __name__ == "__main__":
    main()
