"""HyperIQA (Su et al., "Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper Network",
CVPR 2020), with the dimensions of the public reference implementation (SSL92/hyperIQA) and any timm backbone.

Reads bottom-up: the batched target network, the local-distortion-aware (LDA) branches, the hyper network, the
model, then the builder and its backbone registry. Channel widths come from timm's ``feature_info``; stage grids
that are not the reference's 56/28/14/7 (small inputs, other backbones) are pooled adaptively.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import backbone_entry
from .config import ModelConfig
from .errors import UserError
from .weights import load_offline_weights

# LDA pooling grids per stage: the reference's 7x7 average pool on 56/28/14/7 grids at 224 input.
LDA_GRIDS = (8, 4, 2, 1)


def target_forward(x: torch.Tensor, params: dict[str, torch.Tensor], dropout: float, training: bool,
                   dropout_layers: str = "all") -> torch.Tensor:
    """The target network with per-image weights: 4 x (linear + sigmoid [+ dropout]), then linear to one score.

    x: (B, target_in); params["w1"]: (B, out, in) etc. One batched matmul per layer instead of the reference's
    grouped 1x1 convolution; same arithmetic. Dropout follows every hidden layer ("all") or only the first
    ("first": the one place the reference has it, commented out).
    """
    h = x
    for k in range(1, 5):
        h = torch.sigmoid(torch.bmm(params[f"w{k}"], h.unsqueeze(-1)).squeeze(-1) + params[f"b{k}"])
        if dropout > 0 and (k == 1 or dropout_layers == "all"):
            h = F.dropout(h, p=dropout, training=training)
    return (params["w5"] * h).sum(-1) + params["b5"].squeeze(-1)


class LocalDistortionAware(nn.Module):
    """One LDA branch: 1x1 conv (no bias) -> average pool to a small grid -> linear."""

    def __init__(self, in_channels: int, mid_channels: int | None, grid: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 1, bias=False) if mid_channels else nn.Identity()
        self.grid = grid
        self.fc = nn.Linear((mid_channels or in_channels) * grid * grid, out_features)
        if mid_channels:
            nn.init.kaiming_normal_(self.conv.weight)
        nn.init.kaiming_normal_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.conv(x), self.grid)
        return self.fc(x.flatten(1))


class HyperNetwork(nn.Module):
    """Generates the target network's weights and biases from the last backbone stage."""

    def __init__(self, in_channels: int, cfg: ModelConfig):
        super().__init__()
        c, fs = cfg.hyper_channels, cfg.feature_size
        # reference: 2048 -> 1024 -> 512 -> 112 for ResNet-50; halve twice from whatever the backbone gives
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, in_channels // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // 2, in_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // 4, c, 1), nn.ReLU(inplace=True),
        )
        self.feature_size = fs
        self.dims = [cfg.target_in, *cfg.target_dims]
        self.w_convs = nn.ModuleList(
            nn.Conv2d(c, a * b // fs ** 2, 3, padding=1) for a, b in zip(self.dims, self.dims[1:])
        )
        self.b_fcs = nn.ModuleList(nn.Linear(c, b) for b in self.dims[1:])
        self.w5 = nn.Linear(c, self.dims[-1])
        self.b5 = nn.Linear(c, 1)
        for m in [*self.w_convs, *self.b_fcs, self.w5, self.b5]:
            nn.init.kaiming_normal_(m.weight)

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.reduce(feat)
        if h.shape[-2:] != (self.feature_size, self.feature_size):
            h = F.adaptive_avg_pool2d(h, self.feature_size)
        pooled = h.mean((2, 3))
        n = h.shape[0]
        params = {}
        for k, (conv, fc) in enumerate(zip(self.w_convs, self.b_fcs), start=1):
            params[f"w{k}"] = conv(h).reshape(n, self.dims[k], self.dims[k - 1])
            params[f"b{k}"] = fc(pooled)
        # w5 and b5 set the score's scale and offset in label units: in bf16 an offset near 70 moves in steps of
        # 0.5, so these two small linear layers run in fp32 under mixed precision
        with torch.autocast(feat.device.type, enabled=False):
            params["w5"] = self.w5(pooled.float())
            params["b5"] = self.b5(pooled.float())
        return params


def freeze_stages(backbone: nn.Module, n: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n`` feature stages (requires_grad off); returns their batch norms, which
    HyperIQA keeps in eval mode. The stem is every parameter registered before the first stage's module (for
    EfficientNet also the stride-2 block that no output stage uses); stage k ends where the module timm's
    ``feature_info`` names for it ends. Without gradients into them, autograd also skips their backward."""
    if n == 0:
        return []
    last = backbone.feature_info.module_name()[n - 1]
    prefixes = (last + ".", last.replace(".", "_") + ".")  # FeatureListNet flattens "layers.0" to "layers_0"
    inside, frozen = False, set()
    for name, p in backbone.named_parameters():
        if name.startswith(prefixes):
            inside = True
        elif inside:
            break
        p.requires_grad_(False)
        frozen.add(name.rsplit(".", 1)[0])
    if not inside:
        raise UserError(f"model.freeze_stages: found no parameters of stage {n} ({last}) in the backbone")
    return [m for name, m in backbone.named_modules()
            if name in frozen and isinstance(m, nn.modules.batchnorm._BatchNorm)]


class HyperIQA(nn.Module):
    """Backbone + LDA branches (target input) + hyper network (target weights) + target network (score)."""

    def __init__(self, backbone: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        if len(channels) != 4:
            raise UserError(f"model.backbone: HyperIQA needs 4 feature stages, {cfg.backbone} gives {len(channels)}")
        self.channels = channels
        # Swin (and other ViT-like) stages come out NHWC; the LDA convs want NCHW
        self.nhwc = str(getattr(backbone, "output_fmt", "NCHW")).endswith("NHWC")
        lda = cfg.lda_channels
        self.lda = nn.ModuleList([
            LocalDistortionAware(channels[0], lda, LDA_GRIDS[0], lda),
            LocalDistortionAware(channels[1], lda * 2, LDA_GRIDS[1], lda),
            LocalDistortionAware(channels[2], lda * 4, LDA_GRIDS[2], lda),
            LocalDistortionAware(channels[3], None, LDA_GRIDS[3], cfg.target_in - 3 * lda),
        ])
        self.hyper = HyperNetwork(channels[3], cfg)
        self.dropout = cfg.dropout
        self.dropout_layers = cfg.dropout_layers
        self.frozen_norms = freeze_stages(backbone, cfg.freeze_stages)

    def train(self, mode: bool = True) -> HyperIQA:
        """Frozen stages keep their batch norm in eval mode: running statistics stay the pretrained ones."""
        super().train(mode)
        for m in self.frozen_norms:
            m.eval()
        return self

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        return [f.permute(0, 3, 1, 2) for f in feats] if self.nhwc else list(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quality score per patch, shape (B,)."""
        feats = self.stages(x)
        target_in = torch.cat([branch(f) for branch, f in zip(self.lda, feats)], dim=1)
        params = self.hyper(feats[3])
        # backbone, LDA and hyper network may run in bf16/fp16; the target network and the score run in fp32:
        # bf16 matmuls round a score in [64, 128) to steps of 0.5 label units, ties that SRCC then counts
        with torch.autocast(x.device.type, enabled=False):
            params = {k: v.float() for k, v in params.items()}
            return target_forward(target_in.float(), params, self.dropout, self.training, self.dropout_layers)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone + LDA, hyper network): the reference trains the second at lr x lr_ratio."""
        base = [p for p in [*self.backbone.parameters(), *self.lda.parameters()] if p.requires_grad]
        return base, list(self.hyper.parameters())


# ----------------------------------------------------------------------------------------------------------------
# builder

WEIGHT_FORMATS = ("a PyTorch state dict saved by torch.save (.pth, .pt, .bin: a zip archive or a pickle), or a "
                  ".safetensors file")


def check_weights_file(path: Path) -> None:
    """model.checkpoint must start like a weights file; a config or text file named there would otherwise meet
    torch's unpickler, whose advice (retry with weights_only=False) is exactly wrong for it."""
    with open(path, "rb") as f:
        head = f.read(9)
    zipped = head[:4] == b"PK\x03\x04"  # torch.save's default format (and numpy's .npz)
    pickled = len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5  # legacy torch.save: a pickle
    # safetensors: an 8-byte little-endian header length, then the JSON header
    safetensors = len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30
    if not (zipped or pickled or safetensors):
        raise UserError(f"model.checkpoint: {path} is not a weights file (it starts with {head[:8]!r}); "
                        f"expected {WEIGHT_FORMATS}")


