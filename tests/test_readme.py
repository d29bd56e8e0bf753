"""The README's Python snippets run as written, in order, on a tiny folder of images."""

import pathlib
import re

import numpy as np
import pytest

import sktransfer

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_its_three_snippets():
    code = snippets()
    assert len(code) == 3
    assert "load_image_folder" in code[0] and "sktransfer.load" in code[1]
    assert "FineTuneClassifierCV" in code[2]


@pytest.mark.slow
def test_the_readme_snippets_run_as_written(tmp_path, monkeypatch, stripes):
    from PIL import Image

    X, y = stripes  # 40 images of 16 px: 'h' and 'v' stripes
    for i, (image, label) in enumerate(zip(X[:12], y[:12])):
        folder = tmp_path / "my_images" / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for code in snippets():
        exec(compile(code, str(README), "exec"), namespace)
    X = namespace["X"]
    assert len(X) == 12 and set(namespace["model"].predict(X)) <= {"h", "v"}
    np.testing.assert_allclose(namespace["model"].predict_proba(X).sum(axis=1), 1, atol=1e-5)
    finetuned = sktransfer.load(tmp_path / "finetuned.safetensors")
    np.testing.assert_array_equal(finetuned.predict(X), namespace["search"].predict(X))
