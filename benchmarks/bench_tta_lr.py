"""Test-time augmentation and lr="auto": what they cost, against the plain calls.

1. predict_proba with tta="flip" (and tta=4) against plain predict_proba of the same
   fitted FineTuneClassifier (efficientnet_lite0, freeze=6). Goal for "flip": <= 2.2x.
2. fit with lr="auto" (the range test, up to 100 mini-batches, then training) against
   fit at a fixed rate, same epochs (no early stopping): the overhead of the test.

Alternating in one process, median of 3 rounds.

    python benchmarks/bench_tta_lr.py [--image-size 64] [--n-images 600]
"""

import argparse
import copy

from _common import machine, print_table, race
from sktransfer import FineTuneClassifier
from sktransfer.datasets import load_digits_images


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=600)
    args = parser.parse_args()
    print(machine())
    X, y = load_digits_images()
    X, y = X[:args.n_images], y[:args.n_images]
    settings = dict(freeze=6, image_size=args.image_size, max_epochs=3, early_stopping=False,
                    device="cpu", random_state=0, progress=False)
    model = FineTuneClassifier(**settings).fit(X[:300], y[:300])
    # The same fitted network, another tta.
    flip, four = (copy.deepcopy(model).set_params(tta=tta) for tta in ("flip", 4))
    times = race({"plain": lambda: model.predict_proba(X), "flip": lambda: flip.predict_proba(X),
                  "4 views": lambda: four.predict_proba(X)})
    print_table(f"tta: predict_proba of {len(X)} digits at {args.image_size} px, "
                "efficientnet_lite0 freeze=6",
                [{"predict": name, "seconds": f"{t:.2f}",
                  "x plain": f"{t / times['plain']:.2f}x"} for name, t in times.items()],
                ["predict", "seconds", "x plain"])

    fits = race({"lr=1e-3": lambda: FineTuneClassifier(**settings).fit(X, y),
                 "lr='auto'": lambda: FineTuneClassifier(**settings, lr="auto").fit(X, y)},
                warmup=False)
    found = FineTuneClassifier(**settings, lr="auto").fit(X, y)
    print_table(f"lr='auto': fit on {len(X)} digits, {settings['max_epochs']} epochs, "
                f"found lr {found.lr_:.2g} in {len(found.lr_finder_.lrs)} steps",
                [{"fit": name, "seconds": f"{t:.1f}",
                  "overhead": f"{t / fits['lr=1e-3'] - 1:+.0%}"} for name, t in fits.items()],
                ["fit", "seconds", "overhead"])


if __name__ == "__main__":
    main()
