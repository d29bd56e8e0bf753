"""Data loading messages that name the fix, and CSV lists of images to predict on."""

import numpy as np
import pytest
from PIL import Image

from sktransfer.cli import main
from sktransfer.datasets import list_images, load_csv, load_data, load_image_folder


def save_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(folder / f"{i}.png")
    return sorted(str(path) for path in folder.glob("*.png"))


def test_a_flat_folder_says_it_has_images_but_no_class_folders(tmp_path, capsys):
    save_images(tmp_path / "flat", 5)
    with pytest.raises(ValueError, match=r"holds 5 image\(s\) but no class sub-folders") as error:
        load_image_folder(tmp_path / "flat")
    assert "sub-folder of its own" in str(error.value) and "CSV" in str(error.value)
    assert main(["finetune", str(tmp_path / "flat"), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "holds 5 image(s) but no class sub-folders" in capsys.readouterr().err


def test_an_empty_folder_still_says_no_images(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found"):
        load_image_folder(tmp_path / "empty")


@pytest.mark.parametrize("header", ["path\n", ""])
def test_a_csv_of_paths_alone_lists_images_without_labels(tmp_path, header):
    paths = save_images(tmp_path / "images", 3)
    listing = tmp_path / "images" / "to-predict.csv"
    listing.write_text(header + "".join(f"{i}.png\n" for i in range(3)))
    X, y = load_csv(listing, labels="optional")
    assert X.tolist() == paths and y is None
    assert list_images(listing)[1] == paths
    with pytest.raises(ValueError, match=r"targets \(at least 1\)"):
        load_data(listing)  # training needs targets


def test_a_csv_with_targets_lists_its_images_for_prediction(tmp_path):
    paths = save_images(tmp_path / "images", 3)
    (tmp_path / "images" / "data.csv").write_text("path,label\n0.png,a\n1.png,b\n2.png,a\n")
    X, names = list_images(tmp_path / "images" / "data.csv")
    assert names == paths and np.asarray(X).tolist() == paths
