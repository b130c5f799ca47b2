import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from scipy import stats

from iqa_tune.backbones import BACKBONES, resolve_backbone
from iqa_tune.config import ModelConfig, build_run_config
from iqa_tune.errors import UserError
from iqa_tune.losses import hyperiqa_loss, pairwise_hinge, ranking_loss
from iqa_tune.metrics import correlations, image_means
from iqa_tune.model import build_model, target_forward


def _tiny(backbone: str) -> tuple[int, dict]:
    """(input size, kwargs) that make a registered backbone cheap: 64 px Swins with 2x2 windows (at 32 px a
    micro Swin's last stage is 1x1 and its relative-position table unused); ResNets without timm's
    zero-initialised last BN, which makes the residual branch's gradients exactly zero at init."""
    if "swin" in backbone:
        return 64, ({} if backbone == "swin_micro" else {"img_size": 64, "window_size": 2})
    return 32, ({} if "efficientnet" in backbone else {"zero_init_last": False})


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_model_shapes_and_every_parameter_gets_a_gradient(backbone):
    torch.manual_seed(0)
    size, kwargs = _tiny(backbone)
    model = build_model(ModelConfig(backbone=backbone, backbone_kwargs=kwargs, dropout=0.1))
    x = torch.randn(3, 3, size, size)
    out = model(x)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []


def test_full_size_swin_tiny_has_reference_dimensions():
    model = build_model(ModelConfig(backbone="swin_tiny_patch4_window7_224"))
    assert model.channels == [96, 192, 384, 768]
    feats = model.stages(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]
    assert model(torch.randn(2, 3, 224, 224)).shape == (2,)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_is_loaded_into_the_backbone(tmp_path, suffix):
    name, kwargs = resolve_backbone("resnet_micro")
    torch.manual_seed(1)
    source = timm.create_model(name, **kwargs)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model = build_model(ModelConfig(backbone="resnet_micro", checkpoint=str(path)))
    loaded = model.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], source.state_dict()["conv1.weight"])
    assert torch.equal(loaded["layer4.0.conv1.weight"], source.state_dict()["layer4.0.conv1.weight"])


def test_unknown_backbone_suggests_the_nearest():
    with pytest.raises(UserError, match="did you mean 'swin_micro'"):
        resolve_backbone("swin_mikro")
    # a timm name outside the registry is accepted as it is
    assert resolve_backbone("resnet34") == ("resnet34", {})


def test_every_registered_backbone_names_a_timm_model():
    known = set(timm.list_models())
    assert {entry.timm_name for entry in BACKBONES.values()} <= known


def test_ranking_zero_when_ordered_with_margin_positive_otherwise():
    label = torch.tensor([1.0, 2.0, 3.0])
    assert pairwise_hinge(torch.tensor([0.0, 1.0, 2.0]), label, margin=1.0).item() == 0.0
    assert pairwise_hinge(torch.tensor([0.0, 0.5, 1.0]), label, margin=1.0).item() > 0
    assert pairwise_hinge(torch.tensor([2.0, 1.0, 0.0]), label, margin=0.0).item() > 0
    # equal labels make no pair
    assert pairwise_hinge(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), margin=1.0).item() == 0.0


def test_image_ranking_invariant_to_permuting_patches_within_images():
    torch.manual_seed(0)
    pred = torch.randn(12)
    ids = torch.arange(4).repeat_interleave(3)
    label = torch.tensor([5.0, 1.0, 3.0, 2.0]).repeat_interleave(3)
    perm = torch.cat([torch.randperm(3) + 3 * i for i in range(4)])
    a = ranking_loss(pred, label, ids, 0.5, "image")
    b = ranking_loss(pred[perm], label[perm], ids[perm], 0.5, "image")
    assert torch.allclose(a, b)
    # and differs from patch granularity on the same batch
    assert not torch.allclose(a, ranking_loss(pred, label, ids, 0.5, "patch"))


def test_alpha_zero_is_plain_l1():
    pred, label = torch.tensor([1.0, 4.0, 2.0]), torch.tensor([2.0, 3.0, 5.0])
    parts = hyperiqa_loss(pred, label, torch.arange(3), alpha=0.0, margin=1.0, granularity="patch")
    assert parts["loss"].item() == pytest.approx(torch.nn.functional.l1_loss(pred, label).item())
    with_rank = hyperiqa_loss(pred, label, torch.arange(3), alpha=2.0, margin=1.0, granularity="patch")
    assert with_rank["loss"].item() == pytest.approx(parts["l1"].item() + 2 * with_rank["rank"].item())


