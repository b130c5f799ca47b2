"""``iqa-tune export SOURCE OUT.pt2``: a trained model that plain torch runs, without iqa-tune installed.

The exported program takes what :meth:`iqa_tune.predict.Scorer.crops` cuts, a uint8 batch of crops (B, P, P, 3),
RGB, normalises it inside (the backbone's mean and std, :func:`iqa_tune.backbones.normalization`) and returns one
score per crop, in fp32. It is written with ``torch.export`` (load with ``torch.export.load(path).module()``), or
as TorchScript (``torch.jit.load``) where export fails. The resize and crop rule, the label scale and where the
model came from go beside it in OUT.json, since no program holds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .predict import Scorer, load

MAX_BATCH = 4096  # the largest batch of crops the exported program accepts (torch.export needs a bound)


class CropScorer(nn.Module):
    """uint8 (B, P, P, 3) crops -> (B,) scores: the Normalizer's arithmetic, then the model."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("inv_std", 1 / (torch.tensor(std).view(1, 3, 1, 1) * 255))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).contiguous().float()
        return self.model((x - self.mean) * self.inv_std)


def json_path(out: Path) -> Path:
    return out.with_suffix(".json")


def export_scorer(scorer: Scorer, out: Path) -> str:
    """Write the model to ``out``; returns the format used (``torch.export`` or ``torchscript``)."""
    from .backbones import normalization

    module = CropScorer(scorer.model, *normalization(scorer.config.model.backbone)).cpu().eval()
    p = scorer.patch_size
    example = torch.zeros(2, p, p, 3, dtype=torch.uint8)
    try:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.export.export(module, (example,), dynamic_shapes={"crops": {0: batch}})
        torch.export.save(program, str(out))
        return "torch.export"
    except Exception as e:  # any failure of export's tracing: fall back to TorchScript, which traces eagerly
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        print(f"torch.export failed ({why}); writing TorchScript instead")
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    torch.jit.save(traced, str(out))
    return "torchscript"


def sidecar(scorer: Scorer, fmt: str) -> dict:
    p = scorer.patch_size
    load_with = "torch.export.load(path).module()" if fmt == "torch.export" else "torch.jit.load(path)"
    return {"format": fmt, "load": load_with,
            "input": f"uint8 tensor (B, {p}, {p}, 3): RGB crops, B <= {MAX_BATCH}",
            "output": "float32 (B,): one score per crop; an image's score is the mean of its crops' scores",
            "precision": "fp32", "torch": torch.__version__, **scorer.info}


def run_export(source: str, out: str, trial: str | None = None, force: bool = False) -> int:
    out_path = Path(out).expanduser()
    meta = json_path(out_path)
    if out_path.suffix == ".json":
        raise UserError(f"{out}: the model's name, not its JSON (which goes beside it as NAME.json)")
    for p in (out_path, meta):
        if p.exists() and not force:
            raise UserError(f"{p}: already exists; pass --force to overwrite it")
    if not out_path.parent.is_dir():
        raise UserError(f"{out}: no such folder {out_path.parent}")
    scorer = load(source, trial, device="cpu")
    fmt = export_scorer(scorer, out_path)
    meta.write_text(json.dumps(sidecar(scorer, fmt), indent=1, default=str) + "\n")
    print(f"{fmt} model of {scorer.origin.describe(scorer.epoch, scorer.best_epoch)}: {out_path} (+ {meta.name})")
    return 0
