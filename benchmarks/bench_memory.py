"""Extra peak memory of CNNFeatureExtractor.transform on 2,000 images of 224 px.

Peak resident memory is read from /proc (VmHWM, reset through clear_refs) around the
transform alone. Goal: input + output + a few batches; never a float copy of the input.

    python benchmarks/bench_memory.py
"""

import numpy as np

from _common import machine, print_table
from sktransfer import CNNFeatureExtractor

N_IMAGES = 2000


def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main():
    print(machine())
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 224, 224, 3), dtype=np.uint8)
    extractor = CNNFeatureExtractor(device="cpu", progress=False).fit(images[:1])
    extractor.transform(images[:16])  # warm up: allocator pools, oneDNN primitives
    before = rss_mb()
    reset_peak()
    features = extractor.transform(images)
    extra = peak_rss_mb() - before
    input_mb, output_mb = images.nbytes / 2**20, features.nbytes / 2**20
    float_copy_mb = images.size * 4 / 2**20
    print_table(
        f"memory: transform of {N_IMAGES} uint8 images, 224 px, efficientnet_lite0",
        [{"input MB": f"{input_mb:.0f}", "output MB": f"{output_mb:.1f}",
          "extra peak MB during transform": f"{extra:.0f}",
          "a float32 copy of the input would be MB": f"{float_copy_mb:.0f}",
          "bounded (extra < output + 500 MB)": extra < output_mb + 500}],
        ["input MB", "output MB", "extra peak MB during transform",
         "a float32 copy of the input would be MB", "bounded (extra < output + 500 MB)"])


if __name__ == "__main__":
    main()
