"""Every accepted image form reads to the same pixels; bad input gets a clear error."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sktransfer import read_images
from sktransfer._engine.preprocessing import Preprocessing

SAME_SIZE = Preprocessing(input_size=(20, 24))


def prepared(X, **kwargs):
    images = read_images(X, **kwargs)
    return torch.cat([batch for _, batch in images.batches(4, SAME_SIZE)]).numpy()


def write_images(images, folder, suffix=".png", mode=None):
    paths = []
    for i, image in enumerate(images):
        path = folder / f"img{i}{suffix}"
        pil = Image.fromarray(image)
        (pil.convert(mode) if mode else pil).save(path)
        paths.append(str(path))
    return paths


def test_every_input_form_gives_the_same_pixels(rgb_images, tmp_path):
    expected = rgb_images.transpose(0, 3, 1, 2) / 255.0
    paths = write_images(rgb_images, tmp_path)
    forms = {
        "uint8 NHWC": rgb_images,
        "float NHWC": rgb_images / 255.0,
        "float32 NCHW": (rgb_images / 255.0).astype(np.float32).transpose(0, 3, 1, 2),
        "list of PIL": [Image.fromarray(im) for im in rgb_images],
        "list of arrays": list(rgb_images),
        "list of paths": paths,
        "array of paths": np.asarray(paths),
        "Series of paths": pd.Series(paths),
        "flattened rows": rgb_images.reshape(len(rgb_images), -1),
    }
    for name, X in forms.items():
        shape = (20, 24, 3) if name == "flattened rows" else None
        np.testing.assert_allclose(prepared(X, image_shape=shape), expected, atol=1e-6, err_msg=name)


def test_grayscale_is_replicated_to_three_channels(rgb_images):
    gray = rgb_images[..., 0]
    for X in (gray, gray[..., None], gray[:, None], [Image.fromarray(g) for g in gray]):
        out = prepared(X)
        assert out.shape == (6, 3, 20, 24)
        np.testing.assert_allclose(out[:, 0], gray / 255.0, atol=1e-6)
        np.testing.assert_array_equal(out[:, 0], out[:, 2])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_pil_modes_from_files(rgb_images, tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    paths = write_images(rgb_images, tmp_path, suffix=suffix, mode=mode)
    out = prepared(paths)
    assert out.shape == (6, 3, 20, 24)
    reference = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_allclose(out, reference.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)


def test_alpha_is_dropped(rgb_images):
    rgba = np.concatenate([rgb_images, np.zeros_like(rgb_images[..., :1])], axis=-1)
    np.testing.assert_array_equal(prepared(rgba), prepared(rgb_images))


def test_images_of_different_sizes_are_resized_one_by_one(rgb_images):
    mixed = [rgb_images[0], rgb_images[1][:10, :12], np.kron(rgb_images[2], np.ones((2, 2, 1), np.uint8))]
    out = prepared(mixed)
    assert out.shape == (3, 3, 20, 24)
    np.testing.assert_allclose(out[0], rgb_images[0].transpose(2, 0, 1) / 255.0, atol=1e-6)
    # 2x upsampling, then an antialiased 2x downsample, gives the image back, slightly blurred.
    error = np.abs(out[2] - rgb_images[2].transpose(2, 0, 1) / 255.0)
    assert error.mean() < 0.01 and error.max() < 0.05


@pytest.mark.parametrize(
    "n_pixels, expected",
    [(64, (8, 8, 1)), (3 * 16, (4, 4, 3)), (10, (1, 10, 1))],
)
def test_row_shape_is_inferred(n_pixels, expected):
    images = read_images(np.zeros((2, n_pixels)))
    assert tuple(images.load(slice(0, 1)).shape) == (1, expected[2], expected[0], expected[1])


def test_decoding_is_lazy(rgb_images, tmp_path, monkeypatch):
    import sktransfer._engine.images as images_module

    decoded = []
    original = images_module.decode_item
    monkeypatch.setattr(images_module, "decode_item",
                        lambda item, i: decoded.append(i) or original(item, i))
    images = read_images(write_images(rgb_images, tmp_path))
    assert decoded == []
    batches = images.batches(2, SAME_SIZE)
    first_start, _ = next(batches)
    # The first batch, and at most the next one decoding ahead in the background.
    assert first_start == 0 and decoded[:2] == [0, 1] and set(decoded) <= {0, 1, 2, 3}
    assert [start for start, _ in batches] == [2, 4] and sorted(decoded) == list(range(6))


def test_item_keys_follow_content(rgb_images, tmp_path):
    import os

    keys = read_images(rgb_images).item_keys()
    assert len(set(keys)) == 6 and read_images(rgb_images.copy()).item_keys() == keys
    assert read_images(rgb_images[[2, 0]]).item_keys() == [keys[2], keys[0]]
    assert read_images(list(rgb_images)).item_keys() != keys  # a list item is keyed by content too
    changed = rgb_images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert read_images(changed).item_keys()[1:] == keys[1:]
    assert read_images(changed).item_keys()[0] != keys[0]
    paths = write_images(rgb_images, tmp_path)
    before = read_images(paths).item_keys()
    os.utime(paths[0], ns=(0, 10**9))
    after = read_images(paths).item_keys()
    assert after[0] != before[0] and after[1:] == before[1:]