def test_metrics_match_scipy_and_image_means():
    rng = np.random.default_rng(0)
    pred, label = rng.normal(size=50), rng.normal(size=50)
    m = correlations(pred, label)
    assert m["srcc"] == pytest.approx(stats.spearmanr(pred, label)[0])
    assert m["plcc"] == pytest.approx(stats.pearsonr(pred, label)[0])
    assert m["krcc"] == pytest.approx(stats.kendalltau(pred, label)[0])
    assert np.isnan(correlations(np.ones(5), label[:5])["srcc"])  # undefined, not 0
    means = image_means(np.array([1.0, 3.0, 10.0, 20.0]), np.array([0, 0, 1, 1]), 2)
    assert means.tolist() == [2.0, 15.0]


def test_bf16_autocast_keeps_scores_in_fp32():
    # bf16 rounds a score in [64, 128) to steps of 0.5: 16 patches near 70 all scored 70.0 before the target
    # network and the score ran in fp32
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet_micro", backbone_kwargs={"zero_init_last": False})).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        model.hyper.b5.bias += 70 - model(x).mean()
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x)
    assert 64 <= fp32.min() and fp32.max() < 128 and fp32.unique().numel() == 16
    assert bf16.dtype == torch.float32
    assert bf16.unique().numel() >= 12
    assert (bf16 - fp32).abs().max() < 1.0


def _target_params(batch: int, dims: list[int]) -> dict[str, torch.Tensor]:
    params = {}
    for k in range(1, 5):
        params[f"w{k}"] = torch.randn(batch, dims[k], dims[k - 1])
        params[f"b{k}"] = torch.randn(batch, dims[k])
    params["w5"], params["b5"] = torch.randn(batch, dims[4]), torch.randn(batch, 1)
    return params


def test_dropout_layers_first_drops_after_the_first_hidden_layer_only():
    torch.manual_seed(0)
    x, params = torch.randn(4, 8), _target_params(4, [8, 6, 5, 4, 3])

    def run(p, layers, training, w2=None):
        torch.manual_seed(1)
        return target_forward(x, {**params, **({"w2": w2} if w2 is not None else {})}, p, training, layers)

    evaluated = run(0.9, "first", training=False)
    assert torch.equal(run(0.0, "first", training=True), evaluated)  # p 0: train mode is eval mode
    assert not torch.allclose(run(0.9, "first", training=True), evaluated)  # layer 1 is dropped
    # with w2 = 0 layer 2 ignores layer 1, so any remaining change would come from dropout after layers 2-4
    zero = torch.zeros_like(params["w2"])
    assert torch.equal(run(0.9, "first", True, zero), run(0.9, "first", False, zero))
    assert not torch.allclose(run(0.9, "all", True, zero), run(0.9, "all", False, zero))


def test_dropout_layers_is_a_checked_model_key():
    assert build_model(ModelConfig(backbone="resnet_micro", dropout_layers="first")).dropout_layers == "first"
    assert build_run_config({"model": {"dropout_layers": "first"}}).model.dropout_layers == "first"
    with pytest.raises(UserError, match="dropout_layers: must be one of 'all' | 'first'"):
        build_run_config({"model": {"dropout_layers": "second"}})


def test_a_timm_pretrained_tag_is_accepted_for_registered_and_timm_names():
    # resnet50.tv_in1k: torchvision's original ImageNet weights, the reference HyperIQA's starting point
    assert resolve_backbone("resnet50.tv_in1k") == ("resnet50.tv_in1k", {})
    assert resolve_backbone("resnet_micro.tv_in1k") == ("resnet18.tv_in1k", {"layers": [1, 1, 1, 1]})
    with pytest.raises(UserError, match="no pretrained weights tagged 'tv_in1kk' \\(did you mean 'tv_in1k'"):
        resolve_backbone("resnet50.tv_in1kk")
    model = build_model(ModelConfig(backbone="resnet50.tv_in1k"))  # architecture from the tagged name
    assert model.channels == [256, 512, 1024, 2048]
