"""The backbone registry: names a config may give for ``model.backbone``, and the timm model each one builds.

Below the config layer, so a config is checked against it before anything is built; the model builder reads it
too. "micro" entries are tiny configurations that train in seconds on a CPU (tests, the demo); any other timm
model name with 4 feature stages is accepted as well.
"""

from __future__ import annotations

from .errors import UserError, did_you_mean

BACKBONES: dict[str, tuple[str, dict]] = {
    "swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", {}),
    "swin_small_patch4_window7_224": ("swin_small_patch4_window7_224", {}),
    "swin_base_patch4_window7_224": ("swin_base_patch4_window7_224", {}),
    "resnet50": ("resnet50", {}),
    "resnet18": ("resnet18", {}),
    "swin_micro": ("swin_tiny_patch4_window7_224",
                   dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, img_size=64)),
    "resnet_micro": ("resnet18", dict(layers=[1, 1, 1, 1])),
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


def resolve_backbone(name: str) -> tuple[str, dict]:
    """(timm model name, timm kwargs) of a registered name or of any timm model name, either with timm's
    ``.tag`` naming which pretrained weights (``resnet50.tv_in1k``: torchvision's original ImageNet weights, the
    ones the reference HyperIQA starts from; plain ``resnet50`` is timm's default, the a1_in1k recipe)."""
    base, _, tag = name.partition(".")
    if base in BACKBONES and not tag:
        return BACKBONES[base]
    import timm  # only for tags and names outside the registry: importing timm costs seconds

    timm_name, kwargs = BACKBONES.get(base, (base, {}))
    if timm_name not in timm.list_models():
        raise UserError(f"model.backbone: unknown backbone {base!r}{did_you_mean(base, BACKBONES)}; "
                        f"known: {', '.join(BACKBONES)} (or any timm model name with 4 feature stages)")
    if tag:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{timm_name}.*")]
        if tag not in tags:
            raise UserError(f"model.backbone: {timm_name} has no pretrained weights tagged {tag!r}"
                            f"{did_you_mean(tag, tags)}; its tags: {', '.join(tags) or 'none'}")
        return f"{timm_name}.{tag}", kwargs
    return timm_name, kwargs
