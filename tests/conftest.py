import os

# scikit-learn's check suite runs its array-API check (numpy namespace) only with this
# set, and scipy reads it once at import: set it before anything imports scipy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest
import torch

from ._helpers import tiny_cnn


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """Every test runs with empty download caches and no way to download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(url, *args, **kwargs):
        from urllib.error import URLError

        raise URLError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("sktransfer._engine.weights.host_reachable", lambda *args, **kwargs: False)


@pytest.fixture
def rgb_images():
    """Six 20x24 RGB uint8 images with smooth content (not noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:24]
    images = []
    for _ in range(6):
        phase = rng.uniform(0, 6, size=3)
        images.append(np.stack([127 + 120 * np.sin(xx / 4 + phase[c] + yy / 7) for c in range(3)], -1))
    return np.asarray(images).round().astype(np.uint8)


@pytest.fixture
def tiny_backbone():
    return tiny_cnn()


@pytest.fixture
def stripes():
    """40 noisy 16x16 RGB images: horizontal stripes are 'h', vertical stripes 'v'."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    X, y = [], []
    for i in range(40):
        horizontal = i % 2 == 0
        period = rng.uniform(3, 6)
        wave = np.sin((yy if horizontal else xx) * 2 * np.pi / period + rng.uniform(0, 6))
        image = 127 + 90 * wave[..., None] + rng.normal(0, 25, (16, 16, 3))
        X.append(np.clip(image, 0, 255))
        y.append("h" if horizontal else "v")
    return np.asarray(X).astype(np.uint8), np.asarray(y)


@pytest.fixture
def image_folder(tmp_path, stripes):
    """horizontal/ and vertical/ class folders of 20 PNG or JPEG images each, and a text
    file that image readers must skip."""
    from PIL import Image

    X, y = stripes
    root = tmp_path / "images"
    for i, (image, label) in enumerate(zip(X, y)):
        folder = root / ("horizontal" if label == "h" else "vertical")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}{'.png' if i % 3 else '.jpg'}")
    (root / "horizontal" / "notes.txt").write_text("not an image, skipped")
    return root
