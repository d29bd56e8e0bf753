"""A folder of natural-photo crops to compare on, offline: three scikit-image photos.

Writes ``OUT/<class>/<n>.png``: random crops (15-40% of the photo's shorter side,
anywhere in it, mirrored half of the time, brightness jittered) of scikit-image's cat
(``chelsea``), ``coffee`` and ``astronaut``, resized to ``--size`` pixels. A class
folder layout, as ``sktransfer compare OUT --quick`` reads it.

    python examples/make_photo_crops.py photos [--per-class 100] [--size 64]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = {"cat": data.chelsea, "coffee": data.coffee, "astronaut": data.astronaut}


def write_crops(out, per_class=100, size=64, seed=0):
    """Write the crops; returns the number of files written."""
    rng = np.random.default_rng(seed)
    count = 0
    for name, load in PHOTOS.items():
        photo = load()
        height, width = photo.shape[:2]
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            side = int(rng.uniform(0.15, 0.4) * min(height, width))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = photo[top:top + side, left:left + side].astype(np.float32)
            crop = np.clip(crop * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
            image = Image.fromarray(crop).resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            image.save(folder / f"{index:03d}.png")
            count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(f"wrote {write_crops(args.out, args.per_class, args.size)} images to {args.out}")


if __name__ == "__main__":
    main()
