"""Backbones from every source resolve into blocks with their own preprocessing."""

import os
import pickle
import socket
import threading

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

from sktransfer import (
    CNNFeatureExtractor,
    WeightsUnavailableError,
    backbone_blocks,
    list_backbones,
)
from sktransfer._engine import backbones as _backbones
from sktransfer._engine import weights as _weights
from sktransfer._engine.backbones import resolve_backbone
from sktransfer._engine.inference import pool_features, run_blocks
from sktransfer._engine.weights import embedded_efficientnet_lite0_file, load_weights_file
from sktransfer._engine.weights import (
    host_reachable as _hub_reachable,  # the real one: conftest patches the module's
)


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
    assert [b.name for b in backbone_blocks()][::4] == ["stem", "blocks.3", "conv_head"]
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
    import timm
    from safetensors.torch import save_file

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


def resolve_on_meta(monkeypatch, name):
    """``resolve_backbone(name, weights=None)`` with its parameters and buffers on the meta
    device: every shape, without the memory or the initialization time (as accelerate's
    ``init_empty_weights``). Run it under ``torch.device("meta")``."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter_on_meta(module, key, parameter):
        if parameter is not None:
            parameter = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        register_parameter(module, key, parameter)

    def buffer_on_meta(module, key, tensor, persistent=True):
        register_buffer(module, key, None if tensor is None else tensor.to("meta"), persistent)

    with monkeypatch.context() as patch:
        patch.setattr(nn.Module, "register_parameter", parameter_on_meta)
        patch.setattr(nn.Module, "register_buffer", buffer_on_meta)
        return resolve_backbone(name, weights=None)


#: Sizes for the models that cannot take 64 px: Inception v3 needs 75, MaxViT its own 224,
#: a ViT multiples of its patch (14 for vit_h_14).
LISTED_SIZES = {"inception_v3": 75, "maxvit_t": 224, "vit_h_14": 56}


@pytest.mark.parametrize("name", list_backbones("torchvision"))
def test_every_listed_torchvision_backbone_gives_features_as_wide_as_its_blocks(name, monkeypatch):
    backbone = resolve_on_meta(monkeypatch, name)
    outputs = []
    for block in backbone.blocks:
        block.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    size = LISTED_SIZES.get(name, 64)
    with torch.device("meta"):
        infos = backbone.describe((size, size))  # the one forward
    assert [pool_features(output, "avg").shape[1] for output in outputs] == [b.channels for b in infos]
    reductions = [b.reduction for b in infos]
    # Strides of H and W: a channels-last (n, H, W, C) map taken for NCHW shows about 1.
    assert reductions == sorted(reductions) and reductions[-1] >= 14


def test_list_backbones_lists_only_the_families_that_split(monkeypatch):
    assert {"swin_t", "vit_b_16", "maxvit_t", "googlenet", "shufflenet_v2_x1_0"} <= set(list_backbones())
    monkeypatch.setattr(_backbones, "TORCHVISION_FAMILIES",
                        tuple(f for f in _backbones.TORCHVISION_FAMILIES if f != "alexnet"))
    assert "alexnet" not in list_backbones("torchvision") and "vgg16" in list_backbones()
    with pytest.raises(ValueError, match="'alexnet' is of a family that sktransfer cannot cut"):
        resolve_backbone("alexnet", weights=None)


def _swin_v2():
    from torchvision.models.swin_transformer import (
        PatchMergingV2,
        SwinTransformerBlockV2,
    )

    return tvm.SwinTransformer([4, 4], 8, [1, 1, 1, 1], [1, 1, 1, 1], [2, 2],
                               block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)


def _no_head(model, attribute, keep=0):
    """``model`` whose classifier ``attribute`` keeps only its first ``keep`` layers."""
    setattr(model, attribute, getattr(model, attribute)[:keep] if keep else nn.Identity())
    return model


#: Small networks of the families that need their own split, with the reference of their
#: pooled features: the network itself with its classifier taken off.
SMALL_TORCHVISION = {
    "swin": (lambda: tvm.SwinTransformer([4, 4], 8, [1, 1, 1, 1], [1, 1, 1, 1], [2, 2]), "head", 32),
    "swin_v2": (_swin_v2, "head", 32),
    "vit": (lambda: tvm.VisionTransformer(32, 8, 2, 2, 16, 32), "heads", 32),
    "maxvit": (lambda: tvm.MaxVit((64, 64), 8, 2, [8, 8, 8, 8], [1, 1, 1, 1], 4, 0.0), "classifier", 64),
    "googlenet": (lambda: tvm.GoogLeNet(transform_input=True, init_weights=False), "fc", 64),
    "inception_v3": (lambda: tvm.Inception3(transform_input=True, init_weights=False), "fc", 80),
    "shufflenet_v2": (lambda: tvm.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128]), "fc", 32),
    "densenet": (lambda: tvm.DenseNet(4, (1, 1, 1, 1), 8), "classifier", 32),
}


@pytest.mark.parametrize("family", SMALL_TORCHVISION)
def test_blocks_give_the_features_torchvision_pools_for_its_classifier(family):
    make, head, size = SMALL_TORCHVISION[family]
    torch.manual_seed(0)
    model = make().eval()
    backbone = resolve_backbone(model, weights=None)
    reference = _no_head(model, head, keep=2 if family == "maxvit" else 0)  # MaxViT: pool, flatten
    x = torch.randn(2, 3, size, size)
    backbone.blocks.eval()
    with torch.no_grad():
        features = run_blocks(backbone.blocks, x, [len(backbone.blocks) - 1], "avg")
        torch.testing.assert_close(features, reference(x))
    assert backbone.describe((size, size))[-1].channels == features.shape[1]


def test_vit_at_another_size_resizes_its_positions_as_torchvision_does():
    from torchvision.models.vision_transformer import interpolate_embeddings

    torch.manual_seed(0)
    native = tvm.VisionTransformer(32, 8, 2, 2, 16, 32)
    larger = tvm.VisionTransformer(48, 8, 2, 2, 16, 32)
    larger.load_state_dict(interpolate_embeddings(48, 8, native.state_dict()))
    backbone = resolve_backbone(native, weights=None)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        tokens = backbone.blocks.eval()(x)
        torch.testing.assert_close(tokens[:, 0], _no_head(larger.eval(), "heads")(x))
    assert backbone.describe((48, 48))[-1] == (2, "encoder_layer_1", 16, 8)
    assert tokens.shape == (1, 1 + 6 * 6, 16)


def test_vit_token_features_and_the_sizes_it_refuses(rgb_images):
    vit = tvm.VisionTransformer(32, 8, 2, 2, 16, 32)
    settings = dict(weights=None, device="cpu", image_size=32)
    assert CNNFeatureExtractor(vit, **settings).fit_transform(rgb_images).shape == (6, 16)
    assert CNNFeatureExtractor(vit, **settings, pooling=None).fit_transform(rgb_images).shape == (6, 17 * 16)
    with pytest.raises(ValueError, match="pooling='max' pools feature maps.*pooling='avg'"):
        CNNFeatureExtractor(vit, **settings, pooling="max").fit(rgb_images)
    with pytest.raises(ValueError, match="multiples of 8, got 36x36. Set image_size"):
        CNNFeatureExtractor(vit, **{**settings, "image_size": 36}).fit(rgb_images)


def test_sizes_a_network_cannot_take_are_refused_with_the_fix():
    maxvit = tvm.MaxVit((64, 64), 8, 2, [8, 8, 8, 8], [1, 1, 1, 1], 4, 0.0)
    with pytest.raises(ValueError, match="takes images of 64x64 pixels, got 32x32. Set image_size=64"):
        backbone_blocks(maxvit, image_size=32)
    inception = tvm.Inception3(init_weights=False)
    with pytest.raises(ValueError, match="cannot process images of size 32x32.*larger image_size"):
        backbone_blocks(inception, image_size=32)


def test_torchvision_vit_is_built_for_its_weights_size(monkeypatch):
    backbone = resolve_on_meta(monkeypatch, "vit_h_14")  # SWAG weights, at 518 px
    assert backbone.preprocessing.input_size == (518, 518)
    assert backbone.blocks[0].pos_embedding.shape[1] == 1 + 37 * 37


def test_googlenet_weights_file_takes_torchvision_input_transform(tmp_path):
    torch.manual_seed(0)
    reference = tvm.GoogLeNet(transform_input=True, init_weights=False).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    backbone = resolve_backbone("googlenet", weights=path)
    assert backbone.block_names == ("stem", "inception3", "inception4", "inception5")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(pool_features(backbone.blocks.eval()(x), "avg"),
                                   _no_head(reference, "fc")(x))


def test_module_that_is_no_trunk_is_refused_with_the_fix(tiny_backbone):
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = tiny_backbone
            self.fc = nn.Linear(32, 2)

        def forward(self, x):
            return self.fc(self.trunk(x).mean((2, 3)))

    with pytest.raises(ValueError, match=r"Classifier module.*nn\.Sequential\(\*list\(model\.children"):
        resolve_backbone(Classifier())
    trunk = nn.Sequential(*list(Classifier().children())[:-1])
    assert resolve_backbone(trunk).describe((32, 32))[-1].channels == 32
    assert resolve_backbone(tvm.resnet18()).block_names[-1] == "layer4"  # a known architecture


def no_proxies(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Hugging Face online as far as its settings go, with an empty cache; every connection
    fails and is recorded in ``hub.probes``, every timm download in ``hub.downloads``."""
    import timm.models._hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    no_proxies(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    record = type("Hub", (), {"probes": [], "downloads": []})()

    def unreachable(address, *args, **kwargs):
        record.probes.append(address)
        raise OSError("no network in tests")

    def download(*args, **kwargs):
        record.downloads.append(args)
        raise AssertionError("a download was tried")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", download)
    monkeypatch.setattr(_weights, "host_reachable", _hub_reachable)  # the real probe
    return record


def test_timm_weights_without_network_fail_at_once(hub, monkeypatch):
    with pytest.raises(WeightsUnavailableError, match="huggingface.co cannot be reached"):
        resolve_backbone("timm/resnet10t")
    assert hub.probes == [("huggingface.co", 443)] and hub.downloads == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE is set.*weights='/path/to/"):
        resolve_backbone("timm/resnet10t")
    assert len(hub.probes) == 1 and hub.downloads == []


def test_timm_weights_in_the_cache_load_without_network(hub, tmp_path):
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    folder = tmp_path / "hf-cache" / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / "abc").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc")
    torch.manual_seed(3)
    reference = timm.create_model("resnet10t")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              folder / "snapshots" / "abc" / "model.safetensors")
    assert constants.HF_HUB_CACHE == str(tmp_path / "hf-cache")
    backbone = resolve_backbone("timm/resnet10t")
    torch.testing.assert_close(backbone.blocks[0][0][0].weight, reference.conv1[0].weight)
    assert hub.probes == [] and hub.downloads == []


def test_hub_reachable_probes_quickly(monkeypatch):
    attempts, release = [], threading.Event()

    def connect(address, timeout=None):
        attempts.append((address, timeout))
        if address[0] == "slow.example":
            release.wait(5)
            raise OSError("timed out")
        if address[0] != "up.example":
            raise OSError("unreachable")
        return socket.socket()

    no_proxies(monkeypatch)
    monkeypatch.setattr(socket, "create_connection", connect)
    assert _hub_reachable("up.example") and not _hub_reachable("down.example")
    assert attempts == [(("up.example", 443), 3.0), (("down.example", 443), 3.0)]
    assert not _hub_reachable("slow.example", timeout=0.1)  # a hung name lookup too
    release.set()
    monkeypatch.setenv("HTTPS_PROXY", "http://up.example:3128")
    assert _hub_reachable("huggingface.co") and attempts[-1][0] == ("up.example", 3128)