def build_backbone(cfg: ModelConfig) -> nn.Module:
    entry = backbone_entry(cfg.backbone)
    timm_name, kwargs = entry.timm_name, {**entry.kwargs, **cfg.backbone_kwargs}
    pretrained = cfg.pretrained
    offline = entry.offline_weights if pretrained and not cfg.checkpoint else None
    if offline:
        pretrained = False  # timm would download; the registry's package has the weights on disk
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise UserError(f"model.checkpoint: no such file: {path}")
        check_weights_file(path)
        # timm's own loader reads a local file through the pretrained path (filters the classifier, adapts keys)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    try:
        backbone = timm.create_model(timm_name, pretrained=pretrained, features_only=True,
                                     out_indices=(-4, -3, -2, -1), **kwargs)
        return load_offline_weights(backbone, offline) if offline else backbone
    except (TypeError, ValueError, AssertionError) as e:
        raise UserError(f"model.backbone_kwargs: timm could not build {timm_name} with {kwargs}: {e}") from None
    except (RuntimeError, OSError) as e:
        source = f"checkpoint {cfg.checkpoint}" if cfg.checkpoint else "pretrained weights (internet or hub cache)"
        raise UserError(f"model: could not load {source} for {timm_name}: {e}") from None


def build_model(cfg: ModelConfig) -> HyperIQA:
    return HyperIQA(build_backbone(cfg), cfg)
