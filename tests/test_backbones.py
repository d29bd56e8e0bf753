"""Backbones from every source resolve into blocks with their own preprocessing."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from sktransfer import CNNFeatureExtractor, WeightsUnavailableError, backbone_blocks, list_backbones
from sktransfer._backbones import resolve_backbone
from sktransfer._weights import embedded_efficientnet_lite0_file, load_weights_file


def imagenet_top3(photo):
    """Top-3 ImageNet classes of a photo through the embedded backbone and its own classifier."""
    features = CNNFeatureExtractor(device="cpu").fit([photo]).transform([photo])
    state = torch.load(embedded_efficientnet_lite0_file(), weights_only=True)
    logits = torch.from_numpy(features) @ state["_fc.weight"].T + state["_fc.bias"]
    return logits.topk(3).indices[0].tolist()


def test_embedded_weights_recognize_real_photos():
    skimage_data = pytest.importorskip("skimage.data")
    assert imagenet_top3(skimage_data.chelsea())[0] in (281, 282, 285)  # tabby, tiger, Egyptian cat
    assert set(imagenet_top3(skimage_data.chelsea())) <= {281, 282, 285, 287}
    assert imagenet_top3(skimage_data.coffee())[0] == 967  # espresso


def test_embedded_backbone_takes_preprocessing_from_its_metadata():
    backbone = resolve_backbone("efficientnet_lite0", weights=None)
    import timm

    config = timm.create_model("efficientnet_lite0").pretrained_cfg
    assert backbone.preprocessing.input_size == config["input_size"][1:]
    assert backbone.preprocessing.mean == config["mean"]
    assert backbone.preprocessing.interpolation == config["interpolation"]
    assert [b.name for b in backbone_blocks()][::4] == ["stem", "blocks.3", "head"]
    assert backbone_blocks()[-1].channels == 1280 and backbone_blocks()[-1].reduction == 32


def test_torchvision_backbone_and_local_weights_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.manual_seed(1)
    for parameter in reference.parameters():
        parameter.data.normal_()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)

    backbone = resolve_backbone("resnet18", weights=str(path))
    assert backbone.block_names == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert backbone.preprocessing.input_size == (224, 224)
    assert backbone.preprocessing.interpolation == "bilinear"
    x = torch.randn(2, 3, 64, 64)
    reference.eval(), backbone.blocks.eval()
    trunk = nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(backbone.blocks(x), trunk(x))


def test_safetensors_file_and_timm_backbone(tmp_path):
    from safetensors.torch import save_file
    import timm

    reference = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    backbone = resolve_backbone("timm/resnet10t", weights=path)
    assert len(backbone.block_names) == 5
    x = torch.randn(1, 3, 64, 64)
    reference.eval(), backbone.blocks.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone.blocks(x), reference.forward_features(x))


def test_timm_efficientnet_blocks_equal_forward_features():
    import timm

    torch.manual_seed(0)  # the seed resolve_backbone initializes with
    reference = timm.create_model("efficientnet_lite0")
    backbone = resolve_backbone("efficientnet_lite0", weights=None)
    reference.eval(), backbone.blocks.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.blocks(x), reference.forward_features(x))


@pytest.mark.parametrize("name, n_blocks", [("mobilenet_v3_small", 13), ("convnext_tiny", 8), ("regnet_x_400mf", 5)])
def test_torchvision_families_split_into_blocks(name, n_blocks):
    backbone = resolve_backbone(name, weights=None)
    assert len(backbone.block_names) == n_blocks
    reductions = [b.reduction for b in backbone.describe((64, 64))]
    assert reductions == sorted(reductions) and reductions[-1] == 32


def test_user_module_is_copied_and_sequential_children_are_blocks(tiny_backbone):
    backbone = resolve_backbone(tiny_backbone, weights=None)
    assert backbone.block_names == ("0", "1", "2")
    assert backbone.blocks[0][0] is not tiny_backbone[0][0]
    torch.testing.assert_close(backbone.blocks[0][0].weight, tiny_backbone[0][0].weight)


def test_random_init_is_reproducible():
    first = resolve_backbone("resnet18", weights=None).blocks.state_dict()
    second = resolve_backbone("resnet18", weights=None).blocks.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_list_backbones():
    names = list_backbones()
    assert names[0] == "efficientnet_lite0"
    assert {"resnet18", "resnet50", "mobilenet_v3_large", "convnext_tiny"} <= set(names)
    assert "timm/efficientnet_lite0" in list_backbones("timm")
    with pytest.raises(ValueError, match="source='bogus'"):
        list_backbones("bogus")


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        resolve_backbone("resnet-18")
    with pytest.raises(ValueError, match="Unknown timm model"):
        resolve_backbone("timm/resnet_nope_18")
    with pytest.raises(TypeError, match="backbone must be a name"):
        resolve_backbone(42)


def test_bad_layer_lists_valid_blocks():
    backbone = resolve_backbone("resnet18", weights=None)
    with pytest.raises(ValueError, match=r"5 blocks: 0='stem', 1='layer1'"):
        backbone.block_index(7)
    with pytest.raises(ValueError, match="layer='layer9'"):
        backbone.block_index("layer9")


def test_download_without_network_names_file_cache_and_fix():
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_backbone("resnet18", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert os.environ["TORCH_HOME"] in message
    assert "weights='/path/to/resnet18-f37072fd.pth'" in message
    assert isinstance(info.value, FileNotFoundError)


def test_torchvision_weights_names():
    with pytest.raises(WeightsUnavailableError, match="IMAGENET1K_V2"):
        resolve_backbone("resnet50", weights="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="'IMAGENET1K_V1'"):
        resolve_backbone("resnet18", weights="IMAGENET9K")


def test_file_for_another_architecture_lists_keys(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(ValueError, match="missing keys: conv1.weight.*unexpected keys: features"):
        resolve_backbone("resnet18", weights=path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_weights_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match="Refusing to load"):
        load_weights_file(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="Refusing to load"):
        CNNFeatureExtractor("resnet18", weights=str(path)).fit(np.zeros((1, 8, 8)))
    assert not marker.exists()


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_backbone("resnet18", weights="nowhere.pth")
